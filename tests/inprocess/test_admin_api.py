"""The admin API in process: the app ``build_admin`` makes, called through
``httpx.ASGITransport`` (no uvicorn, no port), over a broker connected to a real nats-server
(the DLQ store and replay need it). The guard matrix — every route × no token, wrong token,
read-only token, admin token, CIDR refused, rate limited — and the guards' order, in
milliseconds. tests/integration/test_admin_api.py runs the same API behind uvicorn."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from ensemble_tap.admin import models
from ensemble_tap.admin.guards import Scope, fingerprint
from ensemble_tap.admin.jobs import NewJob, ReplayRequest
from ensemble_tap.admin.live_tail import OpenFeed
from ensemble_tap.admin.openapi import route_scopes
from ensemble_tap.admin.routes import router
from ensemble_tap.admin.service import AdminService, build_admin
from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.dlq import DeadLetter, DeadLetterWriter
from ensemble_tap.bus.live import LiveFeed
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import (
    dlq_stream_config,
    dlq_stream_name,
    ensure_stream,
    main_stream_config,
)
from ensemble_tap.observability import Metrics
from ensemble_tap.poller.controls import Operator
from ensemble_tap.poller.service import PollerService
from ensemble_tap.sink.search import EventFilters
from ensemble_tap.state import MemoryStateStore
from tests.support.configs import make_config
from tests.support.nats_server import NatsServer
from tests.support.polling import FakeClock

TOKENS = {
    "primary": "tok-primary-0123456789",
    "secondary": "tok-secondary-0123456789",
    "read": "tok-read-0123456789",
    "replay": "tok-replay-0123456789",
    "cancel": "tok-cancel-0123456789",
}
SLOT_KEYS = {
    "primary": "admin_token",
    "secondary": "admin_token_secondary",
    "read": "admin_token_read",
    "replay": "admin_token_replay",
    "cancel": "admin_token_cancel",
}
GRANTS = {
    "primary": {Scope.READ, Scope.REPLAY, Scope.CANCEL},
    "secondary": {Scope.READ, Scope.REPLAY, Scope.CANCEL},
    "read": {Scope.READ},
    "replay": {Scope.READ, Scope.REPLAY},
    "cancel": {Scope.READ, Scope.CANCEL},
}
HIGH_RATE = {"admin_rate_limit_per_sec": 100_000, "admin_rate_limit_burst": 100_000}
PEER = "127.0.0.1"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {job_id}: a queued job made for the request; {id}: a dead letter's
    params: dict[str, str]
    endpoint: str  # the metric and audit label
    scope: Scope
    allowed: int  # the status once every guard let the call through


ROUTES = [
    Route("POST", "/admin/replay-dlq", {"dry_run": "true"}, "replay_dlq", Scope.REPLAY, 202),
    Route("GET", "/admin/replay-dlq", {}, "replay_dlq_list", Scope.READ, 200),
    Route("GET", "/admin/replay-dlq/{job_id}", {}, "replay_dlq_status", Scope.READ, 200),
    Route("DELETE", "/admin/replay-dlq/{job_id}", {}, "replay_dlq_cancel", Scope.CANCEL, 200),
    Route("GET", "/admin/dlq", {}, "dlq_list", Scope.READ, 200),
    Route("GET", "/admin/dlq/{id}", {}, "dlq_get", Scope.READ, 200),
    Route("GET", "/admin/events", {}, "events", Scope.READ, 200),
    Route("GET", "/admin/events/stream", {}, "events_stream", Scope.READ, 200),
    Route("GET", "/admin/poller-status", {}, "poller_status", Scope.READ, 200),
    Route("GET", "/admin/metrics/history", {}, "metrics_history", Scope.READ, 200),
    *(
        Route(
            "POST",
            f"/admin/pollers/{{provider}}/{{tenant}}/{action}",
            {},
            f"poller_{action}",
            Scope.REPLAY,
            202 if action == "run" else 200,
        )
        for action in ("run", "pause", "resume", "reset")
    ),
]
REASON = {"X-Admin-Reason": "matrix test of poller controls"}
NOTION = {"mode": "poll", "secret": "notion-token", "base_url": "http://127.0.0.1:9"}
CASES = ["no token", "wrong token", "read-only token", "admin token", "cidr denied", "rate limited"]


class StoredEvents:
    """The ClickHouse sink's event search as the admin sees it (``EventSearch``), over rows
    held in memory."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.searches: list[tuple[EventFilters, int, str | None]] = []

    async def __call__(
        self, filters: EventFilters, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.searches.append((filters, limit, cursor))
        found = [row for row in self.rows if filters.provider in (None, row["provider"])]
        return found[:limit], None


@dataclass
class AdminApi:
    service: AdminService
    metrics: Metrics
    events: StoredEvents
    broker: Broker
    writer: DeadLetterWriter
    dlq_stream: str
    pollers: PollerService

    def client(self, peer: str = PEER) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.service.app, client=(peer, 40_000))
        return httpx.AsyncClient(transport=transport, base_url="http://tap")

    async def queued_job(self) -> str:
        """A job that stays queued: in the job store, never handed to the runner."""
        job, _ = await self.service.jobs.create(
            NewJob(
                request=ReplayRequest(effective_limit=10, dry_run=True),
                requested_limit=0,
                max_limit=2000,
                capped=False,
                idempotency_key="",
                creator_ip=PEER,
                token_fingerprint=fingerprint(TOKENS["primary"]),
                request_id="req-queued",
                reason="",
            )
        )
        return job.job_id

    async def dead_letter(self, **fields: Any) -> int:
        """Write a dead letter; its stream sequence."""
        letter = DeadLetter(**{"stage": "publish", "provider": "acme", "reason": "r", **fields})
        assert await self.writer.write(letter)
        info = await self.broker.js.stream_info(self.dlq_stream)
        return int(info.state.last_seq)

    async def set_paused(self, paused: bool) -> None:
        [scheduler] = self.pollers.schedulers
        if (scheduler.paused is not None) != paused:
            operator = Operator(by="test", reason="set up the matrix")
            await self.pollers.control(
                "notion", "-", action="pause" if paused else "resume", operator=operator
            )

    def count(self, endpoint: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "tap_admin_requests_total", {"endpoint": endpoint, "outcome": outcome}
        )
        return value or 0.0


