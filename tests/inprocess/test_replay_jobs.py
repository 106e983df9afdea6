"""Replay jobs through ``ReplayJobs``, the interface the admin routes and the runner use, over
every store backend: ``memory``, ``sqlite`` and ``nats`` (a KV bucket on a real nats-server).
Idempotency, queue caps, cancel, retention, paging and claims behave the same whatever the
backend. tests/inprocess/test_replay_jobs_shared.py covers what only a shared store does
(several replicas); tests/unit/test_admin_jobs.py the registry's restart and cursors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from ensemble_tap.admin import jobs as jobs_module
from ensemble_tap.admin import nats_jobs
from ensemble_tap.admin.cursors import InvalidCursor
from ensemble_tap.admin.jobs import (
    IdempotencyConflict,
    Job,
    JobRegistry,
    JobStatus,
    Limits,
    MemoryJobStore,
    NewJob,
    NotCancellable,
    QueueLimitExceeded,
    ReplayRequest,
)
from ensemble_tap.admin.nats_jobs import NatsJobs
from ensemble_tap.admin.replay_jobs import JobClaim, LocalJobs, ReplayJobs
from ensemble_tap.admin.sqlite_store import SqliteJobStore
from ensemble_tap.bus.buckets import open_bucket
from tests.support.nats_server import NatsServer

START_NS = 1_800_000_000_000_000_000
BACKENDS = ["memory", "sqlite", "nats"]


class Clock:
    """Stands in for the ``time`` module of the job stores: time moves only when told."""

    def __init__(self) -> None:
        self.now = START_NS

    def time_ns(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1_000_000_000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(jobs_module, "time", fake)
    monkeypatch.setattr(nats_jobs, "time", fake)
    return fake


def limits(ttl: float = 3600, max_jobs: int = 1000, per_ip: int = 0, per_token: int = 0) -> Limits:
    return Limits(
        ttl_seconds=ttl, max_jobs=max_jobs, max_queued_per_ip=per_ip, max_queued_per_token=per_token
    )


MakeJobs = Callable[..., Awaitable[ReplayJobs]]


@pytest.fixture(params=BACKENDS)
async def make_jobs(
    request: pytest.FixtureRequest, nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[MakeJobs]:
    """``await make_jobs(limits)``: a fresh store of the backend (nats: a bucket of its own)."""
    made: list[ReplayJobs] = []
    nc = await nats.connect(nats_server.url)
    bucket = f"T{uuid.uuid4().hex[:12]}_REPLAY_JOBS"

    async def make(job_limits: Limits | None = None) -> ReplayJobs:
        chosen = job_limits or limits()
        jobs: ReplayJobs
        if request.param == "nats":

            async def opened() -> Any:
                return await open_bucket(nc.jetstream(), bucket, replicas=1)

            jobs = NatsJobs(opened, limits=chosen, claim_ttl=30, replica=f"r{len(made)}")
        elif request.param == "sqlite":
            jobs = LocalJobs(JobRegistry(SqliteJobStore(tmp_path / "jobs.db"), chosen))
        else:
            jobs = LocalJobs(JobRegistry(MemoryJobStore(), chosen))
        made.append(jobs)
        return jobs

    yield make
    for jobs in made:
        await jobs.close()
    if request.param == "nats":
        await nc.jetstream().delete_key_value(bucket)
    await nc.close()


async def create(
    jobs: ReplayJobs,
    *,
    limit: int = 100,
    dry_run: bool = False,
    key: str = "",
    ip: str = "10.0.0.1",
    token: str = "fp-a",
    provider: str = "",
    stage: str = "",
    tenant: str = "",
    requested: int = 0,
    reason: str = "",
    request_id: str = "req-1",
) -> tuple[Job, bool]:
    return await jobs.create(
        NewJob(
            request=ReplayRequest(
                effective_limit=limit,
                dry_run=dry_run,
                provider=provider,
                stage=stage,
                tenant=tenant,
            ),
            requested_limit=requested,
            max_limit=2000,
            capped=False,
            idempotency_key=key,
            creator_ip=ip,
            token_fingerprint=token,
            request_id=request_id,
            reason=reason,
        )
    )


async def claimed(jobs: ReplayJobs, job: Job) -> JobClaim:
    claim = await jobs.claim(job.job_id)
    assert claim is not None
    return claim


async def finish(jobs: ReplayJobs, job: Job, error: str = "") -> Job:
    claim = await claimed(jobs, job)
    await claim.finish(error)
    return claim.job


async def stored(jobs: ReplayJobs, job_id: str) -> Job:
    found = await jobs.get(job_id)
    assert found is not None
    return found


def ids(jobs: list[Job]) -> list[str]:
    return [job.job_id for job in jobs]


# --- creation and the API view -------------------------------------------------------------


async def test_a_new_job_is_queued_and_shows_only_what_is_set(
    make_jobs: MakeJobs, clock: Clock
) -> None:
    jobs = await make_jobs()
    job, reused = await create(jobs, provider="acme", stage="publish", reason="ticket INC-42")
    assert not reused
    assert job.status is JobStatus.QUEUED
    assert job.job_id == f"replay_{START_NS}_1"
    body = {
        "job_id": job.job_id,
        "status": "queued",
        "effective_limit": 100,
        "max_limit": 2000,
        "capped": False,
        "dry_run": False,
        "provider": "acme",
        "stage": "publish",
        "created_at": "2027-01-15T08:00:00Z",
        "replayed": 0,
        "skipped": 0,
        "failed": 0,
        "request_id": "req-1",
        "operator_reason": "ticket INC-42",
    }
    assert job.to_json() == body
    assert (await stored(jobs, job.job_id)).to_json() == body


async def test_the_api_view_of_a_finished_dry_run(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs()
    job, _ = await create(jobs, dry_run=True, requested=5, limit=5)
    clock.advance(1)
    claim = await claimed(jobs, job)
    claim.job.would_replay = 3
    clock.advance(0.5)
    await claim.finish("")
    body = (await stored(jobs, job.job_id)).to_json()
    assert body["requested_limit"] == 5
    assert body["started_at"] == "2027-01-15T08:00:01Z"
    assert body["completed_at"] == "2027-01-15T08:00:01.5Z"
    assert body["would_replay"] == 3
    assert "error" not in body


async def test_progress_is_stored_while_the_job_runs(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs()
    job, _ = await create(jobs)
    claim = await claimed(jobs, job)
    claim.job.replayed = 4
    claim.job.failures.append({"record_id": "dlq_1", "sequence": "9", "error": "boom"})
    await claim.progress()
    running = await stored(jobs, job.job_id)
    assert running.status is JobStatus.RUNNING
    assert (running.replayed, running.failures) == (4, claim.job.failures)
    assert await jobs.claim(job.job_id) is None  # it runs already


# --- idempotency ---------------------------------------------------------------------------


async def test_an_equal_request_with_the_same_key_returns_the_job(
    make_jobs: MakeJobs, clock: Clock
) -> None:
    jobs = await make_jobs()
    job, _ = await create(jobs, key="k1", dry_run=True, provider="acme")
    # Omitting limit and sending limit=100 are the same normalised request; reason, IP and
    # request id are not part of it.
    again, reused = await create(
        jobs,
        key="k1",
        dry_run=True,
        provider="acme",
        requested=100,
        ip="10.9.9.9",
        reason="something else entirely",
        request_id="req-2",
    )
    assert reused and again.to_json() == job.to_json()
    await finish(jobs, job, error="boom")  # a finished (even failed) job is still returned
    again, reused = await create(jobs, key="k1", dry_run=True, provider="acme")
    assert reused and again.job_id == job.job_id and again.status is JobStatus.FAILED


@pytest.mark.parametrize(
    "change",
    [
        {"limit": 99},
        {"dry_run": False},
        {"provider": "globex"},
        {"stage": "normalize"},
        {"tenant": "t2"},
    ],
)
async def test_a_different_request_with_the_same_key_conflicts(
    make_jobs: MakeJobs, clock: Clock, change: dict[str, Any]
) -> None:
    jobs = await make_jobs()
    base: dict[str, Any] = {"limit": 100, "dry_run": True, "provider": "acme", "tenant": "t1"}
    job, _ = await create(jobs, key="k1", **base)
    with pytest.raises(IdempotencyConflict) as raised:
        await create(jobs, key="k1", **{**base, **change})
    assert raised.value.job.job_id == job.job_id
    assert str(raised.value) == "idempotency key already used for different replay parameters"
    assert (await jobs.page(None, 10, "")).summary["queued"] == 1


async def test_keys_are_scoped_to_the_calling_token(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs()
    mine, _ = await create(jobs, key="shared", token="fp-a")
    theirs, reused = await create(jobs, key="shared", token="fp-b", dry_run=True)
    assert not reused and theirs.job_id != mine.job_id
    again, reused = await create(jobs, key="shared", token="fp-a")
    assert reused and again.job_id == mine.job_id


async def test_a_blank_key_never_deduplicates(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs()
    first, _ = await create(jobs, key="")
    second, reused = await create(jobs, key="")
    assert not reused and first.job_id != second.job_id


# --- queue caps ----------------------------------------------------------------------------


async def test_per_ip_queue_cap_counts_queued_jobs_of_that_ip(
    make_jobs: MakeJobs, clock: Clock
) -> None:
    jobs = await make_jobs(limits(per_ip=2))
    first, _ = await create(jobs, ip="10.0.0.1", token="fp-a")
    await create(jobs, ip="10.0.0.1", token="fp-b")
    with pytest.raises(QueueLimitExceeded) as raised:
        await create(jobs, ip="10.0.0.1", token="fp-c")
    assert (raised.value.scope, raised.value.count) == ("ip", 2)
    assert str(raised.value) == "replay queue limit exceeded for caller scope"
    await create(jobs, ip="10.0.0.2", token="fp-c")  # another IP has its own allowance
    await claimed(jobs, first)  # running jobs do not count
    await create(jobs, ip="10.0.0.1", token="fp-c")
    with pytest.raises(QueueLimitExceeded):
        await create(jobs, ip="10.0.0.1", token="fp-d")


async def test_per_token_queue_cap_counts_queued_jobs_of_that_token(
    make_jobs: MakeJobs, clock: Clock
) -> None:
    jobs = await make_jobs(limits(per_token=1))
    first, _ = await create(jobs, ip="10.0.0.1", token="fp-a", key="k")
    with pytest.raises(QueueLimitExceeded) as raised:
        await create(jobs, ip="10.0.0.2", token="fp-a")
    assert (raised.value.scope, raised.value.count) == ("token", 1)
    # An idempotent re-send is not a new job: caps are not evaluated for it.
    again, reused = await create(jobs, ip="10.0.0.2", token="fp-a", key="k")
    assert reused and again.job_id == first.job_id
    await create(jobs, ip="10.0.0.1", token="fp-b")
    await jobs.cancel(first.job_id, "")  # cancelled jobs do not count
    await create(jobs, ip="10.0.0.1", token="fp-a")


async def test_the_ip_cap_is_checked_before_the_token_cap(
    make_jobs: MakeJobs, clock: Clock
) -> None:
    jobs = await make_jobs(limits(per_ip=1, per_token=1))
    await create(jobs)
    with pytest.raises(QueueLimitExceeded) as raised:
        await create(jobs)
    assert raised.value.scope == "ip"


async def test_unknown_callers_are_not_counted_together(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs(limits(per_ip=1, per_token=1))
    for _ in range(3):
        await create(jobs, ip="", token="")


async def test_zero_disables_the_queue_caps(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs(limits(per_ip=0, per_token=0))
    for _ in range(30):
        await create(jobs)
    assert (await jobs.page(None, 500, "")).summary["queued"] == 30


# --- cancel --------------------------------------------------------------------------------


async def test_only_queued_jobs_can_be_cancelled(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs()
    queued, _ = await create(jobs)
    clock.advance(2)
    cancelled = await jobs.cancel(queued.job_id, "wrong filters, sorry")
    assert cancelled is not None and cancelled.job_id == queued.job_id
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.cancel_reason == "wrong filters, sorry"
    assert cancelled.error == "cancelled by operator: wrong filters, sorry"
    assert cancelled.to_json()["completed_at"] == "2027-01-15T08:00:02Z"
    assert (await stored(jobs, queued.job_id)).to_json() == cancelled.to_json()
    assert await jobs.claim(queued.job_id) is None  # its worker finds it no longer queued

    plain, _ = await create(jobs)
    plain_cancelled = await jobs.cancel(plain.job_id, "")
    assert plain_cancelled is not None and plain_cancelled.error == "cancelled by operator"
    assert "cancel_reason" not in plain_cancelled.to_json()

    running, _ = await create(jobs)
    await claimed(jobs, running)
    done = await finish(jobs, (await create(jobs))[0])
    for job in (running, done, queued):
        with pytest.raises(NotCancellable) as raised:
            await jobs.cancel(job.job_id, "")
        assert raised.value.job.job_id == job.job_id
        assert str(raised.value) == "replay job cannot be cancelled once running or completed"
    assert (await stored(jobs, running.job_id)).status is JobStatus.RUNNING
    assert await jobs.cancel("replay_0_404", "") is None
    assert await jobs.get("no such/job*") is None


# --- retention -----------------------------------------------------------------------------


async def test_ttl_evicts_finished_jobs_only(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs(limits(ttl=60))
    queued, _ = await create(jobs)
    running, _ = await create(jobs)
    await claimed(jobs, running)
    succeeded = await finish(jobs, (await create(jobs, key="k"))[0])
    failed = await finish(jobs, (await create(jobs))[0], error="boom")
    cancelled, _ = await create(jobs)
    await jobs.cancel(cancelled.job_id, "")
    clock.advance(30)
    touched = await finish(jobs, (await create(jobs))[0])  # TTL counts from the last change
    clock.advance(31)

    for job in (queued, running, touched):
        assert (await stored(jobs, job.job_id)).job_id == job.job_id
    for job in (succeeded, failed, cancelled):
        assert await jobs.get(job.job_id) is None
    # The key of an evicted job is free again.
    assert (await create(jobs, key="k"))[1] is False
    clock.advance(31)
    assert await jobs.get(touched.job_id) is None
    assert (await stored(jobs, queued.job_id)).status is JobStatus.QUEUED


async def test_max_jobs_evicts_the_oldest_finished_jobs(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs(limits(max_jobs=2))
    first = await finish(jobs, (await create(jobs))[0])
    clock.advance(1)
    second = await finish(jobs, (await create(jobs))[0])
    clock.advance(1)
    third, _ = await create(jobs)  # cleanup runs before the insert: 3 jobs for a moment
    assert len((await jobs.page(None, 500, "")).jobs) == 2
    assert await jobs.get(first.job_id) is None
    assert (await stored(jobs, second.job_id)).job_id == second.job_id
    assert (await stored(jobs, third.job_id)).job_id == third.job_id


async def test_max_jobs_never_evicts_queued_or_running_jobs(
    make_jobs: MakeJobs, clock: Clock
) -> None:
    jobs = await make_jobs(limits(max_jobs=1))
    made = [(await create(jobs))[0] for _ in range(3)]
    await claimed(jobs, made[0])
    clock.advance(10)
    assert ids((await jobs.page(None, 10, "")).jobs) == ids(made[::-1])


# --- paging --------------------------------------------------------------------------------


async def test_an_invalid_cursor_is_refused(make_jobs: MakeJobs) -> None:
    jobs = await make_jobs()
    with pytest.raises(InvalidCursor, match="invalid cursor: malformed encoding"):
        await jobs.page(None, 10, "abcde")


async def test_pages_are_newest_first_with_ties_broken_by_job_id(
    make_jobs: MakeJobs, clock: Clock
) -> None:
    jobs = await make_jobs()
    tied = [(await create(jobs))[0] for _ in range(11)]  # same created_at: replay_<ns>_1 … _11
    clock.advance(1)
    newer = [(await create(jobs))[0] for _ in range(2)]
    expected = sorted(newer, key=lambda job: job.job_id, reverse=True) + sorted(
        tied, key=lambda job: job.job_id, reverse=True
    )
    # Plain string order, as the reference: ..._9 comes before ..._11 and ..._10.
    assert [job.job_id.rsplit("_", 1)[1] for job in expected[2:5]] == ["9", "8", "7"]

    seen: list[Job] = []
    cursor = ""
    for _ in range(10):
        page = await jobs.page(None, 3, cursor)
        seen += page.jobs
        cursor = page.next_cursor
        if not cursor:
            break
    assert ids(seen) == ids(expected)
    assert len(page.jobs) == 1  # 13 jobs in pages of 3: the last page holds one

    exact = await jobs.page(None, 13, "")
    assert (len(exact.jobs), exact.next_cursor) == (13, "")


async def test_status_filter_and_summary(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs()
    await create(jobs)
    running, _ = await create(jobs)
    await claimed(jobs, running)
    done = [await finish(jobs, (await create(jobs))[0]) for _ in range(3)]
    await finish(jobs, (await create(jobs))[0], error="boom")

    page = await jobs.page(JobStatus.SUCCEEDED, 2, "")
    assert [job.status for job in page.jobs] == [JobStatus.SUCCEEDED] * 2
    expected_summary = {"queued": 1, "running": 1, "succeeded": 3, "failed": 1, "cancelled": 0}
    assert page.summary == expected_summary
    rest = await jobs.page(JobStatus.SUCCEEDED, 2, page.next_cursor)
    assert ids(page.jobs + rest.jobs) == ids(done[::-1])
    assert rest.summary == expected_summary  # over all jobs, whatever the filter or cursor
    assert (await jobs.page(JobStatus.CANCELLED, 5, "")).jobs == []


# --- start ---------------------------------------------------------------------------------


async def test_open_returns_the_queued_jobs_oldest_first(make_jobs: MakeJobs, clock: Clock) -> None:
    jobs = await make_jobs()
    later, _ = await create(jobs)
    clock.advance(-1)
    earlier, _ = await create(jobs)
    clock.advance(2)
    await finish(jobs, (await create(jobs))[0])
    assert await jobs.open() == [earlier.job_id, later.job_id]
