"""Replay jobs in a JetStream KV bucket (``server.admin_replay_store_backend: nats``), shared
by every replica: any of them lists, reads and cancels any job, and each job runs once.

Keys of the bucket:

- ``job.<job_id>``: the job and its claim (the replica running it, how many replicas have
  run it). Every change is a compare-and-set on the key's revision: a queued job is claimed
  by exactly one replica, a cancel and a claim cannot both win, and the running replica's
  progress writes fail as soon as anyone else wrote the job (fencing: it stops at once).
- ``key.<digest>``: an idempotency key (scoped to the calling token) → its job, written with
  create-if-absent, so an equal re-send through any replica finds the same job.
- ``queued``: the callers of every queued job, changed with compare-and-set, so the queue
  caps per IP and per token hold across replicas.

The running replica renews its claim every third of ``server.admin_replay_claim_ttl``.
Whether a claim lapsed is judged on the observer's own monotonic clock (the job's revision
did not change for a whole TTL), so clocks of different hosts need not agree. A lapsed job
is taken over and resumed where its last progress write left it (``Job.next_sequence``;
what was replayed left the DLQ, and a record republished twice carries its original
``Nats-Msg-Id``, which JetStream drops), at most ``MAX_RUNS`` times, then failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any, TypeVar

import orjson

from ensemble_tap.admin.jobs import (
    JOB_FIELDS,
    IdempotencyConflict,
    Job,
    JobStatus,
    Limits,
    NewJob,
    Page,
    QueueLimitExceeded,
    ReplayRequest,
    check_queue_caps,
    evictable,
    mark_cancelled,
    mark_finished,
    new_job,
    page_of,
)
from ensemble_tap.admin.replay_jobs import ClaimLost, JobClaim, JobsUnavailable
from ensemble_tap.bus.buckets import (
    BUCKET_UNAVAILABLE,
    Bucket,
    BucketOnFirstUse,
    RevisionMismatch,
)
from ensemble_tap.observability import get_logger

JOB_PREFIX = "job."
KEY_PREFIX = "key."
QUEUE_KEY = "queued"
MAX_RUNS = 3
ABANDONED = "abandoned: the replicas running it stopped {runs} times without finishing"
# Compare-and-set rounds before an operation gives up (503): only under heavy contention.
CAS_ATTEMPTS = 20
# A record naming a job that does not exist yet may be a create in progress on another
# replica; only older ones are taken for leftovers of a replica that died mid-create.
CREATE_GRACE_NS = 30 * 1_000_000_000
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
log = get_logger("ensemble_tap.admin.jobs")

OpenBucket = Callable[[], Awaitable[Bucket]]
T = TypeVar("T")


@dataclass(slots=True, kw_only=True)
class Record:
    """A job as stored: the job and its claim."""

    job: Job
    owner: str = ""  # the replica running it ("" when queued, finished or handed back)
    runs: int = 0  # how many replicas have started it
    heartbeat_ns: int = 0  # the owner's last renewal (shown for operators, never compared)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "job": {name: getattr(self.job, name) for name in JOB_FIELDS},
                "owner": self.owner,
                "runs": self.runs,
                "heartbeat_ns": self.heartbeat_ns,
            }
        )

    @classmethod
    def decode(cls, value: bytes) -> Record:
        body = orjson.loads(value)
        fields = {name: body["job"][name] for name in JOB_FIELDS if name in body["job"]}
        fields["status"] = JobStatus(fields["status"])
        return cls(
            job=Job(**fields),
            owner=str(body.get("owner", "")),
            runs=int(body.get("runs", 0)),
            heartbeat_ns=int(body.get("heartbeat_ns", 0)),
        )


def job_key(job_id: str) -> str:
    return JOB_PREFIX + job_id


def idempotency_key(token_fingerprint: str, key: str) -> str:
    digest = hashlib.sha256(f"{token_fingerprint}\n{key}".encode()).hexdigest()[:40]
    return KEY_PREFIX + digest


class NatsJobs:
    shared = True

    def __init__(
        self, open_bucket: OpenBucket, *, limits: Limits, claim_ttl: float, replica: str
    ) -> None:
        self.bucket = BucketOnFirstUse(open_bucket)
        self.limits = limits
        self.claim_ttl = claim_ttl
        self.replica = replica
        self._sequence = itertools.count(1)
        # job id → (revision, when this process first saw it): a running job whose revision
        # stays the same for a whole claim TTL has lost its runner.
        self._seen: dict[str, tuple[int, float]] = {}
        self._claims: set[NatsClaim] = set()

    async def open(self) -> list[str]:
        return [job.job_id for job in await self._queued()]

    async def runnable(self) -> list[str]:
        return await _available(self._runnable())

    async def _runnable(self) -> list[str]:
        records = await self._records()
        found = []
        for job_id, (record, revision) in records.items():
            status = record.job.status
            if status is JobStatus.QUEUED or (
                status is JobStatus.RUNNING and self._lapsed(job_id, record, revision)
            ):
                found.append(record.job)
        for job_id in set(self._seen) - set(records):
            del self._seen[job_id]
        return [job.job_id for job in sorted(found, key=lambda job: job.created_ns)]

    async def _queued(self) -> list[Job]:
        return await _available(self._queued_jobs())

    async def _queued_jobs(self) -> list[Job]:
        records = await self._records()
        queued = [r.job for r, _ in records.values() if r.job.status is JobStatus.QUEUED]
        return sorted(queued, key=lambda job: job.created_ns)

    async def create(self, order: NewJob) -> tuple[Job, bool]:
        def make(job_id: str, now_ns: int) -> Job:
            return new_job(job_id, now_ns, order)

        return await _available(self._create(order.request, make))

    async def _create(
        self, request: ReplayRequest, make: Callable[[str, int], Job]
    ) -> tuple[Job, bool]:
        bucket = await self.bucket()
        await self._records()  # retention first, as in the local registry
        for _ in range(CAS_ATTEMPTS):
            now = time.time_ns()
            job = make(f"replay_{now}_{next(self._sequence)}", now)
            name = ""
            if job.idempotency_key:
                name = idempotency_key(job.creator_token_fingerprint, job.idempotency_key)
                existing, key_revision = await self._keyed(name, now)
                if existing is not None:
                    if existing.request != request:
                        raise IdempotencyConflict(existing)
                    return existing, True
                if key_revision < 0:  # another replica is creating it right now
                    await asyncio.sleep(0.05)
                    continue
                value = orjson.dumps({"job_id": job.job_id, "created_ns": now})
                try:
                    if key_revision:
                        await bucket.update(name, value, key_revision)
                    else:
                        await bucket.create(name, value)
                except RevisionMismatch:
                    continue  # used through another replica at the same moment: read it
            try:
                await self._enqueue(job)
                await bucket.create(job_key(job.job_id), Record(job=job).encode())
            except BaseException:
                await self._undo_create(job, name)
                raise
            return job, False
        raise JobsUnavailable("replay job store busy: too many concurrent changes")

    async def _undo_create(self, job: Job, key_name: str) -> None:
        """Best effort: a key must not name, nor the ledger count, a job that never came to
        be (what is left is treated as such after CREATE_GRACE_NS)."""
        with contextlib.suppress(*BUCKET_UNAVAILABLE):
            if key_name:
                await (await self.bucket()).remove(key_name)
            await self._dequeue(job.job_id)

    async def _keyed(self, name: str, now_ns: int) -> tuple[Job | None, int]:
        """The job an idempotency key names, or (None, the key's revision to replace: 0 when
        it is free, -1 while a create that just wrote it may still be writing its job)."""
        bucket = await self.bucket()
        entry = await bucket.get(name)
        if entry is None:
            return None, 0
        body = orjson.loads(entry.value)
        job = await self._job(str(body["job_id"]))
        if job is not None:
            return job, entry.revision
        if now_ns - int(body.get("created_ns", 0)) < CREATE_GRACE_NS:
            return None, -1
        return None, entry.revision

    async def _enqueue(self, job: Job) -> None:
        """Add ``job`` to the queue ledger if its caller's caps allow it (QueueLimitExceeded)."""
        bucket = await self.bucket()
        for _ in range(CAS_ATTEMPTS):
            entry = await bucket.get(QUEUE_KEY)
            waiting: dict[str, list[Any]] = orjson.loads(entry.value) if entry else {}
            try:
                self._check_caps(job, waiting)
            except QueueLimitExceeded:
                if not await self._prune(waiting):
                    raise
                self._check_caps(job, waiting)
            waiting[job.job_id] = [job.creator_ip, job.creator_token_fingerprint, job.created_ns]
            try:
                if entry is None:
                    await bucket.create(QUEUE_KEY, orjson.dumps(waiting))
                else:
                    await bucket.update(QUEUE_KEY, orjson.dumps(waiting), entry.revision)
            except RevisionMismatch:
                continue
            return
        raise JobsUnavailable("replay job store busy: too many concurrent changes")

    def _check_caps(self, job: Job, waiting: dict[str, list[Any]]) -> None:
        check_queue_caps(
            [(str(ip), str(token)) for ip, token, _ in waiting.values()],
            self.limits,
            creator_ip=job.creator_ip,
            token_fingerprint=job.creator_token_fingerprint,
        )

    async def _prune(self, waiting: dict[str, list[Any]]) -> bool:
        """Drop ledger entries of jobs no longer queued (a replica stopped between changing
        a job and the ledger); True when any was dropped."""
        now = time.time_ns()
        stale = []
        for job_id, (_, _, created_ns) in waiting.items():
            job = await self._job(job_id)
            if (job is None and now - int(created_ns) > CREATE_GRACE_NS) or (
                job is not None and job.status is not JobStatus.QUEUED
            ):
                stale.append(job_id)
        for job_id in stale:
            del waiting[job_id]
        return bool(stale)

    async def _dequeue(self, job_id: str) -> None:
        bucket = await self.bucket()
        for _ in range(CAS_ATTEMPTS):
            entry = await bucket.get(QUEUE_KEY)
            waiting: dict[str, Any] = orjson.loads(entry.value) if entry else {}
            if entry is None or job_id not in waiting:
                return
            del waiting[job_id]
            try:
                await bucket.update(QUEUE_KEY, orjson.dumps(waiting), entry.revision)
            except RevisionMismatch:
                continue
            return
        # Left behind, the entry is dropped by the next create that reaches a cap.

    async def get(self, job_id: str) -> Job | None:
        return await _available(self._job(job_id))

    async def _job(self, job_id: str) -> Job | None:
        found = await self._entry(job_id)
        if found is None:
            return None
        record, _ = found
        if evictable([record.job], self.limits, time.time_ns()):  # past its TTL
            await self._evict([record.job])
            return None
        return record.job

    async def _entry(self, job_id: str) -> tuple[Record, int] | None:
        if not _JOB_ID_RE.match(job_id):
            return None  # not a key of ours (and not a valid KV key)
        entry = await (await self.bucket()).get(job_key(job_id))
        return None if entry is None else (Record.decode(entry.value), entry.revision)

    async def cancel(self, job_id: str, reason: str) -> Job | None:
        return await _available(self._cancel(job_id, reason))

    async def _cancel(self, job_id: str, reason: str) -> Job | None:
        bucket = await self.bucket()
        for _ in range(CAS_ATTEMPTS):
            found = await self._entry(job_id)
            if found is None:
                return None
            record, revision = found
            mark_cancelled(record.job, reason, time.time_ns())  # NotCancellable once started
            try:
                await bucket.update(job_key(job_id), record.encode(), revision)
            except RevisionMismatch:
                continue  # claimed or cancelled meanwhile: look again
            await self._dequeue(job_id)
            return record.job
        raise JobsUnavailable("replay job store busy: too many concurrent changes")

    async def page(self, status: JobStatus | None, limit: int, cursor: str) -> Page:
        records = await _available(self._records())
        jobs = (record.job for record, _ in records.values())
        return page_of(jobs, status, limit=limit, cursor=cursor)

    async def _records(self) -> dict[str, tuple[Record, int]]:
        """Every job with its revision, after retention (TTL, ``max_jobs``) dropped the
        finished ones it keeps no longer."""
        bucket = await self.bucket()
        records: dict[str, tuple[Record, int]] = {}
        async for entry in bucket.snapshot(JOB_PREFIX):
            record = Record.decode(entry.value)
            records[record.job.job_id] = (record, entry.revision)
        expired = evictable((r.job for r, _ in records.values()), self.limits, time.time_ns())
        await self._evict(expired)
        for job in expired:
            del records[job.job_id]
        return records

    async def _evict(self, jobs: list[Job]) -> None:
        bucket = await self.bucket()
        for job in jobs:
            if job.idempotency_key:  # first: a key always names an existing job or none
                name = idempotency_key(job.creator_token_fingerprint, job.idempotency_key)
                entry = await bucket.get(name)
                if entry is not None and orjson.loads(entry.value)["job_id"] == job.job_id:
                    await bucket.remove(name)
            await bucket.remove(job_key(job.job_id))

    def _lapsed(self, job_id: str, record: Record, revision: int) -> bool:
        """True when a running job's claim is no longer renewed (or was handed back)."""
        if not record.owner:
            return True
        seen = self._seen.get(job_id)
        if seen is None or seen[0] != revision:
            self._seen[job_id] = (revision, monotonic())
            return False
        return monotonic() - seen[1] >= self.claim_ttl

    async def claim(self, job_id: str) -> JobClaim | None:
        return await _available(self._claim(job_id))

    async def _claim(self, job_id: str) -> NatsClaim | None:
        bucket = await self.bucket()
        for _ in range(CAS_ATTEMPTS):
            found = await self._entry(job_id)
            if found is None:
                return None
            record, revision = found
            job, now = record.job, time.time_ns()
            was_queued = job.status is JobStatus.QUEUED
            if was_queued:
                job.status = JobStatus.RUNNING
                job.started_ns = job.updated_ns = now
            elif job.status is not JobStatus.RUNNING or not self._lapsed(job_id, record, revision):
                return None
            elif record.runs >= MAX_RUNS:
                mark_finished(job, ABANDONED.format(runs=record.runs), now)
                record.owner = ""
                with contextlib.suppress(RevisionMismatch):
                    await bucket.update(job_key(job_id), record.encode(), revision)
                return None
            record.owner, record.heartbeat_ns = self.replica, now
            record.runs += 1
            try:
                revision = await bucket.update(job_key(job_id), record.encode(), revision)
            except RevisionMismatch:
                continue  # claimed, cancelled or renewed meanwhile: look again
            if was_queued:
                with contextlib.suppress(*BUCKET_UNAVAILABLE):  # a leftover entry is pruned
                    await self._dequeue(job_id)
            else:
                log.warning(
                    "replay job taken over",
                    job_id=job_id,
                    run=record.runs,
                    replayed=job.replayed,
                    next_sequence=job.next_sequence,
                )
            self._seen.pop(job_id, None)
            claim = NatsClaim(self, bucket, record=record, revision=revision)
            self._claims.add(claim)
            return claim
        return None

    async def close(self) -> None:
        renewals = [claim.stop_renewing() for claim in list(self._claims)]
        await asyncio.gather(*renewals, return_exceptions=True)


