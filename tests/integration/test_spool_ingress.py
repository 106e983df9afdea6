"""``server.spool``: with JetStream unreachable a verified webhook is answered 202
``spooled``, the service stays ready, and the event reaches the stream once, with its
original ``Nats-Msg-Id``, when the broker is back; a full spool answers 503."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from ensemble_tap.spool import SpoolLog
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.jetstream import Stored, stored_messages
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers

SECRET = "spool-secret"
BODY = b'{"id":"invoice_9","amount":9}'


def _spooling_app(broker: NatsServer, data_dir: Path, **server: object) -> RunningApp:
    config = make_config(
        broker.url,
        str(data_dir),
        providers={"acme": {"secret": SECRET}},
        nats={"publish_timeout": "500ms", "reconnect_wait": "100ms"},
        server={"spool": {"enabled": True}, **server},
    )
    return RunningApp(config).start()


async def _stored(url: str, count: int) -> list[Stored]:
    for _ in range(200):
        found = await stored_messages(url, "ENSEMBLE_TAP")
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"the stream never held {count} events")


async def test_an_event_spooled_during_an_outage_is_published_once_when_the_broker_is_back(
    tmp_path: Path, private_nats: NatsServer
) -> None:
    app = _spooling_app(private_nats, tmp_path / "data")
    try:
        private_nats.stop()
        headers = generic_headers(SECRET, BODY, "invoice.paid", "evt_spooled_1")
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            spooled = await client.post("/webhooks/acme", content=BODY, headers=headers)
            ready = await client.get("/readyz")
        assert spooled.status_code == 202
        assert spooled.json()["status"] == "spooled"
        assert spooled.json()["id"] == "evt_spooled_1"
        assert ready.status_code == 200  # server.spool.ready_while_spooling (default)
        assert ready.json()["checks"]["spool"].startswith("accepting events")
        assert "not healthy" in ready.json()["checks"]["nats"]
        assert app.metric("tap_spool_spooled_total") == 1
        assert app.metric("tap_spool_depth_events") == 1

        private_nats.start()
        [stored] = await _stored(private_nats.url, 1)
        assert stored.headers["Nats-Msg-Id"] == "acme::evt_spooled_1"
        for _ in range(100):  # the drainer commits after the ack
            if app.metric("tap_spool_depth_events") == 0:
                break
            await asyncio.sleep(0.05)
        assert app.metric("tap_spool_drained_total") == 1
        assert app.metric("tap_spool_depth_events") == 0
    finally:
        app.stop()


async def test_a_full_spool_answers_503_and_the_service_is_not_ready(
    tmp_path: Path, private_nats: NatsServer
) -> None:
    """1 MiB of spool (the least allowed) holds one event of 600 KB, not two."""
    app = _spooling_app(
        private_nats,
        tmp_path / "data",
        max_body_size=700_000,
        spool={"enabled": True, "max_bytes": 1_048_576},
    )
    try:
        private_nats.stop()
        statuses = []
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            for number in range(2):
                body = b'{"id":"big_%d","pad":"%s"}' % (number, b"p" * 600_000)
                headers = generic_headers(SECRET, body, "invoice.paid", f"evt_big_{number}")
                response = await client.post("/webhooks/acme", content=body, headers=headers)
                statuses.append((response.status_code, response.headers.get("retry-after")))
            ready = await client.get("/readyz")
        assert statuses == [(202, None), (503, "5")]
        assert ready.status_code == 503
        assert app.metric("tap_spool_rejected_total") == 1
    finally:
        app.stop()


async def test_the_spool_of_a_worker_that_no_longer_exists_is_drained_by_the_primary(
    tmp_path: Path, private_nats: NatsServer
) -> None:
    """``server.workers`` lowered from 4 to 1: worker 3's spooled event is not stranded."""
    leftover = SpoolLog(tmp_path / "data" / "spool" / "3", max_bytes=1_048_576)
    await leftover.open()
    await leftover.append("ensemble.tap.acme.invoice.paid", b'{"id":"evt_left"}', "acme::left")
    await leftover.close()

    app = _spooling_app(private_nats, tmp_path / "data")
    try:
        [stored] = await _stored(private_nats.url, 1)
        assert stored.headers["Nats-Msg-Id"] == "acme::left"
        assert stored.data == b'{"id":"evt_left"}'
    finally:
        app.stop()
