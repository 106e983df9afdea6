"""Every answer of the webhook route, in process: the real ``WebhookIngress`` ASGI app, the
real providers and dead-letter writer, over ``httpx.ASGITransport``, publishing to a
``RecordingPublisher`` that can be told to fail (tests/support/publisher.py). No server runs;
what needs one (HTTP parsing, a real broker's refusals) stays in tests/integration/."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ensemble_tap.asgi_types import Message, Scope
from ensemble_tap.bus.contract import Failure
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.ingress import WebhookIngress
from ensemble_tap.observability import Metrics
from ensemble_tap.providers import Extraction, WebhookRequest
from ensemble_tap.spool import SpoolLog
from tests.support.configs import make_config
from tests.support.publisher import RecordingPublisher
from tests.support.signing import generic_headers, hex_hmac, hubspot_v3

SECRET = "route-secret"
BODY = b'{"id":"invoice_42","timestamp":"2026-03-03T14:22:00Z","amount":1200}'
ACME = {"acme": {"secret": SECRET, "tenant_id": "tenant-42"}}
HUBSPOT_SECRET = "hubspot-secret"


@dataclass
class Route:
    """The webhook route of one config, and what it published."""

    ingress: WebhookIngress
    client: httpx.AsyncClient
    publisher: RecordingPublisher
    metrics: Metrics

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(path, content=body, headers=headers or {})

    async def deliver(
        self, body: bytes = BODY, event_id: str = "evt_1", path: str = "/webhooks/acme"
    ) -> httpx.Response:
        """A delivery signed with ACME's secret."""
        return await self.post(path, body, generic_headers(SECRET, body, "invoice.paid", event_id))

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


OpenRoute = Callable[..., Awaitable[Route]]


@pytest.fixture
async def open_route(tmp_path: Path) -> AsyncIterator[OpenRoute]:
    """``await open_route(providers=..., server=..., spool=SpoolLog | None)``."""
    opened: list[tuple[Route, SpoolLog | None]] = []

    async def open_(spool: SpoolLog | None = None, **sections: Any) -> Route:
        sections.setdefault("providers", ACME)
        config = make_config(None, str(tmp_path / "data"), **sections)
        metrics = Metrics()
        publisher = RecordingPublisher()
        if spool is not None:
            await spool.open()
        ingress = WebhookIngress(
            config, publisher, DeadLetterWriter(publisher, metrics), metrics, spool
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ingress, client=("203.0.113.7", 4711)),
            base_url="http://tap.example.com",
        )
        route = Route(ingress, client, publisher, metrics)
        opened.append((route, spool))
        return route

    yield open_
    for route, spool in opened:
        await route.client.aclose()
        route.ingress.close()
        if spool is not None:
            await spool.close()


# -- 202 -------------------------------------------------------------------------------------


async def test_an_accepted_delivery_is_published_once_and_answered_202(
    open_route: OpenRoute,
) -> None:
    route = await open_route()
    headers = generic_headers(SECRET, BODY, "invoice.paid", "evt_123")
    response = await route.post("/webhooks/acme", BODY, {**headers, "X-Request-ID": "req-1"})

    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "req-1"
    assert response.json() == {
        "id": "evt_123",
        "request_id": "req-1",
        "status": "accepted",
        "subject": "ensemble.tap.acme.invoice.paid",
        "type": "ensemble.tap.acme.invoice.paid",
    }
    [event] = route.publisher.stored
    assert (event.subject, event.msg_id, event.request_id) == (
        "ensemble.tap.acme.invoice.paid",
        "acme:tenant-42:evt_123",
        "req-1",
    )
    assert event.json()["data"]["entity_id"] == "invoice_42"
    assert route.metric("tap_webhooks_received_total", provider="acme", status="accepted") == 1
    labels = {"provider": "acme", "entity_type": "invoice", "action": "paid"}
    assert route.metric("tap_events_published_total", **labels) == 1


async def test_a_redelivery_is_a_dedup_hit(open_route: OpenRoute) -> None:
    route = await open_route()
    first = await route.deliver(event_id="evt_dup")
    second = await route.deliver(event_id="evt_dup")

    assert (first.status_code, second.status_code) == (202, 202)
    assert len(route.publisher.stored) == 1
    assert route.metric("tap_events_dedup_hits_total", provider="acme") == 1