BuildAdmin = Callable[..., Awaitable[AdminApi]]


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A server of this module's own: the DLQ stream's subjects are the same in every config."""
    server = NatsServer(tmp_path_factory.mktemp("admin-nats")).start()
    yield server
    server.stop()


@pytest.fixture
async def build(nats: NatsServer, tmp_path: Path) -> AsyncIterator[BuildAdmin]:
    """``await build(**server)``: the admin app over a connected broker, with the DLQ stream."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**server: Any) -> AdminApi:
            config = make_config(
                nats.url, str(tmp_path / "data"), server=server, providers={"notion": NOTION}
            )
            metrics = Metrics()
            broker = Broker(config.nats, [nats.url], metrics)
            await broker.connect(5)
            stack.push_async_callback(broker.close)
            await ensure_stream(broker.js, dlq_stream_config(config.nats))
            await ensure_stream(broker.js, main_stream_config(config.nats))
            events = StoredEvents([{"id": "evt_1", "provider": "acme"}])
            publisher = JetStreamPublisher(broker, config.nats, metrics)
            writer = DeadLetterWriter(publisher, metrics)
            # Built, never run: cycles start only when a test asks (nothing listens on :9).
            pollers = PollerService(config, publisher=publisher, dlq=writer, metrics=metrics,
                                    store=MemoryStateStore(), clock=FakeClock())  # fmt: skip
            await pollers.start(run=False)
            stack.push_async_callback(pollers.stop)
            service = build_admin(
                config,
                broker=broker,
                publisher=publisher,
                metrics=metrics,
                poller_status=pollers.status,
                poller_control=pollers.control,
                search_events=events,
                exposition=lambda: _exposition(metrics),
            )
            stack.push_async_callback(service.runner.stop)
            # In process the response is read to its end: streams end once subscribed
            # (tests/integration/test_admin_events_stream.py follows one behind uvicorn).
            deps = service.app.state.admin
            assert deps.open_feed is not None
            service.app.state.admin = dataclasses.replace(
                deps, open_feed=_ending_at_once(deps.open_feed)
            )
            return AdminApi(
                service, metrics, events, broker, writer, dlq_stream_name(config.nats), pollers
            )

        yield make


