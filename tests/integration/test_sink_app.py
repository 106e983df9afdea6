"""The sink inside the running service: a webhook becomes a row; ClickHouse never gates ingress."""

from __future__ import annotations

import httpx

from ensemble_tap.bus.embedded import free_port
from ensemble_tap.sink import EventFilters
from tests.integration.conftest import StartApp
from tests.support.signing import generic_headers
from tests.support.sink import FAST
from tests.support.waiting import eventually

SECRET = "super-secret"
ACME = {"acme": {"secret": SECRET, "tenant_id": "tenant-1"}}


async def test_accepted_webhook_becomes_a_row(start_app: StartApp) -> None:
    app = start_app(providers=ACME, clickhouse={"backend": "embedded", **FAST})
    sink = app.app.sink
    assert sink is not None
    body = b'{"id":"42","stage":"won","amount":12345678901234567890}'
    headers = generic_headers(SECRET, body, "deal.updated", "evt_blackbox_1")
    headers["X-Request-ID"] = "req-blackbox-1"
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.post("/webhooks/acme", content=body, headers=headers)
        assert response.status_code == 202

        async def found() -> bool:
            events, _ = await sink.search(EventFilters(request_id="req-blackbox-1"))
            return len(events) == 1

        await eventually(found)
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
    [event] = (await sink.search(EventFilters(request_id="req-blackbox-1")))[0]
    assert {key: event[key] for key in ("provider", "entity_type", "action", "entity_id")} == {
        "provider": "acme",
        "entity_type": "deal",
        "action": "updated",
        "entity_id": "42",
    }
    assert event["provider_event_id"] == event["id"] == "evt_blackbox_1"
    assert event["tenant_id"] == "tenant-1"
    assert event["snapshot"]["amount"] == 12345678901234567890
    assert ready.status_code == 200
    assert ready.json()["checks"]["clickhouse"] == "ok"
    assert "tap_clickhouse_rows_inserted_total 1.0" in metrics


async def test_clickhouse_down_keeps_ingress_ready(start_app: StartApp) -> None:
    """W-CH-10: the reference failed /readyz on every replica when ClickHouse was down."""
    settings = {"addr": f"127.0.0.1:{free_port()}", "dial_timeout": "1s", **FAST}
    app = start_app(providers=ACME, clickhouse=settings)
    sink = app.app.sink
    assert sink is not None
    await eventually(lambda: sink.status_info.state == "degraded")
    body = b'{"id":"43"}'
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.post(
            "/webhooks/acme", content=body, headers=generic_headers(SECRET, body, "deal.updated")
        )
        ready = await client.get("/readyz")
    assert response.status_code == 202
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["checks"]["clickhouse"].startswith("degraded: cannot prepare")