async def test_with_the_connection_down_an_event_is_spooled_at_once(
    open_route: OpenRoute, tmp_path: Path
) -> None:
    spool = SpoolLog(tmp_path / "spool", max_bytes=1 << 20)
    route = await open_route(spool=spool)
    route.publisher.down()
    response = await route.deliver(event_id="evt_spooled")

    assert response.status_code == 202
    assert response.json()["status"] == "spooled"
    assert route.publisher.attempts == []  # not even tried: no wait for the publish budget
    [record] = await spool.read_batch(10)
    assert (record.subject, record.msg_id) == (
        "ensemble.tap.acme.invoice.paid",
        "acme:tenant-42:evt_spooled",
    )
    assert json.loads(record.payload)["id"] == "evt_spooled"


async def test_an_event_the_broker_does_not_answer_for_is_spooled(
    open_route: OpenRoute, tmp_path: Path
) -> None:
    """Connected, but no ack within the budget: spooled after the failed publish."""
    spool = SpoolLog(tmp_path / "spool", max_bytes=1 << 20)
    route = await open_route(spool=spool)
    route.publisher.fail(Failure.UNAVAILABLE)
    response = await route.deliver(event_id="evt_late")

    assert response.status_code == 202
    assert response.json()["status"] == "spooled"
    assert len(route.publisher.attempts) == 1
    assert spool.depth_events == 1
    assert route.metric("tap_events_publish_failures_total", provider="acme") == 1


@pytest.mark.parametrize("connected", [True, False])
async def test_an_event_the_spool_cannot_take_is_503(
    open_route: OpenRoute, tmp_path: Path, connected: bool
) -> None:
    spool = SpoolLog(tmp_path / "spool", max_bytes=64)  # smaller than any record
    route = await open_route(spool=spool)
    route.publisher.fail(Failure.UNAVAILABLE)
    route.publisher.connected = connected
    response = await route.deliver()

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert spool.depth_events == 0
    assert route.publisher.dead_letters() == []


# -- 400 -------------------------------------------------------------------------------------


