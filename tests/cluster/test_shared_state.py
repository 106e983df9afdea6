"""#15, state shared through a real cluster (streams and buckets with three replicas):

- poller leases: three replicas spread the targets; the one holding most is SIGKILLed while
  the SaaS API changes a record; the others take its targets over within ``state.lease_ttl``
  plus a lease round, and the stream holds every change of every target exactly once;
- replay jobs: a job created through one replica is read and listed through the others and
  its ``Idempotency-Key`` holds there; the replica running it is SIGKILLed, another finishes
  it, and every dead letter is in the stream once; a queued job is cancelled through
  another replica and never runs.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import httpx

from tests.cluster.replicas import STREAM, replica, report, stop_all
from tests.support.fakes import at
from tests.support.fakes.notion import FakeNotion
from tests.support.jetstream import stored_messages
from tests.support.nats_cluster import NatsCluster
from tests.support.replay import dead_letters, owner_pid
from tests.support.service_process import ServiceProcess
from tests.support.waiting import eventually

TOKEN = "tok-cluster-0123456789"
ADMIN = {"X-Admin-Token": TOKEN}
T0 = at("2026-03-03T17:00:00Z")
SECOND = 1_000_000_000
TENANTS = ("t1", "t2", "t3", "t4", "t5")
TARGETS = ("", *TENANTS)  # the provider's own settings are a target too
LEASE_TTL = 3.0
ROUND = LEASE_TTL / 3


def admin_section(**more: Any) -> dict[str, Any]:
    return {"admin_token": TOKEN, "admin_rate_limit_per_sec": 1000,
            "admin_rate_limit_burst": 1000, **more}  # fmt: skip


async def holders(service: ServiceProcess) -> dict[str, str | None]:
    """Tenant → the replica id holding its lease, as ``service`` reports it."""
    async with httpx.AsyncClient(base_url=service.url, headers=ADMIN, timeout=5) as client:
        reply = (await client.get("/admin/poller-status")).json()
    return {s.get("tenant_id", ""): s.get("lease_holder") for s in reply["pollers"]}


def pid_of(holder: str | None) -> int:
    """The pid in a replica id (``<hostname>-<pid>-<hex>``)."""
    return int((holder or "0-0-0").rsplit("-", 2)[1])


async def changes(cluster: NatsCluster) -> collections.Counter[tuple[str, str, str]]:
    """(tenant, action, title) of every poll event in the stream, counted."""
    stored = await stored_messages(cluster.living[0].url, STREAM)
    found: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for message in stored:
        data = message.json()["data"]
        title = str(data["snapshot"]["properties"]["title"])
        found[(data.get("tenant_id", ""), data["action"], title)] += 1
    return found


async def test_a_killed_lease_holders_targets_are_taken_over_without_gap_or_copy(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    await cluster.wait_meta_leader()
    async with FakeNotion() as fake:
        fake.put("page-1", T0, title="v1")
        notion = {
            "notion": {
                "mode": "poll",
                "secret": "notion-token",
                "base_url": fake.url,
                "poll_interval": "250ms",
                "tenants": {name: {"tenant_id": name} for name in TENANTS},
            }
        }
        replicas = [
            replica(cluster, tmp_path, f"p{i}", ("poller", "admin"), server=admin_section(),
                    providers=notion, state={"backend": "nats", "lease_ttl": f"{LEASE_TTL:g}s"})
            for i in range(3)
        ]  # fmt: skip
        for service in replicas:
            service.start()
        try:
            await asyncio.gather(*(service.wait_ready() for service in replicas))
            pids = {service.process.pid for service in replicas if service.process}

            async def spread() -> dict[str, str | None] | None:
                held = await holders(replicas[0])
                owners = {pid_of(holder) for holder in held.values()}
                return held if None not in held.values() and owners == pids else None

            held = await eventually(spread, 30, what="every target held, by all three")
            created = {(tenant, "created", "v1") for tenant in TARGETS}

            async def all_created() -> bool:
                return set(await changes(cluster)) >= created

            await eventually(all_created, 30, what="every target polled")

            counts = collections.Counter(pid_of(holder) for holder in held.values())
            victim_pid = counts.most_common(1)[0][0]
            victim = next(s for s in replicas if s.process and s.process.pid == victim_pid)
            survivors = [service for service in replicas if service is not victim]
            orphaned = {tenant for tenant, holder in held.items() if pid_of(holder) == victim_pid}
            await victim.kill()
            killed_at = time.monotonic()
            fake.put("page-1", T0 + SECOND, title="v2")

            async def taken_over() -> bool:
                now = await holders(survivors[0])
                return all(
                    pid_of(now[tenant]) not in (0, pid_of(held[tenant])) for tenant in orphaned
                )

            await eventually(taken_over, LEASE_TTL + ROUND + 10, interval=0.1,
                             what="the killed replica's targets held by the others")  # fmt: skip
            took = time.monotonic() - killed_at
            updated = {(tenant, "updated", "v2") for tenant in TARGETS}

            async def all_updated() -> bool:
                return set(await changes(cluster)) >= updated

            await eventually(all_updated, 30, what="every target's change announced")
            report(
                f"poller leases: {len(orphaned)} of {len(TARGETS)} targets taken over "
                f"{took:.1f} s after their holder's SIGKILL (lease_ttl {LEASE_TTL:g} s)"
            )
            found = await changes(cluster)
            assert set(found) == created | updated  # no gap, nothing else
            assert {change: n for change, n in found.items() if n > 1} == {}  # no copy
        finally:
            await stop_all([service for service in replicas if service.alive()])


async def test_a_replay_job_is_shared_and_finished_by_another_replica_after_a_kill(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    records = 2000
    await cluster.wait_meta_leader()
    server = admin_section(admin_replay_store_backend="nats", admin_replay_claim_ttl="1s",
                           admin_replay_max_limit=records)  # fmt: skip
    replicas = [replica(cluster, tmp_path, f"a{i}", ("admin",), server=server) for i in range(3)]
    for service in replicas:
        service.start()
    try:
        await asyncio.gather(*(service.wait_ready() for service in replicas))
        node = cluster.living[0].url
        expected = await dead_letters(node, records)
        key = {"Idempotency-Key": "cluster-replay-1"}
        async with httpx.AsyncClient(headers=ADMIN, timeout=10) as client:
            created = await client.post(f"{replicas[0].url}/admin/replay-dlq",
                                        params={"limit": str(records)}, headers=key)  # fmt: skip
            assert created.status_code == 202, created.text
            job_id = created.json()["job"]["job_id"]
            again = await client.post(f"{replicas[1].url}/admin/replay-dlq",
                                      params={"limit": str(records)}, headers=key)  # fmt: skip
            assert again.json()["job"]["job_id"] == job_id  # the key holds on another replica
            for other in replicas[1:]:

                async def listed(url: str = other.url) -> bool:
                    jobs = (await client.get(f"{url}/admin/replay-dlq")).json()["jobs"]
                    return job_id in {job["job_id"] for job in jobs}

                # KV reads may be served by a follower of the 3-replica bucket, a moment behind.
                await eventually(listed, 10, what=f"the job listed through {other.name}")

            async def under_way() -> int:
                job = (await client.get(f"{replicas[2].url}/admin/replay-dlq/{job_id}")).json()
                return await owner_pid(node, job_id) if job["job"]["replayed"] >= 100 else 0

            pid = await eventually(under_way, 30, what="the job under way")
            runner = next(s for s in replicas if s.process and s.process.pid == pid)
            survivor = next(service for service in replicas if service is not runner)
            await runner.kill()

            async def finished() -> dict[str, Any] | None:
                reply = await client.get(f"{survivor.url}/admin/replay-dlq/{job_id}")
                job: dict[str, Any] = reply.json()["job"]
                return job if job["status"] != "running" and job["status"] != "queued" else None

            job = await eventually(finished, 60, what="the job finished by a survivor")
        assert job["status"] == "succeeded", job
        assert records - 1 <= job["replayed"] <= records  # the record in flight at the kill
        events = await stored_messages(node, STREAM)
        assert sorted(event.headers["Nats-Msg-Id"] for event in events) == sorted(expected)
        assert await stored_messages(node, f"{STREAM}_DLQ") == []
    finally:
        await stop_all([service for service in replicas if service.alive()])


async def test_a_queued_job_is_cancelled_through_another_replica(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """One job slot per replica and a slow sweep (a third of the 30 s claim TTL): a job
    created through the replica whose slot is taken waits queued there, and is cancelled
    through another replica; the third reads it cancelled, and it never runs."""
    records = 500  # the first job is still running when the second is created and cancelled
    await cluster.wait_meta_leader()
    server = admin_section(admin_replay_store_backend="nats", admin_replay_claim_ttl="30s",
                           admin_replay_max_concurrent_jobs=1,
                           admin_replay_max_limit=records)  # fmt: skip
    replicas = [replica(cluster, tmp_path, f"c{i}", ("admin",), server=server) for i in range(3)]
    for service in replicas:
        service.start()
    try:
        await asyncio.gather(*(service.wait_ready() for service in replicas))
        await dead_letters(cluster.living[0].url, records)
        first, second, third = (service.url for service in replicas)
        limit = {"limit": str(records)}
        async with httpx.AsyncClient(headers=ADMIN, timeout=10) as client:
            running = (await client.post(f"{first}/admin/replay-dlq", params=limit)).json()
            waiting = (await client.post(f"{first}/admin/replay-dlq", params=limit)).json()
            assert waiting["job"]["status"] == "queued", waiting
            job_id = waiting["job"]["job_id"]
            reason = {"X-Admin-Reason": "created twice by mistake"}
            cancelled = await client.delete(f"{second}/admin/replay-dlq/{job_id}", headers=reason)
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["job"]["status"] == "cancelled"

            async def read_cancelled() -> dict[str, Any] | None:
                job: dict[str, Any] = (
                    await client.get(f"{third}/admin/replay-dlq/{job_id}")
                ).json()["job"]
                return job if job["status"] == "cancelled" else None

            # KV reads may be served by a follower of the 3-replica bucket, a moment behind.
            seen = await eventually(read_cancelled, 10, what="the job cancelled through c2")
            assert seen["cancel_reason"] == "created twice by mistake"
            assert seen["replayed"] == 0 and "started_at" not in seen  # cancelled is final
            first_job = await client.get(f"{third}/admin/replay-dlq/{running['job']['job_id']}")
            assert first_job.json()["job"]["status"] in ("running", "succeeded")
    finally:
        await stop_all(replicas)
