"""A signed generic webhook over HTTP, read back from JetStream (real nats-server)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats

from tests.integration.conftest import StartApp
from tests.support.app import RunningApp
from tests.support.cloudevent import parse_cloudevent
from tests.support.configs import make_config
from tests.support.jetstream import dlq_payload, stored_messages
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers

SECRET = "super-secret"
BODY = b'{"id":"invoice_42","timestamp":"2026-03-03T14:22:00Z","amount":1200}'
ACME = {"acme": {"secret": SECRET, "tenant_id": "tenant-42"}}


async def test_accepted_webhook_is_stored_once_as_a_cloudevent(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=ACME)
    headers = generic_headers(SECRET, BODY, "invoice.paid", "evt_123")
    headers["X-Request-ID"] = "req-ingress-1"
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.post("/webhooks/acme", content=BODY, headers=headers)

    assert response.status_code == 202
    assert response.headers["x-request-id"] == "req-ingress-1"
    assert response.json() == {
        "id": "evt_123",
        "request_id": "req-ingress-1",
        "status": "accepted",
        "subject": "ensemble.tap.acme.invoice.paid",
        "type": "ensemble.tap.acme.invoice.paid",
    }
    [stored] = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert stored.subject == "ensemble.tap.acme.invoice.paid"
    assert stored.headers["Nats-Msg-Id"] == "acme:tenant-42:evt_123"
    assert stored.headers["X-Request-ID"] == "req-ingress-1"
    event = parse_cloudevent(stored.data)
    assert event.get_specversion() == "1.0"
    assert event.get_id() == "evt_123"
    assert event.get_source() == "tap/acme/tenant-42"
    assert event.get_type() == "ensemble.tap.acme.invoice.paid"
    assert event.get_subject() == "invoice/invoice_42"
    sent_at = event.get_time()
    assert sent_at is not None
    assert sent_at.isoformat() == "2026-03-03T14:22:00+00:00"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("taprequestid") == "req-ingress-1"
    assert event.get_extension("tapversion") == "v1"
    assert event.get_data() == {
        "provider": "acme",
        "entity_type": "invoice",
        "entity_id": "invoice_42",
        "action": "paid",
        "snapshot": {"amount": 1200, "id": "invoice_42", "timestamp": "2026-03-03T14:22:00Z"},
        "provider_event_id": "evt_123",
        "provider_timestamp": "2026-03-03T14:22:00Z",
        "tenant_id": "tenant-42",
        "request_id": "req-ingress-1",
    }
    assert app.metric("tap_webhooks_received_total", provider="acme", status="accepted") == 1
    assert (
        app.metric(
            "tap_events_published_total", provider="acme", entity_type="invoice", action="paid"
        )
        == 1
    )


async def test_redelivery_is_stored_once(start_app: StartApp, private_nats: NatsServer) -> None:
    app = start_app(providers=ACME)
    headers = generic_headers(SECRET, BODY, "invoice.paid", "evt_dup")
    async with httpx.AsyncClient(base_url=app.url) as client:
        first = await client.post("/webhooks/acme", content=BODY, headers=headers)
        second = await client.post("/webhooks/acme", content=BODY, headers=headers)

    assert (first.status_code, second.status_code) == (202, 202)
    assert len(await stored_messages(private_nats.url, "ENSEMBLE_TAP")) == 1
    assert app.metric("tap_events_dedup_hits_total", provider="acme") == 1


async def test_delivery_without_id_deduplicates_on_its_content(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=ACME)
    other = b'{"id":"invoice_43","amount":1}'
    async with httpx.AsyncClient(base_url=app.url) as client:
        for body in (BODY, BODY, other):
            headers = generic_headers(SECRET, body, "invoice.paid")
            assert (await client.post("/webhooks/acme", content=body, headers=headers)).is_success

    stored = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert len(stored) == 2
    assert all(m.headers["Nats-Msg-Id"].startswith("acme:tenant-42:") for m in stored)


async def test_same_event_id_from_two_providers_is_two_events(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers={"acme": {"secret": SECRET}, "globex": {"secret": SECRET}})
    headers = generic_headers(SECRET, BODY, "invoice.paid", "evt_1")
    async with httpx.AsyncClient(base_url=app.url) as client:
        for provider in ("acme", "globex"):
            response = await client.post(f"/webhooks/{provider}", content=BODY, headers=headers)
            assert response.status_code == 202

    stored = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert sorted(m.headers["Nats-Msg-Id"] for m in stored) == ["acme::evt_1", "globex::evt_1"]


async def test_tenant_path_uses_the_tenant_secret_and_scoped_subject(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(
        providers={
            "acme": {"secret": SECRET, "tenants": {"tenant-a": {"secret": "tenant-secret"}}}
        },
        nats={"tenant_scoped_subjects": True, "subject_prefix": "custom.tap"},
    )
    body = b'{"id":"tenant_evt_1","timestamp":"2026-03-03T14:22:00Z"}'
    # Vector of the reference's tests: this signature is made with the tenant secret.
    signature = "sha256=0ad61321bd7449255e6580e8be2a07052d1dac9de0ec09aaa583a2098e7eed30"
    headers = {"X-Signature": signature, "X-Event-Type": "deal.updated", "X-Event-Id": "evt_t"}
    async with httpx.AsyncClient(base_url=app.url) as client:
        accepted = await client.post("/webhooks/acme/tenant-a", content=body, headers=headers)
        base_secret = await client.post(
            "/webhooks/acme/tenant-a",
            content=body,
            headers=generic_headers(SECRET, body, "deal.updated", "evt_t2"),
        )
        unknown = await client.post(
            "/webhooks/acme/tenant-b",
            content=body,
            headers=generic_headers(SECRET, body, "deal.updated", "evt_t3"),
        )
        via_header = await client.post(
            "/webhooks/acme", content=body, headers={**headers, "X-Tap-Tenant": "tenant-a"}
        )
        no_tenant = await client.post(
            "/webhooks/acme",
            content=body,
            headers=generic_headers(SECRET, body, "deal.updated", "evt_t4"),
        )

    assert accepted.status_code == 202
    assert accepted.json()["subject"] == "custom.tap.tenant_a.acme.deal.updated"
    assert base_secret.status_code == 401
    assert unknown.status_code == 404
    assert unknown.headers["x-request-id"]
    assert via_header.status_code == 202
    assert no_tenant.status_code == 202
    stored = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert [m.headers["Nats-Msg-Id"] for m in stored] == ["acme:tenant-a:evt_t", "acme::evt_t4"]
    assert stored[1].subject == "custom.tap.acme.deal.updated"


async def test_bad_signature_is_401_and_dead_lettered_without_its_body(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=ACME)
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.post(
            "/webhooks/acme",
            content=BODY,
            headers={"X-Signature": "sha256=deadbeef", "X-Request-ID": "req-bad"},
        )

    assert response.status_code == 401
    assert response.text == "signature verification failed\n"
    assert response.headers["x-request-id"] == "req-bad"
    assert await stored_messages(private_nats.url, "ENSEMBLE_TAP") == []
    [record] = [m.json() for m in await stored_messages(private_nats.url, "ENSEMBLE_TAP_DLQ")]
    assert record["stage"] == "verify"
    assert record["provider"] == "acme"
    assert record["request_id"] == "req-bad"
    assert record["reason"] == "verify acme webhook: signature mismatch"
    assert record["original_subject"] == "/webhooks/acme"
    assert "original_payload" not in record
    assert len(record["payload_sha256"]) == 64
    assert record["request_meta"]["method"] == "POST"
    assert record["id"].startswith("dlq_")
    assert app.metric("tap_webhooks_verification_failures_total", provider="acme") == 1
    assert app.metric("tap_webhooks_received_total", provider="acme", status="rejected") == 1


async def test_authenticated_non_json_body_is_400_and_kept_in_the_dlq(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=ACME)
    body = b"<xml>not json</xml>"
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.post(
            "/webhooks/acme", content=body, headers=generic_headers(SECRET, body, "a.b", "e1")
        )

    assert response.status_code == 400
    [record] = [m.json() for m in await stored_messages(private_nats.url, "ENSEMBLE_TAP_DLQ")]
    assert record["stage"] == "normalize"
    assert dlq_payload(record) == body
    assert record["request_meta"]["headers"]["x-event-type"] == "a.b"


async def test_publish_rejected_by_the_stream_is_500_and_dead_lettered(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(
        providers={"acme": {"secret": SECRET, "tenants": {"tenant-a": {"secret": SECRET}}}},
        nats={"stream_max_msg_size": 200, "tenant_scoped_subjects": True},
    )
    headers = generic_headers(SECRET, BODY, "deal.updated", "evt_1")
    headers["X-Correlation-ID"] = "corr-ingress-1"
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.post("/webhooks/acme/tenant-a", content=BODY, headers=headers)

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "corr-ingress-1"
    [record] = [m.json() for m in await stored_messages(private_nats.url, "ENSEMBLE_TAP_DLQ")]
    assert record["stage"] == "publish"
    assert record["original_subject"] == "ensemble.tap.tenant_a.acme.deal.updated"
    assert record["original_dedup_id"] == "acme:tenant-a:evt_1"
    assert record["request_id"] == "corr-ingress-1"
    assert json.loads(dlq_payload(record))["id"] == "evt_1"
    assert app.metric("tap_events_publish_failures_total", provider="acme") == 1
    assert app.metric("tap_webhooks_received_total", provider="acme", status="error") == 1


async def test_refused_publish_that_cannot_be_dead_lettered_is_503_not_500(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    """500 promises "it is in the dead-letter stream"; when that write fails too, the only
    copy is the sender's, so it is told to retry."""
    app = start_app(providers=ACME, nats={"stream_max_msg_size": 200})
    nc = await nats.connect(private_nats.url)
    try:
        await nc.jetstream().delete_stream("ENSEMBLE_TAP_DLQ")
    finally:
        await nc.close()
    headers = generic_headers(SECRET, BODY, "deal.updated", "evt_nowhere")
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        response = await client.post("/webhooks/acme", content=BODY, headers=headers)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert app.metric("tap_dlq_write_failures_total", stage="publish") == 1
    assert app.metric("tap_webhooks_received_total", provider="acme", status="error") == 1