async def test_an_authenticated_body_that_is_not_json_is_400_and_kept_in_the_dlq(
    open_route: OpenRoute,
) -> None:
    route = await open_route()
    body = b"<xml>not json</xml>"
    response = await route.deliver(body)

    assert (response.status_code, response.text) == (
        400,
        "invalid payload: body is not valid JSON\n",
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    [record] = route.publisher.dead_letters()
    assert (record["stage"], record["provider"], record["tenant_id"]) == (
        "normalize",
        "acme",
        "tenant-42",
    )
    assert base64.b64decode(record["original_payload"]) == body
    assert record["original_subject"] == "/webhooks/acme"
    assert record["request_meta"]["remote_addr"] == "203.0.113.7"
    assert record["request_meta"]["headers"]["x-event-type"] == "invoice.paid"
    assert route.publisher.events() == []
    assert route.metric("tap_webhooks_received_total", provider="acme", status="rejected") == 1


@pytest.mark.parametrize(
    ("body", "event_type", "text"),
    [
        (b"[" * 300 + b"]" * 300, "a.b", "invalid payload: JSON nested deeper than 252 levels"),
        (
            b'{"id":"' + b"x" * 257 + b'"}',
            "a.b",
            "invalid payload: entity_id is longer than 256 characters",
        ),
        (
            b'{"id":"1"}',
            "t" * 257,
            "invalid payload: X-Event-Type is longer than 256 characters",
        ),
    ],
    ids=["nesting", "entity-id-too-long", "event-type-too-long"],
)
async def test_what_a_sender_controls_past_its_bound_is_400_and_dead_lettered(
    open_route: OpenRoute, body: bytes, event_type: str, text: str
) -> None:
    route = await open_route()
    response = await route.post("/webhooks/acme", body, generic_headers(SECRET, body, event_type))

    assert (response.status_code, response.text) == (400, text + "\n")
    [record] = route.publisher.dead_letters()
    assert record["stage"] == "normalize"
    assert record["reason"] == text.removeprefix("invalid payload: ")
    assert route.publisher.events() == []


async def test_a_body_a_provider_rejects_while_verifying_is_400(open_route: OpenRoute) -> None:
    """Linear's replay window is in the body, so its JSON is parsed by ``verify``."""
    route = await open_route(providers={"linear": {"secret": "linear-secret"}})
    body = b"{not json"
    headers = {"Linear-Signature": hex_hmac("linear-secret", body)}
    response = await route.post("/webhooks/linear", body, headers)

    assert (response.status_code, response.text) == (
        400,
        "invalid payload: body is not valid JSON\n",
    )
    [record] = route.publisher.dead_letters()
    assert record["stage"] == "normalize"


async def test_routing_and_tenant_answers(open_route: OpenRoute) -> None:
    route = await open_route(
        providers={
            "acme": {"tenants": {"tenant-a": {"secret": SECRET}, "tenant-b": {}}},
            "notion": {"mode": "poll", "secret": "api-token"},
        }
    )
    blank = await route.post("/webhooks/%20", b"{}")
    invalid_tenant = await route.post("/webhooks/acme/bad%20tenant", b"{}")
    too_long_tenant = await route.post("/webhooks/acme", b"{}", {"X-Tap-Tenant": "t" * 129})
    tenant_required = await route.post("/webhooks/acme", b"{}")
    unknown = await route.post("/webhooks/nope", b"{}")
    poll_only = await route.post("/webhooks/notion", b"{}")
    unknown_tenant = await route.post("/webhooks/acme/tenant-z", b"{}")
    too_deep = await route.post("/webhooks/a/b/c", b"{}")
    trailing = await route.post("/webhooks/acme/", b"{}")
    elsewhere = await route.post("/other/acme", b"{}")
    wrong_method = await route.client.get("/webhooks/acme")
    no_secret = await route.deliver(path="/webhooks/acme/tenant-b")

    assert (blank.status_code, blank.text) == (400, "provider missing\n")
    assert (invalid_tenant.status_code, invalid_tenant.text) == (400, "invalid tenant\n")
    assert (too_long_tenant.status_code, too_long_tenant.text) == (400, "invalid tenant\n")
    assert (tenant_required.status_code, tenant_required.text) == (
        400,
        "tenant required: add it to the path or X-Tap-Tenant\n",
    )
    assert (unknown.status_code, unknown.text) == (404, "provider not configured\n")
    assert unknown.headers["x-request-id"].startswith("ing-")
    assert poll_only.status_code == 404
    assert (unknown_tenant.status_code, unknown_tenant.text) == (404, "tenant not configured\n")
    for shape in (too_deep, trailing, elsewhere):
        assert (shape.status_code, shape.text) == (404, "404 page not found\n")
        assert "x-request-id" not in shape.headers
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert wrong_method.text == "Method Not Allowed\n"
    assert (no_secret.status_code, no_secret.text) == (500, "provider secret not configured\n")
    assert route.metric("tap_webhooks_received_total", provider="acme", status="error") == 1
    assert route.publisher.attempts == []


async def test_a_configured_tenant_uses_its_secret_and_a_scoped_subject(
    open_route: OpenRoute,
) -> None:
    route = await open_route(
        providers={"acme": {"secret": SECRET, "tenants": {"tenant-a": {"secret": "t-secret"}}}},
        nats={"tenant_scoped_subjects": True},
    )
    signed = generic_headers("t-secret", BODY, "deal.updated", "evt_t")
    by_path = await route.post("/webhooks/acme/tenant-a", BODY, signed)
    by_header = await route.post("/webhooks/acme", BODY, {**signed, "X-Tap-Tenant": "tenant-a"})
    again = await route.post("/webhooks/acme/tenant-a", BODY, signed)  # settings cached
    base_secret = await route.deliver(path="/webhooks/acme/tenant-a")

    assert [r.status_code for r in (by_path, by_header, again)] == [202, 202, 202]
    assert by_path.json()["subject"] == "ensemble.tap.tenant_a.acme.deal.updated"
    assert base_secret.status_code == 401
    assert [p.msg_id for p in route.publisher.events()] == ["acme:tenant-a:evt_t"]


async def test_a_body_that_ends_with_a_disconnect_is_400(open_route: OpenRoute) -> None:
    """The client went away mid-body (uvicorn sends ``http.disconnect``)."""
    route = await open_route()
    sent: list[Message] = []
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"id":', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await route.ingress(
        _scope("/webhooks/acme", generic_headers(SECRET, BODY, "a.b")), receive, send
    )

    assert sent[0]["status"] == 400
    assert sent[1]["body"] == b"invalid body\n"


# -- 401 -------------------------------------------------------------------------------------


