"""Replay jobs: the job record, the registry (idempotency, queue caps, retention, paging).

Lifecycle: queued → running → succeeded | failed, and queued → cancelled. Only finished jobs
are ever evicted (by TTL after their last change, or when more than ``max_jobs`` exist), so a
queued or running job can never vanish. Persistence is delegated to a JobStore.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Protocol

from ensemble_tap.admin.cursors import decode_job_cursor, encode_job_cursor
from ensemble_tap.events import format_time_ns

MAX_REPORTED_FAILURES = 20
INTERRUPTED = "interrupted: the service stopped while this job was running"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(slots=True, frozen=True, kw_only=True)
class ReplayRequest:
    """The normalised parameters of a replay; equal requests are idempotent re-sends."""

    effective_limit: int
    dry_run: bool
    provider: str = ""
    stage: str = ""
    tenant: str = ""
    # Only the record at this DLQ sequence (0: every record the filters match).
    sequence: int = 0


@dataclass(slots=True, frozen=True, kw_only=True)
class NewJob:
    """A create call: the replay asked for, and who asks, how and why (the job keeps it all)."""

    request: ReplayRequest
    requested_limit: int
    max_limit: int
    capped: bool
    idempotency_key: str
    creator_ip: str
    token_fingerprint: str
    request_id: str
    reason: str


@dataclass(slots=True, kw_only=True)
class Job:
    job_id: str
    status: JobStatus
    requested_limit: int
    effective_limit: int
    max_limit: int
    capped: bool
    dry_run: bool
    created_ns: int
    updated_ns: int
    provider: str = ""
    stage: str = ""
    tenant: str = ""
    sequence: int = 0  # only the record at this DLQ sequence (0: no such filter)
    started_ns: int = 0
    completed_ns: int = 0
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    would_replay: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    request_id: str = ""
    operator_reason: str = ""
    cancel_reason: str = ""
    error: str = ""
    idempotency_key: str = ""
    creator_ip: str = ""
    creator_token_fingerprint: str = ""
    # The DLQ sequence a resumed run starts from (a job taken over from a replica that
    # stopped, store backend nats); not part of the API view.
    next_sequence: int = 0

    @property
    def request(self) -> ReplayRequest:
        return ReplayRequest(
            effective_limit=self.effective_limit,
            dry_run=self.dry_run,
            provider=self.provider,
            stage=self.stage,
            tenant=self.tenant,
            sequence=self.sequence,
        )

    def to_json(self) -> dict[str, Any]:
        """The API view: unset times and empty texts are left out."""
        body: dict[str, Any] = {"job_id": self.job_id, "status": self.status.value}
        if self.requested_limit:
            body["requested_limit"] = self.requested_limit
        body |= {
            "effective_limit": self.effective_limit,
            "max_limit": self.max_limit,
            "capped": self.capped,
            "dry_run": self.dry_run,
        }
        filters = {"provider": self.provider, "stage": self.stage, "tenant": self.tenant}
        body |= {key: value for key, value in filters.items() if value}
        if self.sequence:
            body["sequence"] = self.sequence
        body["created_at"] = format_time_ns(self.created_ns)
        if self.started_ns:
            body["started_at"] = format_time_ns(self.started_ns)
        if self.completed_ns:
            body["completed_at"] = format_time_ns(self.completed_ns)
        body |= {"replayed": self.replayed, "skipped": self.skipped, "failed": self.failed}
        if self.dry_run:
            body["would_replay"] = self.would_replay
        if self.failures:
            body["failures"] = list(self.failures)
        texts = {
            "request_id": self.request_id,
            "operator_reason": self.operator_reason,
            "cancel_reason": self.cancel_reason,
            "error": self.error,
        }
        body |= {key: value for key, value in texts.items() if value}
        return body


JOB_FIELDS = tuple(f.name for f in fields(Job))


class JobStore(Protocol):
    """Where jobs survive a restart; ``memory`` keeps nothing."""

    def load(self) -> list[Job]: ...

    def save(self, job: Job) -> None: ...

    def delete(self, job_ids: Iterable[str]) -> None: ...

    def close(self) -> None: ...


class MemoryJobStore:
    def load(self) -> list[Job]:
        return []

    def save(self, job: Job) -> None:
        return None

    def delete(self, job_ids: Iterable[str]) -> None:
        return None

    def close(self) -> None:
        return None


class IdempotencyConflict(Exception):
    def __init__(self, job: Job) -> None:
        super().__init__("idempotency key already used for different replay parameters")
        self.job = job


class QueueLimitExceeded(Exception):
    def __init__(self, scope: str, count: int) -> None:
        super().__init__("replay queue limit exceeded for caller scope")
        self.scope = scope
        self.count = count


class NotCancellable(Exception):
    def __init__(self, job: Job) -> None:
        super().__init__("replay job cannot be cancelled once running or completed")
        self.job = job


@dataclass(slots=True, frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: str
    summary: dict[str, int]


@dataclass(slots=True, frozen=True, kw_only=True)
class Limits:
    ttl_seconds: float
    max_jobs: int
    max_queued_per_ip: int
    max_queued_per_token: int


class JobRegistry:
    def __init__(self, store: JobStore, limits: Limits) -> None:
        self.store = store
        self.limits = limits
        self._jobs: dict[str, Job] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        self._sequence = itertools.count(1)

    def load(self) -> list[Job]:
        """Load stored jobs; return the queued ones (to run again) and fail the ones that were
        running when the process stopped."""
        jobs = self.store.load()
        highest = 0
        for job in jobs:
            self._index(job)
            tail = job.job_id.rsplit("_", 1)[-1]
            highest = max(highest, int(tail) if tail.isdigit() else 0)
            if job.status is JobStatus.RUNNING:
                job.status = JobStatus.FAILED
                job.error = INTERRUPTED
                job.completed_ns = job.updated_ns = time.time_ns()
                self.store.save(job)
        self._sequence = itertools.count(highest + 1)
        self._evict()
        return sorted(
            (job for job in self._jobs.values() if job.status is JobStatus.QUEUED),
            key=lambda job: job.created_ns,
        )

    def create(self, order: NewJob) -> tuple[Job, bool]:
        """A new queued job, or (job, True) for an idempotent re-send of an equal request.

        Idempotency keys are scoped to the calling token, so one caller cannot fetch another's
        job by guessing its key.
        """
        self._evict()
        key = (order.token_fingerprint, order.idempotency_key)
        if order.idempotency_key and key in self._by_key:
            existing = self._jobs[self._by_key[key]]
            if existing.request != order.request:
                raise IdempotencyConflict(existing)
            return existing, True
        check_queue_caps(
            [
                (job.creator_ip, job.creator_token_fingerprint)
                for job in self._jobs.values()
                if job.status is JobStatus.QUEUED
            ],
            self.limits,
            creator_ip=order.creator_ip,
            token_fingerprint=order.token_fingerprint,
        )
        now = time.time_ns()
        job = new_job(f"replay_{now}_{next(self._sequence)}", now, order)
        self._index(job)
        self.store.save(job)
        return job, False

    def get(self, job_id: str) -> Job | None:
        self._evict()
        return self._jobs.get(job_id)

    def cancel(self, job_id: str, reason: str) -> Job | None:
        job = self.get(job_id)
        if job is None:
            return None
        mark_cancelled(job, reason, time.time_ns())
        self.store.save(job)
        return job

    def start(self, job_id: str) -> Job | None:
        """queued → running; None when the job is no longer queued (e.g. cancelled)."""
        job = self._jobs.get(job_id)
        if job is None or job.status is not JobStatus.QUEUED:
            return None
        job.status = JobStatus.RUNNING
        job.started_ns = job.updated_ns = time.time_ns()
        self.store.save(job)
        return job

    def update(self, job: Job) -> None:
        """Persist progress of a running job."""
        job.updated_ns = time.time_ns()
        self.store.save(job)

    def finish(self, job: Job, error: str = "") -> None:
        mark_finished(job, error, time.time_ns())
        self.store.save(job)

    def page(self, status: JobStatus | None, limit: int, cursor: str) -> Page:
        self._evict()
        return page_of(self._jobs.values(), status, limit=limit, cursor=cursor)

    def _index(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        if job.idempotency_key:
            self._by_key[(job.creator_token_fingerprint, job.idempotency_key)] = job.job_id

    def _evict(self) -> None:
        expired = evictable(self._jobs.values(), self.limits, time.time_ns())
        if not expired:
            return
        for job in expired:
            del self._jobs[job.job_id]
            self._by_key.pop((job.creator_token_fingerprint, job.idempotency_key), None)
        self.store.delete(job.job_id for job in expired)


def mark_cancelled(job: Job, reason: str, now_ns: int) -> None:
    """queued → cancelled; NotCancellable for a job in any other state."""
    if job.status is not JobStatus.QUEUED:
        raise NotCancellable(job)
    job.status = JobStatus.CANCELLED
    job.cancel_reason = reason
    job.error = "cancelled by operator" + (f": {reason}" if reason else "")
    job.completed_ns = job.updated_ns = now_ns


def mark_finished(job: Job, error: str, now_ns: int) -> None:
    """running → failed (with ``error``) or succeeded."""
    job.status = JobStatus.FAILED if error else JobStatus.SUCCEEDED
    job.error = error
    job.completed_ns = job.updated_ns = now_ns


def new_job(job_id: str, now_ns: int, order: NewJob) -> Job:
    """A queued job for ``order``, created at ``now_ns``."""
    request = order.request
    return Job(
        job_id=job_id,
        status=JobStatus.QUEUED,
        requested_limit=order.requested_limit,
        effective_limit=request.effective_limit,
        max_limit=order.max_limit,
        capped=order.capped,
        dry_run=request.dry_run,
        created_ns=now_ns,
        updated_ns=now_ns,
        provider=request.provider,
        stage=request.stage,
        tenant=request.tenant,
        sequence=request.sequence,
        request_id=order.request_id,
        operator_reason=order.reason,
        idempotency_key=order.idempotency_key,
        creator_ip=order.creator_ip,
        creator_token_fingerprint=order.token_fingerprint,
    )


def check_queue_caps(
    queued: Iterable[tuple[str, str]], limits: Limits, *, creator_ip: str, token_fingerprint: str
) -> None:
    """QueueLimitExceeded when the caller already has as many jobs waiting as allowed;
    ``queued`` holds (creator IP, token fingerprint) of every queued job. The IP cap is
    checked first; unknown callers ("") are never counted together; 0 disables a cap."""
    waiting = list(queued)
    per_ip = limits.max_queued_per_ip
    count = sum(1 for ip, _ in waiting if creator_ip and ip == creator_ip)
    if per_ip and count >= per_ip:
        raise QueueLimitExceeded("ip", count)
    per_token = limits.max_queued_per_token
    count = sum(1 for _, token in waiting if token_fingerprint and token == token_fingerprint)
    if per_token and count >= per_token:
        raise QueueLimitExceeded("token", count)


def page_of(jobs: Iterable[Job], status: JobStatus | None, *, limit: int, cursor: str) -> Page:
    """One page of ``jobs``, newest first (ties by job id), and a summary over all of them."""
    after = decode_job_cursor(cursor) if cursor else None
    every = list(jobs)
    summary = {state.value: 0 for state in JobStatus}
    for job in every:
        summary[job.status.value] += 1
    ordered = sorted(
        (job for job in every if status is None or job.status is status),
        key=lambda job: (job.created_ns, job.job_id),
        reverse=True,
    )
    if after is not None:
        ordered = [job for job in ordered if (job.created_ns, job.job_id) < after]
    page = ordered[:limit]
    last = page[-1] if len(ordered) > limit else None
    next_cursor = encode_job_cursor(last.created_ns, last.job_id) if last else ""
    return Page(page, next_cursor, summary)


def evictable(jobs: Iterable[Job], limits: Limits, now_ns: int) -> list[Job]:
    """The finished jobs to drop: past the TTL since their last change, then the oldest
    beyond ``max_jobs``. Queued and running jobs never are."""
    every = list(jobs)
    ttl_ns = limits.ttl_seconds * 1e9
    finished = sorted(
        (job for job in every if job.status in TERMINAL), key=lambda job: job.updated_ns
    )
    expired = [job for job in finished if now_ns - job.updated_ns > ttl_ns]
    overflow = len(every) - len(expired) - limits.max_jobs
    if overflow > 0:
        expired_ids = {job.job_id for job in expired}
        expired += [job for job in finished if job.job_id not in expired_ids][:overflow]
    return expired