async def test_broker_down_is_503_with_retry_after_and_nothing_stored(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=ACME, nats={"publish_timeout": "1s", "reconnect_wait": "100ms"})
    private_nats.stop()
    headers = generic_headers(SECRET, BODY, "invoice.paid", "evt_down")
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        response = await client.post("/webhooks/acme", content=BODY, headers=headers)
        ready = await client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    # The dead-letter stream is on the same unreachable broker: no write was tried (it
    # would only have delayed the 503 past the publish budget).
    assert app.metric("tap_dlq_write_failures_total", stage="publish") == 0
    private_nats.start()
    assert await stored_messages(private_nats.url, "ENSEMBLE_TAP") == []


async def test_oversized_body_is_413(start_app: StartApp) -> None:
    app = start_app(providers=ACME, server={"max_body_size": 64})
    body = b'{"id":"' + b"x" * 100 + b'"}'
    async with httpx.AsyncClient(base_url=app.url) as client:
        declared = await client.post(
            "/webhooks/acme", content=body, headers=generic_headers(SECRET, body, "a.b")
        )

        async def chunks() -> AsyncIterator[bytes]:
            yield body[:50]
            yield body[50:]

        streamed = await client.post(
            "/webhooks/acme", content=chunks(), headers=generic_headers(SECRET, body, "a.b")
        )
        at_limit = b'{"id":"' + b"y" * 55 + b'"}'
        exact = await client.post(
            "/webhooks/acme", content=at_limit, headers=generic_headers(SECRET, at_limit, "a.b")
        )

    assert len(at_limit) == 64
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert exact.status_code == 202


