"""Two ``ensemble-tap serve`` processes sharing replay jobs through NATS
(``server.admin_replay_store_backend: nats``): the replica running a real replay is
SIGKILLed mid-job; the other takes the job over after the claim TTL and finishes it, and
every dead letter ends up in the event stream once, the DLQ empty."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.replay import dead_letters, owner_pid
from tests.support.service_process import ServiceProcess
from tests.support.waiting import eventually

TOKEN = "tok-primary-0123456789"
ADMIN = {"X-Admin-Token": TOKEN}
RECORDS = 3000


@pytest.fixture
async def replicas(private_nats: NatsServer, tmp_path: Path) -> AsyncIterator[list[ServiceProcess]]:
    config: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "log_level": "warning",
        "nats": {"url": private_nats.url, "reconnect_wait": "250ms", "connect_timeout": "1s"},
        "server": {
            "admin_token": TOKEN,
            "admin_rate_limit_per_sec": 1000,
            "admin_rate_limit_burst": 1000,
            "admin_replay_store_backend": "nats",
            "admin_replay_claim_ttl": "1s",
            "admin_replay_max_limit": RECORDS,
        },
    }
    services = [ServiceProcess(tmp_path, config, name=f"replica-{n}") for n in range(2)]
    try:
        for service in services:
            service.start()
        for service in services:
            await service.wait_ready()
        yield services
    finally:
        for service in services:
            with contextlib.suppress(Exception):
                await service.stop()
            service.kill_leftovers()


async def test_the_replica_running_a_job_is_killed_and_another_finishes_it(
    replicas: list[ServiceProcess], private_nats: NatsServer
) -> None:
    expected = await dead_letters(private_nats.url, RECORDS)
    first = replicas[0]
    async with httpx.AsyncClient(base_url=first.url, headers=ADMIN, timeout=10) as client:
        created = await client.post("/admin/replay-dlq", params={"limit": str(RECORDS)})
        assert created.status_code == 202, created.text
        job_id = created.json()["job"]["job_id"]
        job: dict[str, Any] = {}

        async def under_way() -> bool:
            job.update((await client.get(f"/admin/replay-dlq/{job_id}")).json()["job"])
            return bool(job["replayed"] >= 200)

        await eventually(under_way)
    assert job["status"] == "running"  # killed mid-job, not after it
    pid = await owner_pid(private_nats.url, job_id)
    runner = next(service for service in replicas if service.process and service.process.pid == pid)
    survivor = next(service for service in replicas if service is not runner)
    await runner.kill()

    async with httpx.AsyncClient(base_url=survivor.url, headers=ADMIN, timeout=10) as client:

        async def finished() -> bool:
            job.update((await client.get(f"/admin/replay-dlq/{job_id}")).json()["job"])
            return bool(job["status"] != "running")

        await eventually(finished, timeout=60)
    assert job["status"] == "succeeded", job
    # At most the record in flight at the kill is missing from the count: delivered and
    # removed from the DLQ, its progress never written. Nothing was counted twice.
    assert RECORDS - 1 <= job["replayed"] <= RECORDS
    assert job["failed"] == 0
    events = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert sorted(event.headers["Nats-Msg-Id"] for event in events) == sorted(expected)
    assert await stored_messages(private_nats.url, "ENSEMBLE_TAP_DLQ") == []
