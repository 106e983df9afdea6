"""NATS unreachable at start: the service serves at once (live, not ready, 503 + Retry-After
for webhooks, admin answers what it can) and becomes ready without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from ensemble_tap.bus.embedded import free_port
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers
from tests.support.waiting import status_of

SECRET = "absent-broker-secret"
BODY = b'{"id":"invoice_7","amount":7}'
ADMIN = {"X-Admin-Token": "admin-token-for-the-absent-broker-test"}


async def test_serves_without_nats_and_becomes_ready_when_it_comes(tmp_path: Path) -> None:
    broker = NatsServer(tmp_path / "nats", port=free_port())  # not started yet
    config = make_config(
        broker.url,
        str(tmp_path / "data"),
        providers={"acme": {"secret": SECRET}},
        # startup_timeout unset (YAML null): keep trying, never exit.
        nats={"startup_timeout": None, "reconnect_wait": "100ms", "publish_timeout": "1s"},
        server={"admin_token": ADMIN["X-Admin-Token"]},
    )
    app = RunningApp(config, wait_ready=False).start()
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            assert (await client.get("/livez")).status_code == 200
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert "connecting to nats" in not_ready.json()["error"]
            assert "Connect call failed" in not_ready.json()["error"]  # the last error shown

            headers = generic_headers(SECRET, BODY, "invoice.paid", "evt_absent_1")
            refused = await client.post("/webhooks/acme", content=BODY, headers=headers)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
            # No dead-letter write was tried against the unreachable broker (it would only
            # have delayed the 503).
            assert app.metric("tap_dlq_write_failures_total", stage="publish") == 0
            assert app.metric("tap_events_publish_failures_total", provider="acme") == 1

            pollers = await client.get("/admin/poller-status", headers=ADMIN)
            assert pollers.status_code == 200

            broker.start()
            ready = await status_of(client, "/readyz", 200)
            assert ready.json()["status"] == "ready"
            accepted = await client.post("/webhooks/acme", content=BODY, headers=headers)
            assert accepted.status_code == 202
        [stored] = await stored_messages(broker.url, "ENSEMBLE_TAP")
        assert stored.headers["Nats-Msg-Id"] == "acme::evt_absent_1"
        assert app.metric("tap_nats_connected") == 1
    finally:
        app.stop()
        broker.stop()


async def test_startup_timeout_set_stops_the_bring_up_with_a_clear_error(tmp_path: Path) -> None:
    config = make_config(
        f"nats://127.0.0.1:{free_port()}",
        str(tmp_path / "data"),
        nats={"startup_timeout": "500ms", "reconnect_wait": "100ms"},
    )
    app = RunningApp(config, wait_ready=False).start()
    try:
        async with httpx.AsyncClient(base_url=app.url) as client:
            assert (await client.get("/livez")).status_code == 200
        bring_up = app.app.bring_up
        assert bring_up is not None
        for _ in range(200):
            if bring_up.done():
                break
            await asyncio.sleep(0.05)
        assert bring_up.done()
        error = bring_up.exception()
        assert error is not None
        assert "nats not reachable" in str(error)
        assert "within 0.5s" in str(error)
    finally:
        app.stop()
