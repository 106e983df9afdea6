"""The replay-job store replicas share (``server.admin_replay_store_backend: nats``), seen by
two replicas: two ``NatsJobs`` on two connections to one real nats-server, one bucket. A job
is claimed once, a cancel and a claim never both win, idempotency keys and queue caps hold
across replicas, a claim that is not renewed is taken over within the claim TTL, and the
replica that lost it cannot write again (fencing)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest

from ensemble_tap.admin.jobs import (
    Job,
    JobStatus,
    Limits,
    NewJob,
    NotCancellable,
    QueueLimitExceeded,
    ReplayRequest,
)
from ensemble_tap.admin.nats_jobs import MAX_RUNS, NatsClaim, NatsJobs
from ensemble_tap.admin.replay_jobs import ClaimLost, JobClaim
from ensemble_tap.bus.buckets import Bucket, open_bucket
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually

TTL = 1.0
Replicas = Callable[..., Awaitable[tuple[NatsJobs, NatsJobs]]]


@pytest.fixture
async def replicas(nats_server: NatsServer) -> AsyncIterator[Replicas]:
    """``await replicas(limits)``: two replicas' stores over one fresh bucket, each on its own
    connection."""
    bucket = f"T{uuid.uuid4().hex[:12]}_REPLAY_JOBS"
    connections = [await nats.connect(nats_server.url) for _ in range(2)]
    made: list[NatsJobs] = []

    async def make(limits: Limits | None = None) -> tuple[NatsJobs, NatsJobs]:
        chosen = limits or Limits(
            ttl_seconds=3600, max_jobs=1000, max_queued_per_ip=0, max_queued_per_token=0
        )
        for index, nc in enumerate(connections):

            async def opened(nc: Any = nc) -> Bucket:
                return await open_bucket(nc.jetstream(), bucket, replicas=1)

            made.append(NatsJobs(opened, limits=chosen, claim_ttl=TTL, replica=f"r{index}"))
        return made[0], made[1]

    yield make
    for jobs in made:
        await jobs.close()
    await connections[0].jetstream().delete_key_value(bucket)
    for nc in connections:
        await nc.close()


async def create(
    jobs: NatsJobs, *, key: str = "", token: str = "fp-a", ip: str = "10.0.0.1"
) -> tuple[Job, bool]:
    return await jobs.create(
        NewJob(
            request=ReplayRequest(effective_limit=100, dry_run=False),
            requested_limit=0,
            max_limit=2000,
            capped=False,
            idempotency_key=key,
            creator_ip=ip,
            token_fingerprint=token,
            request_id="req-1",
            reason="",
        )
    )


async def test_a_job_created_on_one_replica_is_read_listed_and_cancelled_on_the_other(
    replicas: Replicas,
) -> None:
    a, b = await replicas()
    job, _ = await create(a)
    seen = await b.get(job.job_id)
    assert seen is not None and seen.to_json() == job.to_json()
    assert [listed.job_id for listed in (await b.page(None, 10, "")).jobs] == [job.job_id]
    cancelled = await b.cancel(job.job_id, "not needed")
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    again = await a.get(job.job_id)
    assert again is not None and again.to_json() == cancelled.to_json()


async def test_a_queued_job_is_claimed_by_exactly_one_replica(replicas: Replicas) -> None:
    a, b = await replicas()
    made = [(await create(a if n % 2 else b))[0] for n in range(10)]
    attempts = [jobs.claim(job.job_id) for job in made for jobs in (a, b, a, b)]
    claims = [claim for claim in await asyncio.gather(*attempts) if claim is not None]
    assert sorted(claim.job.job_id for claim in claims) == sorted(job.job_id for job in made)
    for claim in claims:
        await claim.finish("")


async def test_a_cancel_and_a_claim_never_both_win(replicas: Replicas) -> None:
    a, b = await replicas()
    for _ in range(10):
        job, _ = await create(a)
        claim, cancelled = await asyncio.gather(
            b.claim(job.job_id), a.cancel(job.job_id, ""), return_exceptions=True
        )
        stored = await a.get(job.job_id)
        assert stored is not None
        if isinstance(cancelled, Job):
            assert claim is None and stored.status is JobStatus.CANCELLED
        else:
            assert isinstance(cancelled, NotCancellable), cancelled
            assert isinstance(claim, NatsClaim) and stored.status is JobStatus.RUNNING
            await claim.finish("")


async def test_an_idempotency_key_holds_across_replicas(replicas: Replicas) -> None:
    a, b = await replicas()
    results = await asyncio.gather(*(create(jobs, key="k1") for jobs in (a, b, a, b, a, b)))
    assert len({job.job_id for job, _ in results}) == 1
    assert sorted(reused for _, reused in results) == [False] + [True] * 5
    assert (await b.page(None, 10, "")).summary["queued"] == 1


async def test_queue_caps_hold_across_replicas(replicas: Replicas) -> None:
    caps = Limits(ttl_seconds=3600, max_jobs=1000, max_queued_per_ip=0, max_queued_per_token=3)
    a, b = await replicas(caps)
    results = await asyncio.gather(*(create(jobs) for jobs in (a, b) * 5), return_exceptions=True)
    assert sum(isinstance(result, tuple) for result in results) == 3
    assert sum(isinstance(result, QueueLimitExceeded) for result in results) == 7
    # A job leaving the queue frees its place, whichever replica claimed it.
    queued = (await a.page(JobStatus.QUEUED, 10, "")).jobs
    claim = await b.claim(queued[0].job_id)
    assert claim is not None
    await create(a)
    with pytest.raises(QueueLimitExceeded):
        await create(b)
    await claim.finish("")


async def test_a_renewed_claim_is_never_taken_over(replicas: Replicas) -> None:
    a, b = await replicas()
    job, _ = await create(a)
    claim = await a.claim(job.job_id)
    assert claim is not None
    deadline = time.monotonic() + 3 * TTL
    while time.monotonic() < deadline:
        assert job.job_id not in await b.runnable()
        await asyncio.sleep(TTL / 4)
    assert await b.claim(job.job_id) is None
    await claim.progress()  # still its runner's
    await claim.finish("")


async def taken_over(jobs: NatsJobs, job_id: str) -> JobClaim:
    """Look for work as the runner's sweep does until ``job_id`` is claimed."""
    claims: list[JobClaim] = []

    async def claimed() -> bool:
        if job_id in await jobs.runnable():
            claim = await jobs.claim(job_id)
            if claim is not None:
                claims.append(claim)
        return bool(claims)

    await eventually(claimed, timeout=10 * TTL)
    return claims[0]


