"""Two replicas' admin APIs over one nats-server, replay jobs in NATS
(``server.admin_replay_store_backend: nats``): two ``build_admin`` on two connections, called
through ``httpx.ASGITransport``. A job created through one is read, listed and cancelled
through the other with the same JSON; an Idempotency-Key holds across both; a job is run by
one runner when both want it; and a job whose replica stops renewing its claim (its
connection gone, its runner cancelled without a word) is taken over and finished, every
dead letter republished once in all."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest

from ensemble_tap.admin.guards import fingerprint
from ensemble_tap.admin.jobs import NewJob, ReplayRequest
from ensemble_tap.admin.service import AdminService, build_admin
from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.contract import Publisher, PublishResult
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import dlq_stream_config, ensure_stream, main_stream_config
from ensemble_tap.observability import Metrics
from tests.support.configs import make_config
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually

TOKEN = "tok-primary-0123456789"
ADMIN = {"X-Admin-Token": TOKEN}
CLAIM_TTL = 1.0
SERVER = {
    "admin_token": TOKEN,
    "admin_rate_limit_per_sec": 100_000,
    "admin_rate_limit_burst": 100_000,
    "admin_replay_store_backend": "nats",
    "admin_replay_claim_ttl": f"{int(CLAIM_TTL * 1000)}ms",
}


class CountingPublisher:
    """The replica's real JetStream publisher, counting what it is asked to publish; after
    ``hold_after`` publishes it hangs (a replica stuck, about to die)."""

    def __init__(self, inner: Publisher, hold_after: int | None = None) -> None:
        self.inner = inner
        self.hold_after = hold_after
        self.sent: list[str] = []

    @property
    def connected(self) -> bool:
        return self.inner.connected

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        request_id: str = "",
        timeout: float | None = None,
    ) -> PublishResult:
        if self.hold_after is not None and len(self.sent) >= self.hold_after:
            await asyncio.Event().wait()
        self.sent.append(msg_id)
        return await self.inner.publish(subject, payload, msg_id, request_id, timeout)


@dataclass
class Replica:
    service: AdminService
    broker: Broker
    publisher: CountingPublisher
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.service.app, client=("127.0.0.1", 40_000))
        made = httpx.AsyncClient(transport=transport, base_url="http://tap", headers=ADMIN)
        self.clients.append(made)
        return made

    async def job(self, job_id: str) -> dict[str, Any]:
        async with self.client() as client:
            response = await client.get(f"/admin/replay-dlq/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()["job"]
        return body


StartReplica = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def replica(private_nats: NatsServer, tmp_path: Path) -> AsyncIterator[StartReplica]:
    """``await replica(hold_after=None)``: one more replica's admin over its own connection;
    the streams exist."""
    config = make_config(private_nats.url, str(tmp_path / "data"), server=SERVER)
    async with contextlib.AsyncExitStack() as stack:

        async def start(hold_after: int | None = None) -> Replica:
            metrics = Metrics()
            broker = Broker(config.nats, [private_nats.url], metrics)
            await broker.connect(5)
            stack.push_async_callback(broker.close)
            await ensure_stream(broker.js, main_stream_config(config.nats))
            await ensure_stream(broker.js, dlq_stream_config(config.nats))
            publisher = CountingPublisher(
                JetStreamPublisher(broker, config.nats, metrics), hold_after
            )
            service = build_admin(config, broker=broker, publisher=publisher, metrics=metrics)
            stack.push_async_callback(service.jobs.close)
            stack.push_async_callback(service.runner.stop)
            return Replica(service, broker, publisher)

        yield start


async def dead_letters(url: str, provider: str, count: int) -> list[str]:
    """``count`` replayable dead letters of ``provider``; their events' dedup ids."""
    nc = await nats.connect(url)
    ids = []
    for n in range(count):  # the streams exist (a replica made them)
        dedup = f"{provider}::evt_{n}"
        record = {
            "id": f"dlq_{provider}_{n}",
            "stage": "publish",
            "provider": provider,
            "reason": "boom",
            "original_subject": f"ensemble.tap.{provider}.deal.updated",
            "original_dedup_id": dedup,
            "original_payload": base64.b64encode(orjson.dumps({"n": n})).decode(),
            "occurred_at": "2026-11-28T00:00:00Z",
        }
        await nc.jetstream().publish(f"ensemble.dlq.publish.{provider}", orjson.dumps(record))
        ids.append(dedup)
    await nc.close()
    return ids


async def finished(replica: Replica, job_id: str) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []

    async def done() -> bool:
        jobs[:] = [await replica.job(job_id)]
        return jobs[0]["status"] in ("succeeded", "failed", "cancelled")

    await eventually(done, timeout=30)
    return jobs[0]