async def test_a_bad_signature_is_401_and_dead_lettered_without_its_body(
    open_route: OpenRoute,
) -> None:
    route = await open_route()
    headers = {"X-Signature": "sha256=deadbeef", "X-Request-ID": "req-bad", "Cookie": "c=1"}
    response = await route.post("/webhooks/acme", BODY, headers)

    assert (response.status_code, response.text) == (401, "signature verification failed\n")
    assert response.headers["x-request-id"] == "req-bad"
    [record] = route.publisher.dead_letters()
    assert record["stage"] == "verify"
    assert record["reason"] == "verify acme webhook: signature mismatch"
    assert record["request_id"] == "req-bad"
    assert "original_payload" not in record
    assert len(record["payload_sha256"]) == 64
    assert "cookie" not in record["request_meta"]["headers"]
    assert route.publisher.events() == []
    assert route.metric("tap_webhooks_verification_failures_total", provider="acme") == 1
    assert route.metric("tap_webhooks_received_total", provider="acme", status="rejected") == 1


# -- 408 -------------------------------------------------------------------------------------


async def test_a_body_that_does_not_arrive_in_time_is_408(open_route: OpenRoute) -> None:
    """The body deadline's sweeper cancels the read (after ``server.read_timeout`` of real
    time: 100 ms here); the server tier checks the same over a socket."""
    route = await open_route(server={"read_timeout": "100ms"})
    never = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"id":'
        await never.wait()  # the rest never comes

    headers = generic_headers(SECRET, BODY, "a.b")
    response = await route.client.post("/webhooks/acme", content=trickle(), headers=headers)
    after = await route.deliver(event_id="evt_after_408")

    assert (response.status_code, response.text) == (408, "request body not received in time\n")
    assert route.metric("tap_webhooks_received_total", provider="acme", status="rejected") == 1
    assert after.status_code == 202  # reads that complete in time are unaffected


# -- 413 -------------------------------------------------------------------------------------


async def test_a_body_over_max_body_size_is_413(open_route: OpenRoute) -> None:
    route = await open_route(server={"max_body_size": 64})
    body = b'{"id":"' + b"x" * 100 + b'"}'
    headers = generic_headers(SECRET, body, "a.b")

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:50]
        yield body[50:]

    declared = await route.post("/webhooks/acme", body, headers)
    streamed = await route.client.post("/webhooks/acme", content=chunks(), headers=headers)
    at_limit = b'{"id":"' + b"y" * 55 + b'"}'
    exact = await route.post("/webhooks/acme", at_limit, generic_headers(SECRET, at_limit, "a.b"))

    assert len(at_limit) == 64
    assert (declared.status_code, declared.text) == (413, "body larger than 64 bytes\n")
    assert streamed.status_code == 413
    assert exact.status_code == 202


async def test_an_event_too_large_for_the_broker_is_413_and_dead_lettered_by_digest(
    open_route: OpenRoute,
) -> None:
    route = await open_route()
    route.publisher.fail(Failure.TOO_LARGE, subjects="ensemble.tap.")
    response = await route.deliver(event_id="e1")

    assert (response.status_code, response.text) == (
        413,
        "event larger than the event broker accepts\n",
    )
    [record] = route.publisher.dead_letters()
    assert record["stage"] == "publish"
    assert record["original_subject"] == "ensemble.tap.acme.invoice.paid"
    assert record["original_dedup_id"] == "acme:tenant-42:e1"
    assert "original_payload" not in record
    assert len(record["payload_sha256"]) == 64
    assert record["request_meta"]["headers"]["x-event-id"] == "e1"
    assert route.metric("tap_webhooks_received_total", provider="acme", status="rejected") == 1


# -- 500 / 503 -------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [Failure.PERMANENT, Failure.REFUSED])
async def test_a_refused_publish_is_500_and_dead_lettered(
    open_route: OpenRoute, failure: Failure
) -> None:
    route = await open_route()
    route.publisher.fail(failure, subjects="ensemble.tap.")
    headers = {**generic_headers(SECRET, BODY, "deal.updated", "evt_1"), "X-Correlation-ID": "c-1"}
    response = await route.post("/webhooks/acme", BODY, headers)

    assert (response.status_code, response.text) == (500, "publish failed\n")
    assert response.headers["x-request-id"] == "c-1"
    [record] = route.publisher.dead_letters()
    assert record["stage"] == "publish"
    assert record["original_subject"] == "ensemble.tap.acme.deal.updated"
    assert record["original_dedup_id"] == "acme:tenant-42:evt_1"
    assert record["request_id"] == "c-1"
    assert orjson.loads(base64.b64decode(record["original_payload"]))["id"] == "evt_1"
    [letter] = [p for p in route.publisher.stored if p.subject == "ensemble.dlq.publish.acme"]
    assert letter.msg_id == record["id"]
    assert route.metric("tap_events_publish_failures_total", provider="acme") == 1
    assert route.metric("tap_webhooks_received_total", provider="acme", status="error") == 1


