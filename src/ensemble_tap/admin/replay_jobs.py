"""Replay jobs as the admin routes and the runner see them, whatever the store.

``ReplayJobs`` lists, reads, creates and cancels jobs and hands a queued job to one runner
(``claim``); the ``JobClaim`` it returns records that job's progress, ends it, or gives it
back when the process stops. ``LocalJobs`` serves them from this process's ``JobRegistry``
(store backends ``memory`` and ``sqlite``); ``admin/nats_jobs.py`` from a JetStream KV
bucket every replica shares (backend ``nats``).
"""

from __future__ import annotations

from typing import Protocol

from ensemble_tap.admin.jobs import INTERRUPTED, Job, JobRegistry, JobStatus, NewJob, Page


class JobsUnavailable(Exception):
    """The job store cannot be reached now (the admin API answers 503)."""


class ClaimLost(Exception):
    """The job's record changed under its runner (another replica took it over): the runner
    stops at once and writes nothing more."""


class JobClaim(Protocol):
    """A running job, held by this process's runner."""

    @property
    def job(self) -> Job: ...

    async def progress(self) -> None:
        """Record the job's counters; ClaimLost when another runner holds it now."""

    async def finish(self, error: str) -> None:
        """running → succeeded, or failed with ``error``."""

    async def release(self) -> None:
        """The process stops while the job runs: end it, or hand it to another replica."""


class ReplayJobs(Protocol):
    # True when several processes share the store: the runner then polls ``runnable``.
    shared: bool

    async def open(self) -> list[str]:
        """At start: the ids of the queued jobs to run, oldest first."""

    async def runnable(self) -> list[str]:
        """Jobs no runner holds: queued ones and running ones whose runner stopped."""

    async def create(self, order: NewJob) -> tuple[Job, bool]:
        """A new queued job, or (job, True) for an idempotent re-send (JobRegistry.create)."""

    async def get(self, job_id: str) -> Job | None: ...

    async def cancel(self, job_id: str, reason: str) -> Job | None:
        """queued → cancelled; None for an unknown job, NotCancellable for a started one."""

    async def page(self, status: JobStatus | None, limit: int, cursor: str) -> Page: ...

    async def claim(self, job_id: str) -> JobClaim | None:
        """The job, now running here; None when it is not this runner's to run."""

    async def close(self) -> None: ...


class LocalClaim:
    def __init__(self, registry: JobRegistry, job: Job) -> None:
        self.registry = registry
        self._job = job

    @property
    def job(self) -> Job:
        return self._job

    async def progress(self) -> None:
        self.registry.update(self._job)

    async def finish(self, error: str) -> None:
        self.registry.finish(self._job, error)

    async def release(self) -> None:
        # Nobody else can run it: a restarted process would not know where it stopped.
        self.registry.finish(self._job, INTERRUPTED)


class LocalJobs:
    """The jobs of this process (``memory``; ``sqlite`` keeps them over a restart)."""

    shared = False

    def __init__(self, registry: JobRegistry) -> None:
        self.registry = registry

    async def open(self) -> list[str]:
        return [job.job_id for job in self.registry.load()]

    async def runnable(self) -> list[str]:
        return []

    async def create(self, order: NewJob) -> tuple[Job, bool]:
        return self.registry.create(order)

    async def get(self, job_id: str) -> Job | None:
        return self.registry.get(job_id)

    async def cancel(self, job_id: str, reason: str) -> Job | None:
        return self.registry.cancel(job_id, reason)

    async def page(self, status: JobStatus | None, limit: int, cursor: str) -> Page:
        return self.registry.page(status, limit, cursor)

    async def claim(self, job_id: str) -> JobClaim | None:
        job = self.registry.start(job_id)
        return None if job is None else LocalClaim(self.registry, job)

    async def close(self) -> None:
        self.registry.store.close()