async def test_a_job_created_through_one_replica_is_served_by_the_other(
    replica: StartReplica,
) -> None:
    a, b = await replica(), await replica()
    async with a.client() as through_a, b.client() as through_b:
        created = await through_a.post("/admin/replay-dlq", params={"dry_run": "true"})
        assert created.status_code == 202, created.text
        job_id = created.json()["job"]["job_id"]
        done = await finished(b, job_id)
        assert done == await a.job(job_id)
        assert done["status"] == "succeeded"
        listed = (await through_b.get("/admin/replay-dlq")).json()
        assert [job["job_id"] for job in listed["jobs"]] == [job_id]
        assert listed["summary"]["succeeded"] == 1

        # A job that stays queued (nobody runs it), cancelled through the other replica.
        queued, _ = await a.service.jobs.create(
            NewJob(
                request=ReplayRequest(effective_limit=10, dry_run=True),
                requested_limit=0,
                max_limit=2000,
                capped=False,
                idempotency_key="",
                creator_ip="127.0.0.1",
                token_fingerprint=fingerprint(TOKEN),
                request_id="req-queued",
                reason="",
            )
        )
        cancelled = await through_b.delete(f"/admin/replay-dlq/{queued.job_id}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["job"]["status"] == "cancelled"
        assert await a.job(queued.job_id) == cancelled.json()["job"]
        again = await through_a.delete(f"/admin/replay-dlq/{queued.job_id}")
        assert again.status_code == 409
        missing = await through_b.get("/admin/replay-dlq/replay_0_404")
        assert missing.status_code == 404


async def test_an_idempotency_key_holds_across_replicas(replica: StartReplica) -> None:
    a, b = await replica(), await replica()
    key = {"Idempotency-Key": "incident-4711"}
    async with a.client() as through_a, b.client() as through_b:
        first = await through_a.post("/admin/replay-dlq", params={"dry_run": "true"}, headers=key)
        assert first.status_code == 202
        again = await through_b.post("/admin/replay-dlq", params={"dry_run": "true"}, headers=key)
        assert again.status_code == 200
        assert again.json()["idempotency_reused"] is True
        assert again.json()["job"]["job_id"] == first.json()["job"]["job_id"]
        other = await through_b.post("/admin/replay-dlq", params={"limit": "5"}, headers=key)
        assert other.status_code == 409
        assert other.json()["error"] == (
            "idempotency key already used for different replay parameters"
        )


async def test_each_job_runs_once_when_both_runners_want_it(
    replica: StartReplica, private_nats: NatsServer
) -> None:
    a, b = await replica(), await replica()
    await a.service.runner.start()
    await b.service.runner.start()
    providers = ["acme", "globex", "initech", "umbrella"]
    expected = [dedup for p in providers for dedup in await dead_letters(private_nats.url, p, 10)]
    job_ids = []
    for n, provider in enumerate(providers):
        creator, other = (a, b) if n % 2 else (b, a)
        async with creator.client() as client:
            created = await client.post("/admin/replay-dlq", params={"provider": provider})
        job_id = created.json()["job"]["job_id"]
        other.service.runner.submit(job_id)  # as if its sweep had found the job queued
        job_ids.append(job_id)
    for job_id in job_ids:
        done = await finished(a, job_id)
        assert (done["status"], done["replayed"], done["failed"]) == ("succeeded", 10, 0)
    sent = Counter(a.publisher.sent + b.publisher.sent)
    assert sorted(sent) == sorted(expected)
    assert set(sent.values()) == {1}  # no record republished twice: no job ran twice
    assert len(await stored_messages(private_nats.url, "ENSEMBLE_TAP")) == 40
    assert await stored_messages(private_nats.url, "ENSEMBLE_TAP_DLQ") == []


async def test_a_job_whose_replica_dies_is_taken_over_and_finished_once(
    replica: StartReplica, private_nats: NatsServer
) -> None:
    a = await replica(hold_after=10)  # replays 10 records, then hangs
    b = await replica()
    expected = await dead_letters(private_nats.url, "acme", 30)
    await b.service.runner.start()  # looks for jobs nobody runs
    async with a.client() as client:
        created = await client.post("/admin/replay-dlq", params={"limit": "100"})
    job_id = created.json()["job"]["job_id"]

    async def ten_recorded() -> bool:
        return bool((await b.job(job_id))["replayed"] == 10)

    await eventually(ten_recorded)
    # Replica a dies: its connection is gone and its runner stops without a word (the
    # hand-back cannot reach NATS), so its claim is simply no longer renewed.
    await a.broker.nc.close()
    await a.service.runner.stop()

    done = await finished(b, job_id)
    assert (done["status"], done["replayed"], done["failed"]) == ("succeeded", 30, 0)
    assert len(a.publisher.sent) == 10
    sent = Counter(a.publisher.sent + b.publisher.sent)
    assert sorted(sent) == sorted(expected)
    assert set(sent.values()) == {1}  # resumed after the last reported record, not restarted
    assert len(await stored_messages(private_nats.url, "ENSEMBLE_TAP")) == 30
    assert await stored_messages(private_nats.url, "ENSEMBLE_TAP_DLQ") == []


async def test_the_job_routes_answer_503_while_nats_is_out_of_reach(
    replica: StartReplica,
) -> None:
    a = await replica()
    await a.broker.nc.close()
    async with a.client() as client:
        for method, path in [
            ("GET", "/admin/replay-dlq"),
            ("GET", "/admin/replay-dlq/replay_1_1"),
            ("DELETE", "/admin/replay-dlq/replay_1_1"),
            ("POST", "/admin/replay-dlq"),
        ]:
            response = await client.request(method, path)
            assert response.status_code == 503, (method, path, response.text)
            assert response.json()["error"].startswith("replay job store unavailable")
