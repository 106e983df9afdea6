"""The admin API: DLQ inspection, replay jobs, poller status — guarded and audited.

Every call passes the guards in the reference's order (request id, CIDR allowlist, client
certificate, rate limits, token scope), ends in exactly one audit log line and one metric
observation, and answers JSON; errors are ``{"request_id": …, "error": …}``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from nats.errors import Error as NatsError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ensemble_tap import __version__
from ensemble_tap.admin import models
from ensemble_tap.admin.guards import (
    ClientAddress,
    Principal,
    Scope,
    TokenAuthenticator,
    TokenBucketLimiter,
    fingerprint,
    in_networks,
    retry_after_seconds,
)
from ensemble_tap.admin.jobs import (
    IdempotencyConflict,
    InvalidCursor,
    JobRegistry,
    JobStatus,
    NotCancellable,
    QueueLimitExceeded,
    ReplayRequest,
)
from ensemble_tap.admin.runner import ReplayRunner
from ensemble_tap.bus.dlq_store import DeadLetterStore, LetterFilter, StoredLetter
from ensemble_tap.config.models import ServerConfig
from ensemble_tap.events import format_time_ns, parse_rfc3339_ns
from ensemble_tap.observability import Metrics, get_logger
from ensemble_tap.request_ids import resolve_request_id
from ensemble_tap.sink.backends import BackendError
from ensemble_tap.sink.search import DEFAULT_LIMIT as DEFAULT_EVENT_LIMIT
from ensemble_tap.sink.search import MAX_LIMIT as MAX_EVENT_LIMIT
from ensemble_tap.sink.search import EventFilters, InvalidSearch

DEFAULT_REPLAY_LIMIT = 100
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 500
DLQ_MAX_PROBES = 5_000
INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DIGITS = re.compile(r"[0-9]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_BOOLEANS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False", ""), False),
}
_OUTCOMES = {
    503: "unavailable",
    200: "success",
    202: "success",
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "bad_request",
    409: "conflict",
    429: "rate_limited",
}
log = get_logger("ensemble_tap.admin")

PollerStatusSource = Callable[[], list[dict[str, Any]]]
EventSearch = Callable[
    [EventFilters, int, str | None], Awaitable[tuple[list[dict[str, Any]], str | None]]
]


class AdminFailure(Exception):
    def __init__(
        self, status: int, error: str, log_msg: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.log_msg = log_msg
        self.headers = headers or {}
        self.fields: dict[str, Any] = {}


@dataclass(slots=True)
class Call:
    """One admin request: its identity, audit fields and timing."""

    request_id: str
    endpoint: str
    requester_ip: str
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None


@dataclass(slots=True)
class AdminDependencies:
    server: ServerConfig
    registry: JobRegistry
    runner: ReplayRunner
    dead_letters: DeadLetterStore
    metrics: Metrics
    poller_status: PollerStatusSource
    # The ClickHouse sink's event search; None when the sink is not enabled.
    search_events: EventSearch | None = None


def _quoted(raw: str) -> str:
    return orjson.dumps(raw).decode()


def admin_app(deps: AdminDependencies) -> FastAPI:
    """The admin API as its own ASGI app (mounted under /admin by the service)."""
    server = deps.server
    authenticator = TokenAuthenticator(server)
    limiter = TokenBucketLimiter(server.admin_rate_limit_per_sec, server.admin_rate_limit_burst)
    addresses = ClientAddress(server.trusted_proxies)
    allowed = [
        ipaddress.ip_network(cidr, strict=False) for cidr in server.admin_allowed_cidrs if cidr
    ]
    app = FastAPI(
        title="Ensemble Tap admin API",
        version=__version__,
        description=(
            "Dead-letter inspection and replay, poller status. Authenticate with header "
            "`X-Admin-Token`; token slots grant scopes read, replay and cancel."
        ),
        docs_url=None,
        redoc_url=None,
    )

    def begin(request: Request, endpoint: str, scope: Scope) -> Call:
        headers = {k.lower(): v for k, v in request.headers.items()}
        peer = request.client.host if request.client else ""
        call = Call(
            request_id=resolve_request_id(headers, "admin"),
            endpoint=endpoint,
            requester_ip=addresses.requester_ip(peer, headers),
        )
        request.state.call = call
        if allowed and not in_networks(call.requester_ip, allowed):
            failure = AdminFailure(403, "forbidden", "admin request forbidden")
            failure.fields["reason"] = "cidr_allowlist_miss"
            raise failure
        if server.admin_mtls_required:
            cert = headers.get(server.admin_mtls_client_cert_header.lower(), "").strip()
            if not cert or not addresses.is_trusted(peer):
                failure = AdminFailure(
                    403, "mTLS client certificate required", "admin request forbidden"
                )
                failure.fields["reason"] = "mtls_required"
                raise failure
        token = headers.get("x-admin-token", "").strip()
        for limit_scope, key in (
            ("ip", f"{endpoint}|ip|{call.requester_ip or 'unknown'}"),
            ("token", f"{endpoint}|token|{fingerprint(token)}" if token else ""),
        ):
            if not key:
                continue
            wait = limiter.take(key)
            if wait:
                seconds = retry_after_seconds(wait)
                failure = AdminFailure(
                    429,
                    "rate limit exceeded",
                    "admin request rate limited",
                    {"Retry-After": str(seconds)},
                )
                failure.fields |= {"limit_scope": limit_scope, "retry_after_seconds": seconds}
                raise failure
        call.principal = authenticator.authenticate(token, scope)
        if call.principal is None:
            raise AdminFailure(401, "unauthorized", "admin request unauthorized")
        return call

    def unrouted_call(request: Request) -> Call:
        """A call that never reached the guards (endpoint ``unknown``)."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        peer = request.client.host if request.client else ""
        return Call(
            resolve_request_id(headers, "admin"), "unknown", addresses.requester_ip(peer, headers)
        )

    def respond(
        request: Request, status: int, body: dict[str, Any], log_msg: str, **fields: Any
    ) -> Response:
        call: Call = request.state.call
        _audit(deps.metrics, request, call, status, log_msg, fields)
        payload = {"request_id": call.request_id, **body}
        return _json(status, payload, call.request_id)

    @app.exception_handler(AdminFailure)
    async def on_failure(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AdminFailure)
        call = getattr(request.state, "call", None)
        if call is None:  # failed before the guards ran (e.g. request validation)
            call = unrouted_call(request)
        _audit(deps.metrics, request, call, exc.status, exc.log_msg, exc.fields)
        response = _json(
            exc.status, {"request_id": call.request_id, "error": exc.error}, call.request_id
        )
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        # No route matched (unknown path or wrong method): audited like every admin call.
        call = unrouted_call(request)
        request_id = call.request_id
        error = "method not allowed" if exc.status_code == 405 else "not found"
        _audit(deps.metrics, request, call, exc.status_code, f"admin request {error}", {})
        response = _json(exc.status_code, {"request_id": request_id, "error": error}, request_id)
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            # Starlette names only the first route of the path; a path can have several.
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    def allowed_methods(request: Request) -> list[str]:
        methods: set[str] = set()
        for route in app.router.routes:
            if isinstance(route, APIRoute) and route.matches(request.scope)[0] is not Match.NONE:
                methods |= route.methods or set()
        return sorted(methods)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: Exception) -> Response:
        failure = AdminFailure(400, "invalid request", "admin request rejected")
        return await on_failure(request, failure)

    error_responses: dict[int | str, dict[str, Any]] = {
        status: {"model": models.AdminError} for status in (400, 401, 403, 404, 409, 429)
    }

    @app.post(
        "/admin/replay-dlq",
        status_code=202,
        response_model=models.ReplayJobEnvelope,
        response_description="Job accepted (status queued)",
        responses={
            200: {
                "model": models.ReplayJobEnvelope,
                "description": "Same Idempotency-Key and request: the existing job, unchanged",
            },
            **error_responses,
        },
        summary="Create a replay job",
    )
    async def create_replay(
        request: Request,
        limit: Annotated[str | None, Query(description="records to handle (default 100)")] = None,
        dry_run: Annotated[str | None, Query(description="count only (true/false)")] = None,
        provider: Annotated[str | None, Query(description="only this provider")] = None,
        stage: Annotated[str | None, Query(description="only this stage")] = None,
        tenant: Annotated[str | None, Query(description="only this tenant")] = None,
        reason: Annotated[str | None, Header(alias="X-Admin-Reason")] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> Response:
        call = begin(request, "replay_dlq", Scope.REPLAY)
        max_limit = server.admin_replay_max_limit
        requested = _positive_int(limit, "limit", "admin replay dlq rejected")
        effective = min(requested or DEFAULT_REPLAY_LIMIT, max_limit)
        capped = (requested or DEFAULT_REPLAY_LIMIT) > max_limit
        raw_dry_run = (dry_run or "").strip()
        if raw_dry_run not in _BOOLEANS:
            raise _rejected(f"invalid boolean {_quoted(raw_dry_run)}", "admin replay dlq rejected")
        operator_reason = _reason(reason, server, "admin replay dlq rejected")
        replay = ReplayRequest(
            effective,
            _BOOLEANS[raw_dry_run],
            (provider or "").strip().lower(),
            (stage or "").strip().lower(),
            (tenant or "").strip(),
        )
        assert call.principal is not None
        try:
            job, reused = deps.registry.create(
                replay,
                requested,
                max_limit,
                capped,
                (idempotency_key or "").strip(),
                call.requester_ip,
                call.principal.token_fingerprint,
                call.request_id,
                operator_reason,
            )
        except IdempotencyConflict as exc:
            deps.metrics.admin_jobs.labels("conflict").inc()
            failure = AdminFailure(409, str(exc), "admin replay dlq idempotency conflict")
            failure.fields |= {
                "job_id": exc.job.job_id,
                "idempotency_key_fingerprint": fingerprint(idempotency_key or ""),
            }
            raise failure from None
        except QueueLimitExceeded as exc:
            deps.metrics.admin_jobs.labels("queue_limited").inc()
            failure = AdminFailure(409, str(exc), "admin replay dlq queue limit conflict")
            failure.fields |= {"queue_scope": exc.scope, "queue_count": exc.count}
            raise failure from None
        if reused:
            deps.metrics.admin_jobs.labels("reused").inc()
            return respond(
                request,
                200,
                {"idempotency_reused": True, "job": job.to_json()},
                "admin replay dlq idempotency reused",
                job_id=job.job_id,
            )
        deps.metrics.admin_jobs.labels("accepted").inc()
        deps.runner.submit(job)
        return respond(
            request,
            202,
            {"job": job.to_json()},
            "admin replay dlq accepted",
            job_id=job.job_id,
            effective_limit=job.effective_limit,
            dry_run=job.dry_run,
            capped=job.capped,
            operator_reason=job.operator_reason,
            filters=replay.provider + "/" + replay.stage + "/" + replay.tenant,
        )

    @app.get(
        "/admin/replay-dlq",
        response_model=models.ReplayJobListResponse,
        responses=error_responses,
        summary="List replay jobs, newest first",
    )
    async def list_replays(
        request: Request,
        status: Annotated[str | None, Query(description="filter by status")] = None,
        limit: Annotated[str | None, Query(description="page size (default 50, max 500)")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> Response:
        begin(request, "replay_dlq_list", Scope.READ)
        rejected = "admin replay dlq list rejected"
        raw_status = (status or "").strip().lower()
        if raw_status and raw_status not in JobStatus.__members__.values():
            raise _rejected(
                f"invalid status {_quoted((status or '').strip())}: must be one of "
                "queued|running|succeeded|failed|cancelled",
                rejected,
            )
        size = min(
            _positive_int(limit, "list limit", rejected) or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
        )
        raw_cursor = (cursor or "").strip()
        try:
            page = deps.registry.page(
                JobStatus(raw_status) if raw_status else None, size, raw_cursor
            )
        except InvalidCursor as exc:
            raise _rejected(str(exc), rejected) from None
        return respond(
            request,
            200,
            {
                "status": raw_status,
                "limit": size,
                "cursor": raw_cursor,
                "next_cursor": page.next_cursor,
                "count": len(page.jobs),
                "summary": page.summary,
                "jobs": [job.to_json() for job in page.jobs],
            },
            "admin replay dlq list fetched",
            count=len(page.jobs),
        )

    @app.get(
        "/admin/replay-dlq/{job_id}",
        response_model=models.ReplayJobEnvelope,
        responses=error_responses,
        summary="Fetch one replay job",
    )
    async def get_replay(request: Request, job_id: Annotated[str, Path()]) -> Response:
        begin(request, "replay_dlq_status", Scope.READ)
        job = deps.registry.get(_job_id(job_id))
        if job is None:
            raise AdminFailure(404, "replay job not found", "admin replay dlq status missing")
        return respond(
            request,
            200,
            {"job": job.to_json()},
            "admin replay dlq status fetched",
            job_id=job.job_id,
        )

    @app.delete(
        "/admin/replay-dlq/{job_id}",
        response_model=models.ReplayJobEnvelope,
        response_description="Job cancelled",
        responses=error_responses,
        summary="Cancel a queued replay job",
    )
    async def cancel_replay(
        request: Request,
        job_id: Annotated[str, Path()],
        reason: Annotated[str | None, Header(alias="X-Admin-Reason")] = None,
    ) -> Response:
        begin(request, "replay_dlq_cancel", Scope.CANCEL)
        wanted = _job_id(job_id)
        cancel_reason = _reason(reason, server, "admin replay dlq cancel rejected")
        try:
            job = deps.registry.cancel(wanted, cancel_reason)
        except NotCancellable as exc:
            failure = AdminFailure(409, str(exc), "admin replay dlq cancel conflict")
            failure.fields |= {"job_id": wanted, "status": exc.job.status.value}
            raise failure from None
        if job is None:
            raise AdminFailure(404, "replay job not found", "admin replay dlq cancel missing")
        deps.metrics.admin_jobs.labels("cancelled").inc()
        return respond(
            request, 200, {"job": job.to_json()}, "admin replay dlq cancelled", job_id=job.job_id
        )

    @app.get(
        "/admin/dlq",
        response_model=models.DeadLetterListResponse,
        responses={**error_responses, 503: {"model": models.AdminError}},
        summary="List dead-letter records, newest first",
    )
    async def list_dead_letters(
        request: Request,
        stage: Annotated[str | None, Query()] = None,
        provider: Annotated[str | None, Query()] = None,
        tenant: Annotated[str | None, Query()] = None,
        limit: Annotated[str | None, Query(description="page size (default 50, max 500)")] = None,
        cursor: Annotated[str | None, Query()] = None,
        include_payload: Annotated[str | None, Query(description="true/false")] = None,
    ) -> Response:
        begin(request, "dlq_list", Scope.READ)
        rejected = "admin dlq list rejected"
        size = min(
            _positive_int(limit, "list limit", rejected) or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
        )
        raw_payload = (include_payload or "").strip()
        if raw_payload not in _BOOLEANS:
            raise _rejected(f"invalid boolean {_quoted(raw_payload)}", rejected)
        before = _sequence_cursor((cursor or "").strip(), rejected)
        letter_filter = LetterFilter(
            (stage or "").strip().lower(), (provider or "").strip().lower(), (tenant or "").strip()
        )
        try:
            letters, next_before = await deps.dead_letters.newest_first(
                letter_filter, before, size, DLQ_MAX_PROBES
            )
            summary = await deps.dead_letters.counts_by_stage(
                LetterFilter(letter_filter.stage, letter_filter.provider)
            )
        except (NatsError, TimeoutError, OSError) as exc:
            raise AdminFailure(
                503, f"dead-letter stream unavailable: {exc or type(exc).__name__}", rejected
            ) from None
        return respond(
            request,
            200,
            {
                "records": [_letter_json(letter, _BOOLEANS[raw_payload]) for letter in letters],
                "next_cursor": _encode_sequence(next_before) if next_before else "",
                "summary": summary,
            },
            "admin dlq list fetched",
            count=len(letters),
        )

    @app.get(
        "/admin/events",
        response_model=models.EventListResponse,
        responses={**error_responses, 503: {"model": models.AdminError}},
        summary="Search the events stored by the ClickHouse sink, newest first",
    )
    async def list_events(
        request: Request,
        id: Annotated[str | None, Query(description="CloudEvent id")] = None,
        request_id: Annotated[str | None, Query(description="the webhook's X-Request-ID")] = None,
        provider: Annotated[str | None, Query()] = None,
        tenant: Annotated[str | None, Query()] = None,
        type: Annotated[str | None, Query(description="CloudEvent type")] = None,
        entity_id: Annotated[str | None, Query()] = None,
        since: Annotated[str | None, Query(description="RFC 3339, inclusive")] = None,
        until: Annotated[str | None, Query(description="RFC 3339, exclusive")] = None,
        limit: Annotated[str | None, Query(description="page size (default 100, max 1000)")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> Response:
        begin(request, "events", Scope.READ)
        rejected = "admin events rejected"
        if deps.search_events is None:
            raise AdminFailure(
                404,
                "events are not stored here: enable the ClickHouse sink "
                "(clickhouse.backend: embedded or clickhouse.addr) in a process that also "
                "runs the admin role",
                rejected,
            )
        size = min(_positive_int(limit, "limit", rejected) or DEFAULT_EVENT_LIMIT, MAX_EVENT_LIMIT)
        filters = EventFilters(
            id=_blank_to_none(id),
            request_id=_blank_to_none(request_id),
            provider=_blank_to_none(provider),
            tenant=_blank_to_none(tenant),
            type=_blank_to_none(type),
            entity_id=_blank_to_none(entity_id),
            since=_instant(since, "since", rejected),
            until=_instant(until, "until", rejected),
        )
        try:
            events, next_cursor = await deps.search_events(filters, size, _blank_to_none(cursor))
        except InvalidSearch as exc:
            raise _rejected(str(exc), rejected) from None
        except BackendError as exc:
            raise AdminFailure(
                503, f"event store unavailable: {exc}", "admin events failed"
            ) from None
        return respond(
            request,
            200,
            {"events": events, "next_cursor": next_cursor or ""},
            "admin events fetched",
            count=len(events),
        )

    @app.get(
        "/admin/poller-status",
        response_model=models.PollerStatusResponse,
        responses=error_responses,
        summary="Runtime status of the pollers",
    )
    async def poller_status(
        request: Request,
        provider: Annotated[str | None, Query()] = None,
        tenant: Annotated[str | None, Query()] = None,
    ) -> Response:
        begin(request, "poller_status", Scope.READ)
        wanted_provider = (provider or "").strip()
        wanted_tenant = (tenant or "").strip()
        pollers = [
            status
            for status in deps.poller_status()
            if (not wanted_provider or status["provider"].lower() == wanted_provider.lower())
            and (not wanted_tenant or status.get("tenant_id", "") == wanted_tenant)
        ]
        pollers.sort(key=lambda status: (status["provider"], status.get("tenant_id", "")))
        return respond(
            request,
            200,
            {
                "generated_at": format_time_ns(time.time_ns()),
                "provider": wanted_provider,
                "tenant": wanted_tenant,
                "count": len(pollers),
                "pollers": pollers,
            },
            "admin poller status fetched",
            poller_count=len(pollers),
        )

    return app


def _audit(
    metrics: Metrics,
    request: Request,
    call: Call,
    status: int,
    log_msg: str,
    fields: dict[str, Any],
) -> None:
    outcome = _OUTCOMES.get(status, "error")
    duration = time.perf_counter() - call.started
    metrics.admin_requests.labels(call.endpoint, outcome).inc()
    metrics.admin_duration.labels(call.endpoint, outcome).observe(duration)
    line = {
        "request_id": call.request_id,
        "requester_ip": call.requester_ip,
        "user_agent": request.headers.get("user-agent", ""),
        "method": request.method,
        "path": request.url.path,
        "endpoint": call.endpoint,
        "status": status,
        "outcome": outcome,
        "duration_ms": round(duration * 1000, 3),
        **({"token_slot": call.principal.slot} if call.principal else {}),
        **fields,
    }
    if status < 400:
        log.info(log_msg, **line)
    else:
        log.warning(log_msg, **line)


def _json(status: int, body: dict[str, Any], request_id: str) -> Response:
    return Response(
        orjson.dumps(body) + b"\n",
        status_code=status,
        media_type="application/json",
        headers={"X-Request-ID": request_id},
    )


def _rejected(error: str, log_msg: str) -> AdminFailure:
    return AdminFailure(400, error, log_msg)


def _positive_int(raw: str | None, name: str, log_msg: str) -> int:
    """0 when absent; else a positive integer or a 400 naming the value."""
    text = (raw or "").strip()
    if not text:
        return 0
    # Go's strconv.Atoi: ASCII digits with an optional sign, within int64 (Python's int()
    # would also take "1_000", non-ASCII digits and numbers too large to serialise).
    value = int(text) if _INTEGER.fullmatch(text) else None
    if value is None or not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise _rejected(f"invalid {name} {_quoted(text)}: must be a positive integer", log_msg)
    if value <= 0:
        raise _rejected(f"invalid {name} {_quoted(text)}: must be greater than 0", log_msg)
    return value


def _reason(raw: str | None, server: ServerConfig, log_msg: str) -> str:
    """The X-Admin-Reason: required when configured; when given, at least the minimum length
    (in characters)."""
    text = _utf8((raw or "").strip())
    if not text:
        if server.admin_replay_require_reason:
            raise _rejected("X-Admin-Reason header is required", log_msg)
        return ""
    minimum = server.admin_replay_reason_min_length
    if len(text) < minimum:
        raise _rejected(f"X-Admin-Reason must be at least {minimum} characters", log_msg)
    return text


def _utf8(header: str) -> str:
    """A header value as the client wrote it: ASGI servers decode header bytes as Latin-1,
    but clients send UTF-8 text (curl -H 'X-Admin-Reason: réparation')."""
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return header


def _blank_to_none(raw: str | None) -> str | None:
    text = (raw or "").strip()
    return text or None


def _instant(raw: str | None, name: str, log_msg: str) -> datetime | None:
    """An RFC 3339 time (offset required) as an aware datetime, or a 400 naming it."""
    text = (raw or "").strip()
    if not text:
        return None
    ns = parse_rfc3339_ns(text)
    if ns is None:
        raise _rejected(
            f"invalid {name} {_quoted(text)}: must be an RFC 3339 time such as "
            "2026-11-28T10:00:00Z",
            log_msg,
        )
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _job_id(raw: str) -> str:
    job_id = raw.strip()
    if not job_id:
        raise AdminFailure(400, "job_id is required", "admin replay dlq rejected")
    return job_id


def _encode_sequence(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"seq|{sequence}".encode()).decode().rstrip("=")


def _sequence_cursor(cursor: str, log_msg: str) -> int | None:
    if not cursor:
        return None
    if not _BASE64URL.fullmatch(cursor):  # the lenient decoder would skip such characters
        raise _rejected("invalid cursor: malformed encoding", log_msg)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _rejected("invalid cursor: malformed encoding", log_msg) from None
    prefix, _, number = raw.partition("|")
    if prefix != "seq" or not _DIGITS.fullmatch(number) or int(number) <= 0:
        raise _rejected("invalid cursor: malformed payload", log_msg)
    return int(number)


def _letter_json(letter: StoredLetter, include_payload: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": letter.id,
        "sequence": letter.sequence,
        "stage": letter.stage,
        "provider": letter.provider,
        "tenant_id": letter.tenant_id,
        "request_id": letter.request_id,
        "reason": letter.reason,
        "original_subject": letter.original_subject,
        "occurred_at": letter.occurred_at,
        "replayable": letter.replayable,
    }
    if include_payload and letter.original_payload:
        body["original_payload"] = base64.b64encode(letter.original_payload).decode()
    return body