async def test_a_claim_that_is_not_renewed_is_taken_over_and_fenced(replicas: Replicas) -> None:
    a, b = await replicas()
    job, _ = await create(a)
    claim = await a.claim(job.job_id)
    assert isinstance(claim, NatsClaim)
    claim.job.replayed, claim.job.next_sequence = 7, 12
    await claim.progress()
    with contextlib.suppress(asyncio.CancelledError):  # as if the replica died: nothing
        await claim.stop_renewing()  # renews its claim any more
    started = time.monotonic()

    other = await taken_over(b, job.job_id)
    elapsed = time.monotonic() - started
    # Lapsed after one TTL as b saw it, found at b's look after that.
    assert TTL <= elapsed < 3 * TTL
    assert (other.job.replayed, other.job.next_sequence) == (7, 12)  # resumed, not restarted
    assert other.job.status is JobStatus.RUNNING
    with pytest.raises(ClaimLost):  # the former runner can write nothing any more
        await claim.progress()
    with pytest.raises(ClaimLost):
        await claim.finish("")
    other.job.replayed = 9
    await other.finish("")
    done = await a.get(job.job_id)
    assert done is not None and (done.status, done.replayed) == (JobStatus.SUCCEEDED, 9)


async def test_a_released_job_is_taken_over_at_once(replicas: Replicas) -> None:
    a, b = await replicas()
    job, _ = await create(a)
    claim = await a.claim(job.job_id)
    assert claim is not None
    await claim.release()  # the replica stops: it hands the job back
    assert await b.runnable() == [job.job_id]
    other = await b.claim(job.job_id)
    assert other is not None
    await other.finish("")


async def test_a_job_whose_runners_keep_dying_ends_failed(replicas: Replicas) -> None:
    a, b = await replicas()
    job, _ = await create(a)
    for _ in range(MAX_RUNS):
        claim = await b.claim(job.job_id) if _ else await a.claim(job.job_id)
        assert claim is not None
        await claim.release()
    assert await b.runnable() == [job.job_id]
    assert await b.claim(job.job_id) is None
    failed = await a.get(job.job_id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error == (
        f"abandoned: the replicas running it stopped {MAX_RUNS} times without finishing"
    )
