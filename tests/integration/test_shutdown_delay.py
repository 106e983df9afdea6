"""The drain on SIGTERM: ``/readyz`` turns 503 at once while webhooks are still answered
(with ``Connection: close``, so keep-alive clients reconnect elsewhere) for
``server.shutdown_delay``, then within ``server.shutdown_timeout`` for as long as requests
keep arriving; then the service shuts down as before and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx

from tests.faults.harness import PROVIDER, SECRET, Delivery, make_deliveries
from tests.support.nats_server import NatsServer
from tests.support.service_process import ServiceProcess

DELAY = 3.0


async def test_sigterm_turns_readiness_off_and_serves_on_for_the_delay(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    config = {
        "data_dir": str(tmp_path / "data"),
        "log_level": "info",
        "nats": {"url": private_nats.url},
        "server": {"shutdown_delay": f"{DELAY}s", "shutdown_timeout": "5s"},
        "providers": {PROVIDER: {"secret": SECRET}},
    }
    service = ServiceProcess(tmp_path, config)
    service.start()
    deliveries = iter(make_deliveries(50, "drain"))
    try:
        await service.wait_ready()
        async with httpx.AsyncClient(base_url=service.url, timeout=5) as client:
            before = await _webhook(client, next(deliveries))
            assert before.status_code == 202
            assert before.headers.get("connection") != "close"  # keep-alive as usual

            assert service.process is not None
            service.process.terminate()
            signalled = time.monotonic()
            not_ready = await client.get("/readyz")
            while not_ready.status_code == 200:  # until the signal is handled
                not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert "shutting down" in not_ready.json()["error"]

            answered = 0
            while time.monotonic() - signalled < DELAY - 1:  # newly routed requests
                during = await _webhook(client, next(deliveries))
                assert during.status_code == 202, during.text
                assert during.headers["connection"] == "close"
                answered += 1
                await asyncio.sleep(0.1)
            assert answered >= 5
            assert (await client.get("/livez")).status_code == 200
        code = await asyncio.to_thread(service.process.wait, 30)
        assert code == 0
        assert time.monotonic() - signalled >= DELAY
    finally:
        await service.stop()


async def test_without_a_delay_requests_routed_here_are_served_until_they_stop(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    budget = 20.0
    config = {
        "data_dir": str(tmp_path / "data"),
        "nats": {"url": private_nats.url},
        "server": {"shutdown_timeout": f"{budget:.0f}s"},
        "providers": {PROVIDER: {"secret": SECRET}},
    }
    service = ServiceProcess(tmp_path, config)
    service.start()
    deliveries = iter(make_deliveries(200, "drain-timeout"))
    try:
        await service.wait_ready()
        assert service.process is not None
        async with httpx.AsyncClient(base_url=service.url, timeout=5) as client:
            assert (await _webhook(client, next(deliveries))).status_code == 202
            service.process.terminate()
            signalled = time.monotonic()
            answered = 0
            while time.monotonic() - signalled < 2.5:  # a balancer still routing here
                during = await _webhook(client, next(deliveries))
                assert during.status_code == 202, during.text
                answered += 1
                await asyncio.sleep(0.05)
            assert during.headers["connection"] == "close"
            # The balancer's health checks go on; they are not traffic that keeps it serving.
            exited = asyncio.create_task(asyncio.to_thread(service.process.wait, 30))
            while not exited.done():
                with contextlib.suppress(httpx.TransportError):
                    assert (await client.get("/readyz")).status_code == 503
                await asyncio.sleep(0.1)
        code = await exited
        assert code == 0
        assert answered >= 20
        # It went once the requests stopped, not at the end of shutdown_timeout.
        assert time.monotonic() - signalled < budget - 5
    finally:
        await service.stop()


async def _webhook(client: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
    return await client.post(
        f"/webhooks/{PROVIDER}", content=delivery.body, headers=delivery.headers
    )