async def _exposition(metrics: Metrics) -> bytes:
    return generate_latest(metrics.registry)


def _ending_at_once(open_feed: OpenFeed) -> OpenFeed:
    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[LiveFeed]:
        async with open_feed() as feed:
            feed.close()
            yield feed

    return opened


def _server_for(case: str) -> dict[str, Any]:
    tokens = {"admin_token": TOKENS["primary"], "admin_token_read": TOKENS["read"]}
    if case == "cidr denied":
        return {**tokens, **HIGH_RATE, "admin_allowed_cidrs": ["10.0.0.0/8"]}
    if case == "rate limited":
        return {**tokens, "admin_rate_limit_per_sec": 0.001, "admin_rate_limit_burst": 1}
    return {**tokens, **HIGH_RATE}


def _headers_for(case: str) -> dict[str, str]:
    return {
        "no token": {},
        "wrong token": {"X-Admin-Token": "not-a-token"},
        "read-only token": {"X-Admin-Token": TOKENS["read"]},
    }.get(case, {"X-Admin-Token": TOKENS["primary"]})


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"request_id": response.headers["x-request-id"], "error": error}


async def _call(api: AdminApi, route: Route, headers: dict[str, str]) -> httpx.Response:
    path = route.path
    if "{job_id}" in path:
        path = path.format(job_id=await api.queued_job())
    if "{id}" in path:
        path = path.format(id=await api.dead_letter())
    if "{provider}" in path:
        path = path.format(provider="notion", tenant="-")
        headers = {**REASON, **headers}
        await api.set_paused(path.endswith("/resume"))  # the state each action is allowed in
    async with api.client() as client:
        return await client.request(route.method, path, params=route.params, headers=headers)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{route.method} {route.path}")
async def test_guard_matrix(build: BuildAdmin, route: Route, case: str) -> None:
    api = await build(**_server_for(case))
    headers = {**_headers_for(case), "X-Request-ID": "matrix-1"}
    if case == "rate limited":  # the one token of the bucket goes to a first call
        first = await _call(api, route, headers)
        assert first.status_code == route.allowed, first.text
    response = await _call(api, route, headers)
    assert response.headers["x-request-id"] == "matrix-1"
    allowed = case == "admin token" or (case == "read-only token" and route.scope is Scope.READ)
    if allowed:
        assert response.status_code == route.allowed, response.text
        if route.endpoint != "events_stream":  # server-sent events, not a JSON answer
            assert response.json()["request_id"] == "matrix-1"
        assert api.count(route.endpoint, "success") == 1
    elif case == "cidr denied":
        assert_error(response, 403, "forbidden")
        assert api.count(route.endpoint, "forbidden") == 1
    elif case == "rate limited":
        assert_error(response, 429, "rate limit exceeded")
        assert int(response.headers["retry-after"]) >= 1
        assert api.count(route.endpoint, "rate_limited") == 1
    else:
        assert_error(response, 401, "unauthorized")
        assert api.count(route.endpoint, "unauthorized") == 1


async def test_every_slot_reaches_exactly_the_routes_of_its_scopes(build: BuildAdmin) -> None:
    api = await build(**{key: TOKENS[slot] for slot, key in SLOT_KEYS.items()}, **HIGH_RATE)
    for slot, token in TOKENS.items():
        for route in ROUTES:
            response = await _call(api, route, {"X-Admin-Token": token})
            if route.scope in GRANTS[slot]:
                assert response.status_code == route.allowed, (slot, route)
            else:
                assert_error(response, 401, "unauthorized")


def test_the_matrix_covers_every_route_with_the_scope_it_declares() -> None:
    assert route_scopes(router.routes) == {
        (route.method.lower(), route.path): route.scope for route in ROUTES
    }