class NatsClaim:
    """A job this replica runs: its progress writes are compare-and-sets on the revision it
    last wrote (ClaimLost as soon as anyone else wrote the job), renewed in the background."""

    def __init__(self, jobs: NatsJobs, bucket: Bucket, *, record: Record, revision: int) -> None:
        self.jobs = jobs
        self.bucket = bucket
        self.record = record
        self.revision = revision
        self._lock = asyncio.Lock()
        self._in_flight: asyncio.Future[None] | None = None
        self._lost = False
        self._written = monotonic()
        self._renewal = asyncio.create_task(self._renew(), name=f"claim-{record.job.job_id}")

    @property
    def job(self) -> Job:
        return self.record.job

    async def progress(self) -> None:
        self.record.job.updated_ns = time.time_ns()
        await self._write()

    async def finish(self, error: str) -> None:
        self.stop_renewing()
        mark_finished(self.record.job, error, time.time_ns())
        self.record.owner = ""
        await self._write()

    async def release(self) -> None:
        """Hand the job back (this process stops): another replica takes it over at its next
        look, without waiting for the claim to lapse. One attempt: shutdown does not wait."""
        self.stop_renewing()
        self.record.owner = ""
        with contextlib.suppress(ClaimLost, JobsUnavailable):
            await self._write(retry=False)

    def stop_renewing(self) -> asyncio.Task[None]:
        """Stop the renewals; the task, to await when it must have ended."""
        self._renewal.cancel()
        self.jobs._claims.discard(self)
        return self._renewal

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.jobs.claim_ttl / 3)
            self.record.heartbeat_ns = time.time_ns()
            try:
                await self._write()
            except (ClaimLost, JobsUnavailable):
                return  # the runner finds out at its next progress write

    async def _write(self, *, retry: bool = True) -> None:
        """Compare-and-set the record. While NATS does not answer, retry for up to half the
        claim TTL since the last good write; past that the claim may have been taken over."""
        async with self._lock:
            while True:
                if self._lost:
                    raise ClaimLost(self.record.job.job_id)
                if self._in_flight is not None:  # a write whose caller was cancelled
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self._in_flight)
                self._in_flight = asyncio.ensure_future(self._put(self.record.encode()))
                try:
                    # Shielded: a cancelled caller must not lose the revision it wrote.
                    await asyncio.shield(self._in_flight)
                except RevisionMismatch:
                    self._lost = True
                    continue
                except BUCKET_UNAVAILABLE as exc:
                    if not retry or monotonic() - self._written > self.jobs.claim_ttl / 2:
                        self._lost = True
                        raise JobsUnavailable(str(exc) or type(exc).__name__) from exc
                    await asyncio.sleep(0.2)
                    continue
                finally:
                    if self._in_flight.done():
                        self._in_flight = None
                self._written = monotonic()
                return

    async def _put(self, value: bytes) -> None:
        key = job_key(self.record.job.job_id)
        self.revision = await self.bucket.update(key, value, self.revision)


async def _available(operation: Awaitable[T]) -> T:
    """``operation``'s result; JobsUnavailable when NATS cannot be reached."""
    try:
        return await operation
    except RevisionMismatch:
        raise JobsUnavailable("replay job store busy: a concurrent change") from None
    except BUCKET_UNAVAILABLE as exc:
        raise JobsUnavailable(f"replay job store unavailable: {exc or type(exc).__name__}") from exc
