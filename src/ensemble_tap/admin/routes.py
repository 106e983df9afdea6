"""The admin API's routes: DLQ inspection, replay jobs, stored events, poller status.

Each handler is a plain function of the module ``router``. Its ``call`` parameter,
``guarded(action, scope)``, runs the guard chain first (``admin/guarded.py``) and names the
scope the route needs, once: the OpenAPI document reads it from there. Query and header
values are taken as text and read by ``admin/params.py``, so a bad one gets the reference's
exact 400 message. Every call ends in one audit line and one metric observation
(``Call.respond``, or ``Call.fail`` through the app's failure handlers) and answers JSON;
errors are ``{"request_id": …, "error": …}``.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from ensemble_tap.admin import models, params
from ensemble_tap.admin.calls import AdminFailure, Call
from ensemble_tap.admin.cursors import InvalidCursor, encode_sequence_cursor
from ensemble_tap.admin.guarded import guarded
from ensemble_tap.admin.guards import Scope, fingerprint
from ensemble_tap.admin.history import MetricsHistory, empty_history
from ensemble_tap.admin.jobs import (
    IdempotencyConflict,
    JobStatus,
    NewJob,
    NotCancellable,
    QueueLimitExceeded,
    ReplayRequest,
)
from ensemble_tap.admin.live_tail import LiveStreams, OpenFeed, TailFilter
from ensemble_tap.admin.replay_jobs import JobsUnavailable, ReplayJobs
from ensemble_tap.admin.runner import ReplayRunner
from ensemble_tap.bus.dlq_store import (
    STORE_UNAVAILABLE,
    DeadLetterStore,
    LetterFilter,
    StoredLetter,
)
from ensemble_tap.config.models import ServerConfig
from ensemble_tap.events import format_time_ns
from ensemble_tap.observability import Metrics
from ensemble_tap.poller.controls import (
    NO_TENANT,
    ControlRefused,
    ControlsUnavailable,
    Operator,
    UnknownTarget,
)
from ensemble_tap.sink.backends import BackendError
from ensemble_tap.sink.search import DEFAULT_LIMIT as DEFAULT_EVENT_LIMIT
from ensemble_tap.sink.search import MAX_LIMIT as MAX_EVENT_LIMIT
from ensemble_tap.sink.search import EventFilters, InvalidSearch
from ensemble_tap.state.base import StateError

DEFAULT_REPLAY_LIMIT = 100
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 500
DLQ_MAX_PROBES = 5_000

PollerStatusSource = Callable[[], list[dict[str, Any]]]


class PollerControl(Protocol):
    """``PollerService.control``: the target's status after the action, and what was done."""

    async def __call__(
        self, provider: str, tenant: str, *, action: str, operator: Operator
    ) -> tuple[dict[str, Any], dict[str, Any]]: ...


EventSearch = Callable[
    [EventFilters, int, str | None], Awaitable[tuple[list[dict[str, Any]], str | None]]
]


@dataclass(slots=True, frozen=True, kw_only=True)
class AdminDependencies:
    """What the handlers work with (``app.state.admin`` of the app ``admin_app`` builds)."""

    server: ServerConfig
    jobs: ReplayJobs
    runner: ReplayRunner
    dead_letters: DeadLetterStore
    metrics: Metrics
    poller_status: PollerStatusSource
    # The ClickHouse sink's event search; None when the sink is not enabled.
    search_events: EventSearch | None = None
    # The pollers' controls; None when this process runs no pollers.
    poller_control: PollerControl | None = None
    # GET /admin/events/stream: the open streams, and a new subscription to the events.
    live: LiveStreams = field(default_factory=LiveStreams)
    open_feed: OpenFeed | None = None
    # GET /admin/metrics/history; None when this app has no sampler (make openapi).
    history: MetricsHistory | None = None


async def admin_dependencies(request: Request) -> AdminDependencies:
    deps: AdminDependencies = request.app.state.admin
    return deps