async def test_routing_answers(start_app: StartApp) -> None:
    app = start_app(
        providers={**ACME, "notion": {"mode": "poll", "secret": "api-token"}},
    )
    async with httpx.AsyncClient(base_url=app.url) as client:
        unknown = await client.post("/webhooks/nope", content=b"{}")
        poll_only = await client.post("/webhooks/notion", content=b"{}")
        blank = await client.post("/webhooks/%20", content=b"{}")
        too_deep = await client.post("/webhooks/a/b/c", content=b"{}")
        trailing = await client.post("/webhooks/acme/", content=b"{}")
        wrong_method = await client.get("/webhooks/acme")
        bad_tenant = await client.post("/webhooks/acme/bad%20tenant", content=b"{}")

    assert (unknown.status_code, unknown.text) == (404, "provider not configured\n")
    assert unknown.headers["x-request-id"].startswith("ing-")
    assert unknown.headers["x-content-type-options"] == "nosniff"
    assert poll_only.status_code == 404
    assert (blank.status_code, blank.text) == (400, "provider missing\n")
    assert (too_deep.status_code, too_deep.text) == (404, "404 page not found\n")
    assert "x-request-id" not in too_deep.headers
    assert trailing.status_code == 404
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert bad_tenant.status_code == 400


async def test_request_ids_are_taken_only_when_safe(start_app: StartApp) -> None:
    app = start_app(providers=ACME)
    async with httpx.AsyncClient(base_url=app.url) as client:
        kept = await client.post("/webhooks/nope", headers={"X-Request-ID": "abc-123"})
        long = await client.post("/webhooks/nope", headers={"X-Request-ID": "a" * 129})
        unsafe = await client.post("/webhooks/nope", headers={"X-Request-ID": "a b<script>"})
        generated = {
            (await client.post("/webhooks/nope")).headers["x-request-id"] for _ in range(20)
        }

    assert kept.headers["x-request-id"] == "abc-123"
    assert long.headers["x-request-id"].startswith("ing-")
    assert unsafe.headers["x-request-id"].startswith("ing-")
    assert len(generated) == 20