async def test_a_refused_publish_that_cannot_be_dead_lettered_is_503(
    open_route: OpenRoute,
) -> None:
    """500 promises "in the dead-letter stream"; without that the sender must retry."""
    route = await open_route()
    route.publisher.fail(Failure.PERMANENT, subjects="ensemble.tap.")
    route.publisher.fail(Failure.UNAVAILABLE, subjects="ensemble.dlq.")
    response = await route.deliver()

    assert (response.status_code, response.headers["retry-after"]) == (503, "5")
    assert response.text == "event broker unavailable\n"
    assert route.metric("tap_dlq_write_failures_total", stage="publish") == 1


async def test_the_broker_unavailable_is_503_with_retry_after_and_no_dead_letter_write(
    open_route: OpenRoute,
) -> None:
    """The in-process half of the server tier's broker-down tests: the same answer, no
    dead-letter write tried against the unreachable broker."""
    route = await open_route()
    route.publisher.down()
    response = await route.deliver(event_id="evt_down")

    assert (response.status_code, response.text) == (503, "event broker unavailable\n")
    assert response.headers["retry-after"] == "5"
    assert response.headers["x-request-id"].startswith("ing-")
    assert [p.subject for p in route.publisher.attempts] == ["ensemble.tap.acme.invoice.paid"]
    assert route.publisher.stored == []
    assert route.metric("tap_events_publish_failures_total", provider="acme") == 1
    assert route.metric("tap_dlq_write_failures_total", stage="publish") == 0
    assert route.metric("tap_webhooks_received_total", provider="acme", status="error") == 1


# -- a HubSpot batch -------------------------------------------------------------------------


def _hubspot_batch(count: int) -> bytes:
    kinds = ["contact.creation", "deal.creation", "company.deletion", "ticket.creation"]
    return orjson.dumps(
        [
            {
                "eventId": 100 + i,
                "subscriptionId": 2001,
                "portalId": 62515,
                "appId": 54321,
                "occurredAt": 1709562120000 + i,
                "subscriptionType": kinds[i],
                "attemptNumber": 0,
                "objectId": 820982911946154508 + i,
            }
            for i in range(count)
        ]
    )


async def _post_hubspot(route: Route, body: bytes) -> httpx.Response:
    now_ms = time.time_ns() // 1_000_000
    url = "https://tap.example.com/webhooks/hubspot"
    headers = {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": str(now_ms),
        "X-HubSpot-Signature-v3": hubspot_v3(HUBSPOT_SECRET, "POST", url, body, now_ms),
    }
    return await route.post("/webhooks/hubspot", body, headers)


HUBSPOT = {"hubspot": {"client_secret": HUBSPOT_SECRET}}


async def test_a_batch_is_202_only_once_every_event_is_stored(open_route: OpenRoute) -> None:
    """Its events are published concurrently: all are in flight before the first ack."""
    route = await open_route(providers=HUBSPOT)
    route.publisher.hold()
    answer = asyncio.create_task(_post_hubspot(route, _hubspot_batch(3)))
    await route.publisher.wait_held(3)
    assert not answer.done() and route.publisher.stored == []
    route.publisher.release()
    response = await answer

    assert response.status_code == 202
    assert [e["subject"] for e in response.json()["events"]] == [
        "ensemble.tap.hubspot.contact.created",
        "ensemble.tap.hubspot.deal.created",
        "ensemble.tap.hubspot.company.deleted",
    ]
    assert len(route.publisher.stored) == 3


async def test_a_batch_with_one_refused_event_is_500_and_the_rest_is_stored(
    open_route: OpenRoute,
) -> None:
    route = await open_route(providers=HUBSPOT)
    route.publisher.fail(Failure.PERMANENT, subjects="ensemble.tap.hubspot.deal.")
    response = await _post_hubspot(route, _hubspot_batch(3))

    assert (response.status_code, response.text) == (500, "publish failed\n")
    assert [p.subject for p in route.publisher.events()] == [
        "ensemble.tap.hubspot.contact.created",
        "ensemble.tap.hubspot.company.deleted",
    ]
    [record] = route.publisher.dead_letters()
    assert record["original_subject"] == "ensemble.tap.hubspot.deal.created"
    # The sender's retry re-sends the whole batch: the stored events are deduplicated.
    route.publisher.restore()
    retry = await _post_hubspot(route, _hubspot_batch(3))
    assert retry.status_code == 202
    assert len(route.publisher.events()) == 3
    assert route.metric("tap_events_dedup_hits_total", provider="hubspot") == 2