Admin = Annotated[AdminDependencies, Depends(admin_dependencies)]
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": models.AdminError} for status in (400, 401, 403, 404, 409, 429)
}
# Replay-job routes: a store shared through NATS (backend nats) may be out of reach.
JOB_RESPONSES = {**ERROR_RESPONSES, 503: {"model": models.AdminError}}
router = APIRouter()


@router.post(
    "/admin/replay-dlq",
    status_code=202,
    response_model=models.ReplayJobEnvelope,
    response_description="Job accepted (status queued)",
    responses={
        200: {
            "model": models.ReplayJobEnvelope,
            "description": "Same Idempotency-Key and request: the existing job, unchanged",
        },
        **JOB_RESPONSES,
    },
    summary="Create a replay job",
)
async def create_replay(
    *,
    call: Annotated[Call, guarded("replay_dlq", Scope.REPLAY)],
    admin: Admin,
    limit: Annotated[str | None, Query(description="records to handle (default 100)")] = None,
    dry_run: Annotated[str | None, Query(description="count only (true/false)")] = None,
    provider: Annotated[str | None, Query(description="only this provider")] = None,
    stage: Annotated[str | None, Query(description="only this stage")] = None,
    tenant: Annotated[str | None, Query(description="only this tenant")] = None,
    sequence: Annotated[
        str | None,
        Query(description="only the record at this DLQ sequence (GET /admin/dlq/{id})"),
    ] = None,
    reason: Annotated[str | None, Header(alias="X-Admin-Reason")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    rejected = "admin replay dlq rejected"
    max_limit = admin.server.admin_replay_max_limit
    requested = params.positive_int(limit, "limit", rejected)
    effective = min(requested or DEFAULT_REPLAY_LIMIT, max_limit)
    capped = (requested or DEFAULT_REPLAY_LIMIT) > max_limit
    replay = ReplayRequest(
        effective_limit=effective,
        dry_run=params.boolean(dry_run, rejected),
        provider=(provider or "").strip().lower(),
        stage=(stage or "").strip().lower(),
        tenant=(tenant or "").strip(),
        sequence=params.positive_int(sequence, "sequence", rejected) or 0,
    )
    operator_reason = params.reason(reason, admin.server, rejected)
    assert call.principal is not None
    try:
        job, reused = await admin.jobs.create(
            NewJob(
                request=replay,
                requested_limit=requested,
                max_limit=max_limit,
                capped=capped,
                idempotency_key=(idempotency_key or "").strip(),
                creator_ip=call.requester_ip,
                token_fingerprint=call.principal.token_fingerprint,
                request_id=call.request_id,
                reason=operator_reason,
            )
        )
    except IdempotencyConflict as exc:
        admin.metrics.admin_jobs.labels("conflict").inc()
        failure = AdminFailure(409, str(exc), "admin replay dlq idempotency conflict")
        failure.fields |= {
            "job_id": exc.job.job_id,
            "idempotency_key_fingerprint": fingerprint(idempotency_key or ""),
        }
        raise failure from None
    except QueueLimitExceeded as exc:
        admin.metrics.admin_jobs.labels("queue_limited").inc()
        failure = AdminFailure(409, str(exc), "admin replay dlq queue limit conflict")
        failure.fields |= {"queue_scope": exc.scope, "queue_count": exc.count}
        raise failure from None
    except JobsUnavailable as exc:
        raise AdminFailure(503, str(exc), rejected) from None
    if reused:
        admin.metrics.admin_jobs.labels("reused").inc()
        return call.respond(
            200,
            {"idempotency_reused": True, "job": job.to_json()},
            "admin replay dlq idempotency reused",
            job_id=job.job_id,
        )
    admin.metrics.admin_jobs.labels("accepted").inc()
    admin.runner.submit(job.job_id)
    return call.respond(
        202,
        {"job": job.to_json()},
        "admin replay dlq accepted",
        job_id=job.job_id,
        effective_limit=job.effective_limit,
        dry_run=job.dry_run,
        capped=job.capped,
        operator_reason=job.operator_reason,
        filters=replay.provider + "/" + replay.stage + "/" + replay.tenant,
        **({"sequence": replay.sequence} if replay.sequence else {}),
    )


@router.get(
    "/admin/replay-dlq",
    response_model=models.ReplayJobListResponse,
    responses=JOB_RESPONSES,
    summary="List replay jobs, newest first",
)
async def list_replays(
    *,
    call: Annotated[Call, guarded("replay_dlq_list", Scope.READ)],
    admin: Admin,
    status: Annotated[str | None, Query(description="filter by status")] = None,
    limit: Annotated[str | None, Query(description="page size (default 50, max 500)")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    rejected = "admin replay dlq list rejected"
    raw_status = (status or "").strip().lower()
    if raw_status and raw_status not in JobStatus.__members__.values():
        raise params.rejected(
            f"invalid status {params.quoted((status or '').strip())}: must be one of "
            "queued|running|succeeded|failed|cancelled",
            rejected,
        )
    size = min(
        params.positive_int(limit, "list limit", rejected) or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
    )
    raw_cursor = (cursor or "").strip()
    try:
        page = await admin.jobs.page(
            JobStatus(raw_status) if raw_status else None, size, raw_cursor
        )
    except InvalidCursor as exc:
        raise params.rejected(str(exc), rejected) from None
    except JobsUnavailable as exc:
        raise AdminFailure(503, str(exc), rejected) from None
    return call.respond(
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


@router.get(
    "/admin/replay-dlq/{job_id}",
    response_model=models.ReplayJobEnvelope,
    responses=JOB_RESPONSES,
    summary="Fetch one replay job",
)
async def get_replay(
    *,
    call: Annotated[Call, guarded("replay_dlq_status", Scope.READ)],
    admin: Admin,
    job_id: Annotated[str, Path()],
) -> Response:
    try:
        job = await admin.jobs.get(params.job_id(job_id))
    except JobsUnavailable as exc:
        raise AdminFailure(503, str(exc), "admin replay dlq status rejected") from None
    if job is None:
        raise AdminFailure(404, "replay job not found", "admin replay dlq status missing")
    return call.respond(
        200, {"job": job.to_json()}, "admin replay dlq status fetched", job_id=job.job_id
    )


@router.delete(
    "/admin/replay-dlq/{job_id}",
    response_model=models.ReplayJobEnvelope,
    response_description="Job cancelled",
    responses=JOB_RESPONSES,
    summary="Cancel a queued replay job",
)
async def cancel_replay(
    *,
    call: Annotated[Call, guarded("replay_dlq_cancel", Scope.CANCEL)],
    admin: Admin,
    job_id: Annotated[str, Path()],
    reason: Annotated[str | None, Header(alias="X-Admin-Reason")] = None,
) -> Response:
    wanted = params.job_id(job_id)
    cancel_reason = params.reason(reason, admin.server, "admin replay dlq cancel rejected")
    try:
        job = await admin.jobs.cancel(wanted, cancel_reason)
    except NotCancellable as exc:
        failure = AdminFailure(409, str(exc), "admin replay dlq cancel conflict")
        failure.fields |= {"job_id": wanted, "status": exc.job.status.value}
        raise failure from None
    except JobsUnavailable as exc:
        raise AdminFailure(503, str(exc), "admin replay dlq cancel rejected") from None
    if job is None:
        raise AdminFailure(404, "replay job not found", "admin replay dlq cancel missing")
    admin.metrics.admin_jobs.labels("cancelled").inc()
    return call.respond(
        200, {"job": job.to_json()}, "admin replay dlq cancelled", job_id=job.job_id
    )


@router.get(
    "/admin/dlq",
    response_model=models.DeadLetterListResponse,
    responses={**ERROR_RESPONSES, 503: {"model": models.AdminError}},
    summary="List dead-letter records, newest first",
)
async def list_dead_letters(
    *,
    call: Annotated[Call, guarded("dlq_list", Scope.READ)],
    admin: Admin,
    stage: Annotated[str | None, Query()] = None,
    provider: Annotated[str | None, Query()] = None,
    tenant: Annotated[str | None, Query()] = None,
    limit: Annotated[str | None, Query(description="page size (default 50, max 500)")] = None,
    cursor: Annotated[str | None, Query()] = None,
    include_payload: Annotated[str | None, Query(description="true/false")] = None,
) -> Response:
    rejected = "admin dlq list rejected"
    size = min(
        params.positive_int(limit, "list limit", rejected) or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
    )
    with_payload = params.boolean(include_payload, rejected)
    before = params.sequence_cursor(cursor, rejected)
    letter_filter = LetterFilter(
        (stage or "").strip().lower(), (provider or "").strip().lower(), (tenant or "").strip()
    )
    try:
        letters, next_before = await admin.dead_letters.newest_first(
            letter_filter, before, size, DLQ_MAX_PROBES
        )
        summary = await admin.dead_letters.counts_by_stage(
            LetterFilter(letter_filter.stage, letter_filter.provider)
        )
    except STORE_UNAVAILABLE as exc:
        raise AdminFailure(
            503, f"dead-letter stream unavailable: {exc or type(exc).__name__}", rejected
        ) from None
    return call.respond(
        200,
        {
            "records": [letter_json(letter, with_payload) for letter in letters],
            "next_cursor": encode_sequence_cursor(next_before) if next_before else "",
            "summary": summary,
        },
        "admin dlq list fetched",
        count=len(letters),
    )


@router.get(
    "/admin/dlq/{id}",
    response_model=models.DeadLetterDetailResponse,
    responses={**ERROR_RESPONSES, 503: {"model": models.AdminError}},
    summary="Fetch one dead-letter record, with its request headers and body where kept",
)
async def get_dead_letter(
    *,
    call: Annotated[Call, guarded("dlq_get", Scope.READ)],
    admin: Admin,
    id: Annotated[
        str,
        Path(description="the record's sequence, or its id (dlq_…: the newest record with it)"),
    ],
) -> Response:
    wanted = id.strip()
    try:
        if wanted.isdigit():
            letter = await admin.dead_letters.at_sequence(int(wanted))
        else:
            letter = await admin.dead_letters.newest_with_id(wanted, DLQ_MAX_PROBES)
    except STORE_UNAVAILABLE as exc:
        raise AdminFailure(
            503, f"dead-letter stream unavailable: {exc or type(exc).__name__}",
            "admin dlq get rejected",
        ) from None  # fmt: skip
    if letter is None:
        failure = AdminFailure(404, "dead-letter record not found", "admin dlq get missing")
        failure.fields["record"] = wanted[:200]
        raise failure
    return call.respond(
        200,
        {"record": letter_detail_json(letter)},
        "admin dlq record fetched",
        sequence=letter.sequence,
        record_id=letter.id,
    )


@router.get(
    "/admin/events",
    response_model=models.EventListResponse,
    responses={**ERROR_RESPONSES, 503: {"model": models.AdminError}},
    summary="Search the events stored by the ClickHouse sink, newest first",
)
async def list_events(
    *,
    call: Annotated[Call, guarded("events", Scope.READ)],
    admin: Admin,
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
    rejected = "admin events rejected"
    if admin.search_events is None:
        raise AdminFailure(
            404,
            "events are not stored here: enable the ClickHouse sink "
            "(clickhouse.backend: embedded or clickhouse.addr) in a process that also "
            "runs the admin role",
            rejected,
        )
    size = min(
        params.positive_int(limit, "limit", rejected) or DEFAULT_EVENT_LIMIT, MAX_EVENT_LIMIT
    )
    filters = EventFilters(
        id=params.blank_to_none(id),
        request_id=params.blank_to_none(request_id),
        provider=params.blank_to_none(provider),
        tenant=params.blank_to_none(tenant),
        type=params.blank_to_none(type),
        entity_id=params.blank_to_none(entity_id),
        since=params.instant(since, "since", rejected),
        until=params.instant(until, "until", rejected),
    )
    try:
        events, next_cursor = await admin.search_events(filters, size, params.blank_to_none(cursor))
    except InvalidSearch as exc:
        raise params.rejected(str(exc), rejected) from None
    except BackendError as exc:
        raise AdminFailure(503, f"event store unavailable: {exc}", "admin events failed") from None
    return call.respond(
        200,
        {"events": events, "next_cursor": next_cursor or ""},
        "admin events fetched",
        count=len(events),
    )


@router.get(
    "/admin/events/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Server-sent events: `id:` the stream sequence, `data:` one "
            "CloudEvent as JSON; a comment line every 15 s keeps the connection",
        },
        **ERROR_RESPONSES,
        503: {"model": models.AdminError},
    },
    summary="Follow the events as they are published (server-sent events)",
)
async def stream_events(
    *,
    call: Annotated[Call, guarded("events_stream", Scope.READ)],
    admin: Admin,
    provider: Annotated[str | None, Query()] = None,
    tenant: Annotated[str | None, Query()] = None,
    type: Annotated[str | None, Query(description="CloudEvent type")] = None,
) -> Response:
    rejected = "admin events stream rejected"
    if admin.open_feed is None:
        raise AdminFailure(503, "the events stream is not reachable from here", rejected)
    if admin.live.full():
        raise AdminFailure(
            503, f"too many open event streams (at most {admin.live.limit})", rejected
        )
    wanted = TailFilter(
        provider=(provider or "").strip().lower(),
        tenant=(tenant or "").strip(),
        type=(type or "").strip(),
    )
    call.audit(
        200,
        "admin events stream opened",
        {"provider": wanted.provider, "tenant": wanted.tenant, "type": wanted.type},
    )
    return StreamingResponse(
        admin.live.serve(admin.open_feed, wanted),
        media_type="text/event-stream",
        headers={
            "X-Request-ID": call.request_id,
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        },
    )


@router.get(
    "/admin/metrics/history",
    response_model=models.MetricsHistoryResponse,
    responses=ERROR_RESPONSES,
    summary="The last hour of webhooks, failures, dead letters, sink lag and pollers",
)
async def metrics_history(
    *,
    call: Annotated[Call, guarded("metrics_history", Scope.READ)],
    admin: Admin,
) -> Response:
    history = admin.history.as_json() if admin.history is not None else empty_history()
    body = {"generated_at": format_time_ns(time.time_ns()), **history}
    return call.respond(200, body, "admin metrics history fetched", points=len(body["points"]))


@router.get(
    "/admin/poller-status",
    response_model=models.PollerStatusResponse,
    responses=ERROR_RESPONSES,
    summary="Runtime status of the pollers",
)
async def poller_status(
    *,
    call: Annotated[Call, guarded("poller_status", Scope.READ)],
    admin: Admin,
    provider: Annotated[str | None, Query()] = None,
    tenant: Annotated[str | None, Query()] = None,
) -> Response:
    wanted_provider = (provider or "").strip()
    wanted_tenant = (tenant or "").strip()
    pollers = [
        status
        for status in admin.poller_status()
        if (not wanted_provider or status["provider"].lower() == wanted_provider.lower())
        and (not wanted_tenant or status.get("tenant_id", "") == wanted_tenant)
    ]
    pollers.sort(key=lambda status: (status["provider"], status.get("tenant_id", "")))
    return call.respond(
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


# Poller controls (poller/controls.py): scope replay, the scope of actions that make the
# service deliver again; a read-only token can see pollers, not steer them.
ProviderPath = Annotated[str, Path(description="the provider's name")]
TenantPath = Annotated[str, Path(description=f"the tenant id; {NO_TENANT} for no tenant")]
ReasonHeader = Annotated[
    str | None, Header(alias="X-Admin-Reason", description="why (required; audited)")
]
POLLER_RESPONSES = {**ERROR_RESPONSES, 503: {"model": models.AdminError}}


@router.post(
    "/admin/pollers/{provider}/{tenant}/run",
    status_code=202,
    response_model=models.PollerControlResponse,
    responses=POLLER_RESPONSES,
    summary="Poll a target now: its next cycle starts at once (after one in flight)",
)
async def run_poller(
    *,
    call: Annotated[Call, guarded("poller_run", Scope.REPLAY)],
    admin: Admin,
    provider: ProviderPath,
    tenant: TenantPath,
    reason: ReasonHeader = None,
) -> Response:
    target = (provider, tenant)
    return await _control_poller(call, admin, target=target, action="run", reason=reason)


@router.post(
    "/admin/pollers/{provider}/{tenant}/pause",
    response_model=models.PollerControlResponse,
    responses=POLLER_RESPONSES,
    summary="Pause a target: no further cycles until resumed (kept across restarts)",
)
async def pause_poller(
    *,
    call: Annotated[Call, guarded("poller_pause", Scope.REPLAY)],
    admin: Admin,
    provider: ProviderPath,
    tenant: TenantPath,
    reason: ReasonHeader = None,
) -> Response:
    target = (provider, tenant)
    return await _control_poller(call, admin, target=target, action="pause", reason=reason)


@router.post(
    "/admin/pollers/{provider}/{tenant}/resume",
    response_model=models.PollerControlResponse,
    responses=POLLER_RESPONSES,
    summary="Resume a paused target",
)
async def resume_poller(
    *,
    call: Annotated[Call, guarded("poller_resume", Scope.REPLAY)],
    admin: Admin,
    provider: ProviderPath,
    tenant: TenantPath,
    reason: ReasonHeader = None,
) -> Response:
    target = (provider, tenant)
    return await _control_poller(call, admin, target=target, action="resume", reason=reason)


@router.post(
    "/admin/pollers/{provider}/{tenant}/reset",
    response_model=models.PollerControlResponse,
    responses=POLLER_RESPONSES,
    summary="Forget a target's checkpoints: its next cycle starts from the initial lookback",
)
async def reset_poller(
    *,
    call: Annotated[Call, guarded("poller_reset", Scope.REPLAY)],
    admin: Admin,
    provider: ProviderPath,
    tenant: TenantPath,
    reason: ReasonHeader = None,
) -> Response:
    target = (provider, tenant)
    return await _control_poller(call, admin, target=target, action="reset", reason=reason)


async def _control_poller(
    call: Call,
    admin: AdminDependencies,
    *,
    target: tuple[str, str],
    action: str,
    reason: str | None,
) -> Response:
    provider, tenant = target
    rejected = f"admin poller {action} rejected"
    operator_reason = params.reason(reason, admin.server, rejected)
    if not operator_reason:
        raise params.rejected("X-Admin-Reason header is required", rejected)
    if admin.poller_control is None:
        raise AdminFailure(404, "no pollers run in this process", rejected)
    assert call.principal is not None
    operator = Operator(by=call.principal.slot, reason=operator_reason, request_id=call.request_id)
    fields = {"provider": provider.strip()[:100], "tenant": tenant.strip()[:200]}
    try:
        status, done = await admin.poller_control(
            provider.strip(), tenant.strip(), action=action, operator=operator
        )
    except UnknownTarget as exc:
        failure = AdminFailure(404, str(exc), f"admin poller {action} missing")
        failure.fields |= fields
        raise failure from None
    except ControlRefused as exc:
        failure = AdminFailure(409, str(exc), f"admin poller {action} conflict")
        failure.fields |= fields
        raise failure from None
    except (ControlsUnavailable, StateError) as exc:
        raise AdminFailure(503, str(exc), rejected) from None
    return call.respond(
        202 if action == "run" else 200,
        {"action": action, "result": done, "poller": status},
        f"admin poller {action}",
        **fields,
        operator_reason=operator_reason,
    )


def letter_json(letter: StoredLetter, include_payload: bool) -> dict[str, Any]:
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


def letter_detail_json(letter: StoredLetter) -> dict[str, Any]:
    """One record in full: the list's fields, the payload (base64, and as text when it is
    UTF-8) and the request's metadata. Credentials were never stored (``bus/dlq.py``)."""
    body = letter_json(letter, include_payload=True)
    if letter.original_payload:
        with contextlib.suppress(UnicodeDecodeError):
            body["original_payload_text"] = letter.original_payload.decode("utf-8")
    for key, value in (
        ("original_dedup_id", letter.original_dedup_id),
        ("payload_sha256", letter.payload_sha256),
    ):
        if value:
            body[key] = value
    if letter.request_meta:
        body["request_meta"] = letter.request_meta
    return body
