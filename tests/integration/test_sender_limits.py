"""Nothing a sender controls makes the service answer 5xx (issue #11, defects 2 and 3).

Long delivery ids are published under a digest (and still deduplicate), over-long names, ids
and deep JSON are 400 with a ``normalize`` dead letter, and a bug in the code behind the route
is 500 with a dead letter, a log line and a metric. Real nats-server, service under uvicorn.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any, NoReturn

import httpx
import nats
import orjson
import pytest
from structlog.testing import capture_logs

from ensemble_tap import ingress
from ensemble_tap.events import MAX_ENTITY_ID_LENGTH, MAX_JSON_DEPTH, MAX_NAME_LENGTH
from ensemble_tap.providers.generic import GenericProvider
from tests.integration.conftest import StartApp
from tests.support.jetstream import dlq_payload, stored_messages
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers, hex_hmac, stripe_header

SECRET = "s3cret"
BODY = b'{"id":"invoice_42","timestamp":"2026-03-03T14:22:00Z"}'
PROVIDERS = {
    "acme": {"secret": SECRET, "tenant_id": "tenant-42"},
    "github": {"secret": SECRET},
    "stripe": {"secret": SECRET},
}
TOKEN = "admin-token-for-replay"
SERVER = {"admin_token": TOKEN, "admin_rate_limit_per_sec": 1000, "admin_rate_limit_burst": 1000}


def sha256_id(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


async def dead_letters(server: NatsServer) -> list[dict[str, Any]]:
    return [m.json() for m in await stored_messages(server.url, "ENSEMBLE_TAP_DLQ")]


def stripe_event(**fields: Any) -> tuple[bytes, dict[str, str]]:
    now = int(time.time())
    event = {"id": "evt_1", "type": "customer.created", "created": now, "data": {"object": {}}}
    body = orjson.dumps({**event, **fields})
    return body, {"Stripe-Signature": stripe_header(SECRET, body, now)}


# --- ids: digested beyond the bound ------------------------------------------------------------


async def test_a_64_kib_event_id_is_published_once_under_its_digest(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    """It used to go into ``Nats-Msg-Id`` as is: nats-server refused the 64 KiB of headers,
    the sender got 500 and every retry added a dead letter that could never be replayed."""
    app = start_app(providers=PROVIDERS)
    event_id = "evt_" + "x" * (64 * 1024)
    other_id = event_id[:-1] + "y"
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        statuses = []
        for sent in (event_id, event_id, other_id):
            headers = generic_headers(SECRET, BODY, "invoice.paid", sent)
            response = await client.post("/webhooks/acme", content=BODY, headers=headers)
            statuses.append(response.status_code)
    assert statuses == [202, 202, 202]
    assert response.json()["id"] == sha256_id(other_id)
    stored = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [
        f"acme:tenant-42:{sha256_id(event_id)}",
        f"acme:tenant-42:{sha256_id(other_id)}",
    ]
    first = stored[0].json()
    assert first["id"] == sha256_id(event_id)
    assert first["data"]["provider_event_id"] == event_id  # the sender's id, in the data
    assert app.metric("tap_events_dedup_hits_total", provider="acme") == 1
    assert await dead_letters(private_nats) == []


async def test_a_long_github_delivery_id_and_stripe_event_id_are_digested(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=PROVIDERS)
    delivery = "d" * 1000
    push = b'{"ref":"refs/heads/main","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"}'
    stripe_body, stripe_headers = stripe_event(id="evt_" + "s" * 300)
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        github = await client.post(
            "/webhooks/github",
            content=push,
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery,
                "Content-Type": "application/json",
                "X-Hub-Signature-256": "sha256=" + hex_hmac(SECRET, push),
            },
        )
        stripe = await client.post("/webhooks/stripe", content=stripe_body, headers=stripe_headers)
    assert (github.status_code, stripe.status_code) == (202, 202)
    ids = {
        m.subject: m.headers["Nats-Msg-Id"]
        for m in await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    }
    assert ids == {
        "ensemble.tap.github.push.updated": f"github::{sha256_id(delivery)}",
        "ensemble.tap.stripe.customer.created": f"stripe::{sha256_id('evt_' + 's' * 300)}",
    }


# --- what cannot be digested: 400 and a normalize dead letter ----------------------------------


async def assert_refused_and_dead_lettered(
    app_metric: Callable[..., float],
    server: NatsServer,
    response: httpx.Response,
    body: bytes,
    reason: str,
    provider: str,
) -> None:
    assert response.status_code == 400, response.text
    assert response.text == f"invalid payload: {reason}\n"
    [record] = await dead_letters(server)
    assert (record["stage"], record["provider"], record["reason"]) == (
        "normalize",
        provider,
        reason,
    )
    assert dlq_payload(record) == body
    assert record["request_id"] == response.headers["x-request-id"]
    assert await stored_messages(server.url, "ENSEMBLE_TAP") == []
    assert app_metric("tap_webhooks_received_total", provider=provider, status="rejected") == 1


async def test_a_long_stripe_event_type_is_400_and_dead_lettered(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=PROVIDERS)
    body, headers = stripe_event(type="t" * 200 + ".created")
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        response = await client.post("/webhooks/stripe", content=body, headers=headers)
    reason = f"entity_type is longer than {MAX_NAME_LENGTH} characters"
    await assert_refused_and_dead_lettered(
        app.metric, private_nats, response, body, reason, "stripe"
    )


async def test_a_long_entity_id_is_400_and_dead_lettered(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=PROVIDERS)
    body = orjson.dumps({"id": "i" * (MAX_ENTITY_ID_LENGTH + 1)})
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        response = await client.post(
            "/webhooks/acme", content=body, headers=generic_headers(SECRET, body, "deal.updated")
        )
    reason = f"entity_id is longer than {MAX_ENTITY_ID_LENGTH} characters"
    await assert_refused_and_dead_lettered(app.metric, private_nats, response, body, reason, "acme")


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, 1_000, 5_000])
async def test_deeply_nested_json_is_400_and_dead_lettered(
    start_app: StartApp, private_nats: NatsServer, levels: int
) -> None:
    """1,000 levels used to be parsed by orjson, refused by ``orjson.dumps`` and handed to
    ``json.dumps``, whose RecursionError escaped as a bare 500 with no dead letter."""
    app = start_app(providers=PROVIDERS)
    # The body object is one level: its "deep" member adds ``levels - 1``.
    inner = levels - 1
    body = b'{"id":"deep","deep":' + b'{"a":' * (inner - 1) + b"[]" + b"}" * (inner - 1) + b"}"
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        response = await client.post(
            "/webhooks/acme", content=body, headers=generic_headers(SECRET, body, "deal.updated")
        )
    if levels == MAX_JSON_DEPTH:
        assert response.status_code == 202, response.text
        [stored] = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
        assert orjson.loads(stored.data)["data"]["snapshot"]["id"] == "deep"
        return
    reason = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    await assert_refused_and_dead_lettered(app.metric, private_nats, response, body, reason, "acme")


async def test_a_time_rfc3339_cannot_express_is_400_not_500(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    """The reference answers "500 normalization failed"; the time came from the sender."""
    app = start_app(providers=PROVIDERS)
    body = b'{"id":"1","timestamp":"0001-01-01T00:00:00+01:00"}'
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        response = await client.post(
            "/webhooks/acme", content=body, headers=generic_headers(SECRET, body, "deal.updated")
        )
    assert response.status_code == 400
    assert response.text.startswith("invalid payload: provider time cannot be expressed")
    [record] = await dead_letters(private_nats)
    assert record["stage"] == "normalize"


# --- a bug: the last resort -------------------------------------------------------------------


def broken(*_: Any) -> NoReturn:
    raise RuntimeError("a bug in the provider module")


async def test_a_bug_in_extract_is_500_dead_lettered_logged_counted_and_replayable(
    start_app: StartApp, private_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = start_app(providers=PROVIDERS, server=SERVER)
    monkeypatch.setattr(GenericProvider, "extract", broken)
    headers = {**generic_headers(SECRET, BODY, "invoice.paid", "evt_bug"), "X-Request-ID": "req-1"}
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        with capture_logs() as logs:
            response = await client.post("/webhooks/acme", content=BODY, headers=headers)

        assert (response.status_code, response.text) == (500, "internal error\n")
        assert response.headers["x-request-id"] == "req-1"
        [record] = await dead_letters(private_nats)
        assert record["stage"] == "normalize"
        assert record["reason"] == "internal error: RuntimeError: a bug in the provider module"
        assert record["request_id"] == "req-1"
        assert dlq_payload(record) == BODY
        [line] = [entry for entry in logs if entry["event"] == "webhook internal error"]
        assert (line["log_level"], line["request_id"], line["provider"]) == (
            "error",
            "req-1",
            "acme",
        )
        assert isinstance(line["exc_info"], RuntimeError)  # rendered as a traceback
        assert app.metric("tap_webhooks_internal_errors_total", provider="acme") == 1
        assert app.metric("tap_webhooks_received_total", provider="acme", status="error") == 1

        monkeypatch.undo()  # the fix is deployed: the dead letter replays
        created = await client.post("/admin/replay-dlq", headers={"X-Admin-Token": TOKEN})
        job_id = created.json()["job"]["job_id"]
        for _ in range(200):
            job = (
                await client.get(f"/admin/replay-dlq/{job_id}", headers={"X-Admin-Token": TOKEN})
            ).json()["job"]
            if job["status"] != "queued" and job["status"] != "running":
                break
            await asyncio.sleep(0.05)
    assert (job["status"], job["replayed"]) == ("succeeded", 1)
    [event] = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert event.headers["Nats-Msg-Id"] == "acme:tenant-42:evt_bug"


async def test_a_bug_in_verify_keeps_no_body_of_the_unauthenticated_request(
    start_app: StartApp, private_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = start_app(providers=PROVIDERS)
    monkeypatch.setattr(GenericProvider, "verify", broken)
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        response = await client.post(
            "/webhooks/acme", content=BODY, headers=generic_headers(SECRET, BODY, "a.b", "e1")
        )
    assert response.status_code == 500
    [record] = await dead_letters(private_nats)
    assert record["stage"] == "verify"
    assert "original_payload" not in record
    assert record["payload_sha256"] == hashlib.sha256(BODY).hexdigest()
    assert app.metric("tap_webhooks_internal_errors_total", provider="acme") == 1


async def test_a_bug_whose_dead_letter_cannot_be_written_is_503(
    start_app: StartApp, private_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 promises "in the dead-letter stream"; without the DLQ stream the sender must retry."""
    app = start_app(providers=PROVIDERS)
    monkeypatch.setattr(GenericProvider, "extract", broken)
    nc = await nats.connect(private_nats.url)
    try:
        await nc.jetstream().delete_stream("ENSEMBLE_TAP_DLQ")
    finally:
        await nc.close()
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        response = await client.post(
            "/webhooks/acme", content=BODY, headers=generic_headers(SECRET, BODY, "a.b", "e1")
        )
    assert (response.status_code, response.headers["retry-after"]) == (503, "5")
    assert app.metric("tap_webhooks_internal_errors_total", provider="acme") == 1
    assert app.metric("tap_dlq_write_failures_total", stage="normalize") == 1


async def test_a_bug_before_the_body_is_read_is_503_logged_and_counted(
    start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = start_app(providers=PROVIDERS)
    monkeypatch.setattr(ingress, "resolve_tenant", broken)
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        with capture_logs() as logs:
            response = await client.post(
                "/webhooks/acme/t1", content=BODY, headers={"X-Request-ID": "req-early"}
            )
    assert (response.status_code, response.text) == (503, "internal error\n")
    [line] = [entry for entry in logs if entry["event"] == "webhook internal error"]
    assert line["request_id"] == "req-early"
    assert app.metric("tap_webhooks_internal_errors_total", provider="acme") == 1
