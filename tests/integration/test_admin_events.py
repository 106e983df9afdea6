"""The operator's "where is my webhook?": a webhook stored by the embedded ClickHouse sink is
found by its request id through GET /admin/events and `ensemble-tap admin events`."""

from __future__ import annotations

import asyncio

import httpx
from typer.testing import CliRunner

from ensemble_tap.cli import cli
from tests.integration.conftest import StartApp
from tests.support.signing import generic_headers

TOKEN = "events-admin-token"
ADMIN = {"X-Admin-Token": TOKEN}


async def test_a_webhook_is_found_by_its_request_id(start_app: StartApp) -> None:
    app = start_app(
        providers={"acme": {"secret": "s"}},
        server={"admin_token": TOKEN},
        clickhouse={"backend": "embedded", "flush_interval": "100ms"},
    )
    body = b'{"id":"deal_1","amount":5}'
    headers = {
        **generic_headers("s", body, "deal.updated", "evt_where"),
        "X-Request-ID": "req-where-1",
    }
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        assert (
            await client.post("/webhooks/acme", content=body, headers=headers)
        ).status_code == 202
        nothing = await client.get("/admin/events", params={"request_id": "nope"}, headers=ADMIN)
        for _ in range(200):
            found = await client.get(
                "/admin/events", params={"request_id": "req-where-1"}, headers=ADMIN
            )
            if found.status_code == 200 and found.json()["events"]:
                break
            await asyncio.sleep(0.05)
        bad_time = await client.get("/admin/events", params={"since": "yesterday"}, headers=ADMIN)

    assert nothing.status_code == 200
    assert nothing.json()["events"] == []
    [event] = found.json()["events"]
    assert event["id"] == "evt_where"
    assert event["provider"] == "acme"
    assert event["entity_id"] == "deal_1"
    assert event["snapshot"] == {"id": "deal_1", "amount": 5}
    assert bad_time.status_code == 400
    assert "since" in bad_time.json()["error"]

    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["admin", "events", "--request-id", "req-where-1", "--url", app.url],
        env={"TAP_ADMIN_TOKEN": TOKEN},
    )
    assert result.exit_code == 0, result.output
    assert "evt_where" in result.output
    assert "deal/deal_1" in result.output


async def test_events_without_a_sink_say_how_to_enable_it(start_app: StartApp) -> None:
    app = start_app(providers={"acme": {"secret": "s"}}, server={"admin_token": TOKEN})
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.get("/admin/events", headers=ADMIN)
    assert response.status_code == 404
    assert "clickhouse" in response.json()["error"]