async def test_guards_run_in_the_reference_order(build: BuildAdmin) -> None:
    """CIDR allowlist → client certificate → rate limit (per IP) → token: a refusal by one
    guard charges nothing to the ones after it."""
    api = await build(
        admin_token=TOKENS["primary"],
        admin_allowed_cidrs=["10.0.0.0/8"],
        admin_mtls_required=True,
        trusted_proxies=["10.0.0.0/8"],
        admin_rate_limit_per_sec=0.001,
        admin_rate_limit_burst=1,
    )
    admin = {"X-Admin-Token": TOKENS["primary"]}
    cert = {"X-Forwarded-Client-Cert": "Hash=abc;Subject=CN=ops"}
    async with api.client("192.0.2.1") as outside, api.client("10.0.0.1") as inside:
        for _ in range(2):  # refused before the rate limit: burst 1 is never charged
            assert_error(await outside.get("/admin/dlq", headers=admin), 403, "forbidden")
            message = "mTLS client certificate required"
            assert_error(await inside.get("/admin/dlq", headers=admin), 403, message)
        wrong = {**cert, "X-Admin-Token": "wrong"}
        assert_error(await inside.get("/admin/dlq", headers=wrong), 401, "unauthorized")
        # The IP's bucket was charged by the refused token: limited before authentication.
        limited = await inside.get("/admin/dlq", headers={**cert, **admin})
        assert_error(limited, 429, "rate limit exceeded")


async def test_unrouted_requests_are_answered_and_audited_as_json(build: BuildAdmin) -> None:
    api = await build(admin_token=TOKENS["primary"], **HIGH_RATE)
    admin = {"X-Admin-Token": TOKENS["primary"], "X-Request-ID": "put-1"}
    async with api.client() as client:
        response = await client.put("/admin/replay-dlq", headers=admin)
        assert_error(response, 405, "method not allowed")
        assert response.headers["x-request-id"] == "put-1"
        assert response.headers["allow"] == "GET, POST"  # both routes of the path
        response = await client.patch("/admin/replay-dlq/some-job", headers=admin)
        assert response.headers["allow"] == "DELETE, GET"
        assert_error(await client.get("/admin/nothing", headers=admin), 404, "not found")
    assert api.count("unknown", "bad_request") == 2
    assert api.count("unknown", "not_found") == 1


async def test_stored_events_are_searched_with_the_parsed_filters(build: BuildAdmin) -> None:
    api = await build(admin_token=TOKENS["primary"], **HIGH_RATE)
    async with api.client() as client:
        response = await client.get(
            "/admin/events",
            params={"provider": " acme ", "limit": "5", "since": "2026-11-28T10:00:00Z"},
            headers={"X-Admin-Token": TOKENS["primary"]},
        )
    assert response.status_code == 200, response.text
    assert response.json()["events"] == [{"id": "evt_1", "provider": "acme"}]
    [(filters, limit, cursor)] = api.events.searches
    assert (filters.provider, limit, cursor) == ("acme", 5, None)
    assert filters.since is not None and filters.since.isoformat() == "2026-11-28T10:00:00+00:00"


async def test_one_dead_letter_by_sequence_or_id_with_its_request(build: BuildAdmin) -> None:
    api = await build(admin_token=TOKENS["primary"], **HIGH_RATE)
    meta = {"method": "POST", "path": "/webhooks/acme", "remote_addr": "192.0.2.7",
            "headers": {"content-type": "application/json", "x-signature": "abc"}}  # fmt: skip
    sequence = await api.dead_letter(
        stage="normalize", tenant_id="t1", request_id="req-7", reason="bad json",
        original_payload=b'{"id": "\xc3\xa9"', request_meta=meta,
    )  # fmt: skip
    binary = await api.dead_letter(stage="publish", original_payload=b"\xff\x00")
    admin = {"X-Admin-Token": TOKENS["primary"]}
    async with api.client() as client:
        by_sequence = await client.get(f"/admin/dlq/{sequence}", headers=admin)
        record = by_sequence.json()["record"]
        by_id = await client.get(f"/admin/dlq/{record['id']}", headers=admin)
        raw = (await client.get(f"/admin/dlq/{binary}", headers=admin)).json()["record"]
        missing = await client.get("/admin/dlq/999999", headers=admin)
        zero = await client.get("/admin/dlq/0", headers=admin)
        huge = await client.get(f"/admin/dlq/{2**70}", headers=admin)
        unknown_id = await client.get("/admin/dlq/dlq_0000", headers=admin)
    assert by_sequence.status_code == 200, by_sequence.text
    assert {k: record[k] for k in ("sequence", "stage", "provider", "tenant_id", "request_id",
                                   "reason", "replayable", "request_meta")} == {
        "sequence": sequence, "stage": "normalize", "provider": "acme", "tenant_id": "t1",
        "request_id": "req-7", "reason": "bad json", "replayable": True, "request_meta": meta,
    }  # fmt: skip
    assert record["original_payload_text"] == '{"id": "é"'
    assert record["occurred_at"].endswith("Z")
    assert by_id.json()["record"] == record
    assert "original_payload_text" not in raw and raw["original_payload"] == "/wA="
    for absent in (missing, zero, huge):
        assert_error(absent, 404, "dead-letter record not found")
    assert_error(unknown_id, 404, "dead-letter record not found")
    models.DeadLetterDetailResponse.model_validate(by_sequence.json())


