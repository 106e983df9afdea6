"""``ensemble-tap serve`` with a poller: CloudEvents arrive, the poller's health shows in
``GET /admin/poller-status`` and in the metrics. The service's own clock runs here."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.conftest import StartApp
from tests.support.fakes import at
from tests.support.fakes.notion import FakeNotion
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually

TOKEN = "admin-token-0123456789"
ADMIN = {"X-Admin-Token": TOKEN}


async def wait_for_success(client: httpx.AsyncClient) -> dict[str, Any]:
    async def succeeded() -> dict[str, Any] | None:
        reply: dict[str, Any] = (await client.get("/admin/poller-status", headers=ADMIN)).json()
        return reply if reply["pollers"] and "last_success_at" in reply["pollers"][0] else None

    reply: dict[str, Any] = await eventually(
        succeeded, 10.0, interval=0.025, what="a finished poll cycle"
    )
    return reply


async def test_serve_polls_and_reports_status(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    async with FakeNotion() as fake:
        fake.put("11111111-2222-3333-4444-555555555555", at("2026-03-03T17:00:00Z"), title="Hi")
        app = start_app(
            server={"admin_token": TOKEN, "admin_rate_limit_per_sec": 1000,
                    "admin_rate_limit_burst": 1000},
            providers={
                "notion": {
                    "mode": "poll",
                    "secret": "notion-token",
                    "base_url": fake.url,
                    "tenant_id": "tenant-ops",
                    "poll_rate_limit_per_sec": 9,
                    "poll_burst": 3,
                }
            },
        )  # fmt: skip
        async with httpx.AsyncClient(base_url=app.url) as client:
            reply = await wait_for_success(client)
            unauthorized = await client.get(
                "/admin/poller-status", headers={"X-Request-ID": "status-1"}
            )
            filtered = (
                await client.get("/admin/poller-status?provider=NOTION", headers=ADMIN)
            ).json()
            missing = (
                await client.get("/admin/poller-status?tenant=missing-tenant", headers=ADMIN)
            ).json()
            metrics = (await client.get("/metrics")).text
        stored = await stored_messages(private_nats.url, app.config.nats.stream)

    poller = reply["pollers"][0]
    assert reply["count"] == 1
    assert {k: poller[k] for k in (
        "provider", "tenant_id", "interval", "rate_limit_per_sec", "burst", "failure_budget",
        "circuit_break_duration", "jitter_ratio", "consecutive_failures", "stuck", "circuit",
    )} == {
        "provider": "notion", "tenant_id": "tenant-ops", "interval": "1m0s",
        "rate_limit_per_sec": 9, "burst": 3, "failure_budget": 5,
        "circuit_break_duration": "30s", "jitter_ratio": 0, "consecutive_failures": 0,
        "stuck": False, "circuit": "closed",
    }  # fmt: skip
    assert "last_error" not in poller and "last_run_at" in poller
    assert poller["last_checkpoint"] == "2026-03-03T17:00:00Z"
    assert poller["last_cycle"]["created"] == 1
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {"request_id": "status-1", "error": "unauthorized"}
    assert (filtered["provider"], filtered["count"]) == ("NOTION", 1)
    assert missing["count"] == 0 and missing["pollers"] == []
    labels = 'provider="notion",tenant="tenant-ops"'
    assert f"tap_poller_stuck{{{labels}}} 0.0" in metrics
    assert f"tap_poller_consecutive_failures{{{labels}}} 0.0" in metrics
    assert f"tap_poller_fetch_requests_total{{{labels}}}" in metrics
    events = [m.json() for m in stored]
    assert [(e["type"], e["source"]) for e in events] == [
        ("ensemble.tap.notion.page.created", "tap/notion/tenant-ops")
    ]