async def test_a_batch_with_one_event_unavailable_is_503(open_route: OpenRoute) -> None:
    route = await open_route(providers=HUBSPOT)
    route.publisher.fail(Failure.UNAVAILABLE, subjects="ensemble.tap.hubspot.company.")
    response = await _post_hubspot(route, _hubspot_batch(3))

    assert (response.status_code, response.headers["retry-after"]) == (503, "5")
    assert len(route.publisher.events()) == 2
    assert route.publisher.dead_letters() == []


async def test_a_batch_with_one_event_too_large_is_413(open_route: OpenRoute) -> None:
    route = await open_route(providers=HUBSPOT)
    route.publisher.fail(Failure.TOO_LARGE, subjects="ensemble.tap.hubspot.deal.")
    route.publisher.fail(Failure.PERMANENT, subjects="ensemble.tap.hubspot.company.")
    response = await _post_hubspot(route, _hubspot_batch(3))

    assert response.status_code == 413
    assert {r["original_subject"] for r in route.publisher.dead_letters()} == {
        "ensemble.tap.hubspot.deal.created",
        "ensemble.tap.hubspot.company.deleted",
    }


# -- bugs: the last resorts ------------------------------------------------------------------


class _Broken:
    """A provider with a bug in ``verify`` or ``extract``."""

    def __init__(self, where: str) -> None:
        self.where = where

    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        if self.where == "verify":
            raise RuntimeError("bug in verify")

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        raise RuntimeError("bug in extract")


@pytest.mark.parametrize("where", ["verify", "extract"])
async def test_a_bug_in_a_provider_is_500_and_dead_lettered(
    open_route: OpenRoute, where: str
) -> None:
    route = await open_route()
    _break(route, "acme", handler=_Broken(where))
    response = await route.deliver()

    assert (response.status_code, response.text) == (500, "internal error\n")
    [record] = route.publisher.dead_letters()
    stage = "verify" if where == "verify" else "normalize"
    assert record["stage"] == stage
    assert record["reason"] == f"internal error: RuntimeError: bug in {where}"
    # Unauthenticated (verify): the body is kept as a digest only.
    assert ("original_payload" in record) == (stage == "normalize")
    assert route.metric("tap_webhooks_internal_errors_total", provider="acme") == 1


async def test_a_bug_that_cannot_be_dead_lettered_is_503(open_route: OpenRoute) -> None:
    route = await open_route()
    _break(route, "acme", handler=_Broken("extract"))
    route.publisher.fail(Failure.UNAVAILABLE, subjects="ensemble.dlq.")
    response = await route.deliver()

    assert (response.status_code, response.text) == (503, "internal error\n")
    assert response.headers["retry-after"] == "5"


async def test_a_bug_before_the_body_is_read_is_503(open_route: OpenRoute) -> None:
    """Nothing to dead-letter: the sender is told to retry."""
    route = await open_route()
    _break(route, "acme", settings=None)  # breaks the tenant lookup
    response = await route.deliver()

    assert (response.status_code, response.headers["retry-after"]) == (503, "5")
    assert response.text == "internal error\n"
    assert route.metric("tap_webhooks_internal_errors_total", provider="acme") == 1


# -- request ids -----------------------------------------------------------------------------


async def test_request_ids_are_taken_only_when_safe(open_route: OpenRoute) -> None:
    route = await open_route()
    kept = await route.post("/webhooks/nope", b"", {"X-Request-ID": "abc-123"})
    correlation = await route.post("/webhooks/nope", b"", {"X-Correlation-ID": "corr-9"})
    long = await route.post("/webhooks/nope", b"", {"X-Request-ID": "a" * 129})
    unsafe = await route.post("/webhooks/nope", b"", {"X-Request-ID": "a b<script>"})
    generated = {
        (await route.post("/webhooks/nope", b"")).headers["x-request-id"] for _ in range(20)
    }

    assert kept.headers["x-request-id"] == "abc-123"
    assert correlation.headers["x-request-id"] == "corr-9"
    assert long.headers["x-request-id"].startswith("ing-")
    assert unsafe.headers["x-request-id"].startswith("ing-")
    assert len(generated) == 20


def _break(route: Route, name: str, **replaced: Any) -> None:
    """Swap a route's handler or settings for a broken one (a bug to be caught)."""
    route.ingress.routes[name] = dataclasses.replace(route.ingress.routes[name], **replaced)


def _scope(path: str, headers: dict[str, str]) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("203.0.113.7", 4711),
    }