async def test_poller_controls_answer_by_the_targets_state(build: BuildAdmin) -> None:
    api = await build(admin_token=TOKENS["primary"], **HIGH_RATE)
    admin = {"X-Admin-Token": TOKENS["primary"]}
    why = {**admin, **REASON}
    base = "/admin/pollers/notion/-"
    async with api.client() as client:
        no_reason = await client.post(f"{base}/pause", headers=admin)
        short = await client.post(f"{base}/pause", headers={**admin, "X-Admin-Reason": "x"})
        unknown = await client.post("/admin/pollers/notion/t9/pause", headers=why)
        not_paused = await client.post(f"{base}/resume", headers=why)
        paused = await client.post(f"{base}/pause", headers=why)
        again = await client.post(f"{base}/pause", headers=why)
        run_paused = await client.post(f"{base}/run", headers=why)
        status = (await client.get("/admin/poller-status", headers=admin)).json()
        resumed = await client.post(f"{base}/resume", headers=why)
        run = await client.post("/admin/pollers/NOTION/-/run", headers=why)
        reset = await client.post(f"{base}/reset", headers=why)
    assert_error(no_reason, 400, "X-Admin-Reason header is required")
    assert_error(short, 400, "X-Admin-Reason must be at least 12 characters")
    assert_error(unknown, 404, "no poll target notion/t9 here")
    assert_error(not_paused, 409, "poller is not paused")
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert (body["action"], body["result"]) == ("pause", {"cycle_running": False})
    assert {k: body["poller"][k] for k in ("paused", "paused_by", "pause_reason")} == {
        "paused": True, "paused_by": "primary", "pause_reason": REASON["X-Admin-Reason"],
    }  # fmt: skip
    models.PollerControlResponse.model_validate(body)
    assert_error(again, 409, "poller is already paused (by primary)")
    assert_error(run_paused, 409, "poller is paused: resume it first")
    assert status["pollers"][0]["paused"] is True and "paused_since" in status["pollers"][0]
    assert resumed.status_code == 200 and resumed.json()["poller"]["paused"] is False
    assert run.status_code == 202, run.text
    assert run.json()["result"] == {"scheduled": True, "after_running_cycle": False}
    assert reset.json()["result"] == {"checkpoints_removed": 0}
    assert api.count("poller_pause", "conflict") == 1
    assert api.count("poller_resume", "success") == 1


async def test_metrics_history_answers_the_sampled_points(build: BuildAdmin) -> None:
    """Two samples of the service's own metrics: the second has rates (per second over the
    interval), the first none; gauges and the DLQ depth as they are."""
    api = await build(admin_token=TOKENS["primary"], **HIGH_RATE)
    history = api.service.history
    assert history is not None
    await history.sample()
    api.metrics.webhooks_received.labels("acme", "202").inc(30)
    api.metrics.webhooks_received.labels("acme", "401").inc(10)
    await history.sample()
    async with api.client() as client:
        reply = await client.get(
            "/admin/metrics/history", headers={"X-Admin-Token": TOKENS["primary"]}
        )
    assert reply.status_code == 200, reply.text
    first, second = reply.json()["points"]
    assert "webhooks_per_s" not in first and second["webhooks_per_s"] > 0  # no rate at first
    assert second["webhooks_2xx_per_s"] == pytest.approx(3 * second["webhooks_4xx_per_s"], 1e-3)
    depth = await api.service.app.state.admin.dead_letters.depth()  # the test stream's, now
    assert first["dlq_depth"] == second["dlq_depth"] == depth
    assert reply.json()["resolution_seconds"] == 10.0