async def test_health_and_metrics_endpoints(start_app: StartApp) -> None:
    app = start_app(providers=ACME)
    async with httpx.AsyncClient(base_url=app.url) as client:
        livez = await client.get("/livez")
        readyz = await client.get("/readyz")
        metrics = await client.get("/metrics")

    assert livez.json() == {"status": "ok"}
    assert readyz.status_code == 200
    assert readyz.json()["status"] == "ready"
    assert "tap_nats_connected 1.0" in metrics.text
    assert "tap_nats_publish_retry_delay_seconds_bucket" in metrics.text


def test_a_body_that_does_not_arrive_in_time_gets_408(start_app: StartApp) -> None:
    app = start_app(providers={"acme": {"secret": "s"}}, server={"read_timeout": "300ms"})
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as conn:
        conn.sendall(
            b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 50\r\n\r\n{"id":'  # then nothing more
        )
        started = time.monotonic()
        answer = conn.recv(4096)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"request body not received in time" in answer
    assert 0.25 < waited < 5
    assert app.metric("tap_webhooks_received_total", provider="acme", status="rejected") == 1
    # Reads that complete in time are unaffected, before and after a timeout.
    body = b'{"id":"deal_1"}'
    headers = generic_headers("s", body, "deal.updated", "evt_after_408")
    assert httpx.post(f"{app.url}/webhooks/acme", content=body, headers=headers).status_code == 202


async def test_event_larger_than_the_brokers_max_payload_is_413_and_the_connection_survives(
    tmp_path: Path,
) -> None:
    """Headers count towards max_payload: a message past it would make nats-server close
    the connection (every other request would then get 503). It is refused before sending:
    413 (a retry cannot help) and a dead letter with the digest instead of the payload."""
    server = NatsServer(tmp_path / "nats", max_payload=4096).start()
    app = RunningApp(make_config(server.url, str(tmp_path / "data"), providers=ACME)).start()
    big = b'{"id":"invoice_big","pad":"' + b"p" * 3700 + b'"}'  # fits alone, not enveloped
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            refused = await client.post(
                "/webhooks/acme", content=big, headers=generic_headers(SECRET, big, "a.b", "e1")
            )
            accepted = await client.post(
                "/webhooks/acme", content=BODY, headers=generic_headers(SECRET, BODY, "a.b", "e2")
            )
        assert refused.status_code == 413
        assert accepted.status_code == 202
        assert app.metric("tap_nats_connected") == 1
        [record] = [m.json() for m in await stored_messages(server.url, "ENSEMBLE_TAP_DLQ")]
        assert record["stage"] == "publish"
        assert "max_payload of 4096 bytes" in record["reason"]
        assert "original_payload" not in record
        assert len(record["payload_sha256"]) == 64
        assert record["request_meta"]["headers"]["x-event-id"] == "e1"
    finally:
        app.stop()
        server.stop()
