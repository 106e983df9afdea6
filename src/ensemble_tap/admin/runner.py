"""Runs replay jobs in the background: at most ``max_concurrent`` at a time, each bounded by
the job timeout. On shutdown, waiting jobs stay queued (a SQLite store runs them after the
restart) and running ones are marked failed."""

from __future__ import annotations

import asyncio

from ensemble_tap.admin.jobs import Job, JobRegistry, JobStatus
from ensemble_tap.admin.replay import Replayer
from ensemble_tap.config import format_duration
from ensemble_tap.observability import Metrics, get_logger

log = get_logger("ensemble_tap.admin.jobs")


class ReplayRunner:
    def __init__(
        self,
        *,
        registry: JobRegistry,
        replayer: Replayer,
        max_concurrent: int,
        timeout: float,
        metrics: Metrics,
    ) -> None:
        self.registry = registry
        self.replayer = replayer
        self.timeout = timeout
        self.metrics = metrics
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, job: Job) -> None:
        task = asyncio.create_task(self._run(job.job_id), name=f"replay-{job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, job_id: str) -> None:
        async with self._slots:
            job = self.registry.start(job_id)
            if job is None:
                return  # cancelled (or gone) while it waited for a slot
            self.metrics.admin_jobs_in_flight.inc()
            try:
                await self._execute(job)
            finally:
                self.metrics.admin_jobs_in_flight.dec()
                self.metrics.admin_jobs.labels(job.status.value).inc()

    async def _execute(self, job: Job) -> None:
        error = ""
        try:
            async with asyncio.timeout(self.timeout):
                if job.dry_run:
                    await self.replayer.dry_run(job)
                else:
                    await self.replayer.run(job, self.registry.update)
        except TimeoutError:
            error = f"replay timed out after {format_duration(self.timeout)}"
        except asyncio.CancelledError:
            self.registry.finish(job, "interrupted: the service stopped while this job was running")
            raise
        except Exception as exc:  # a job must end in a state, whatever went wrong
            error = str(exc) or type(exc).__name__
        self.registry.finish(job, error)
        fields = {
            "job_id": job.job_id,
            "replayed": job.replayed,
            "skipped": job.skipped,
            "failed": job.failed,
        }
        if job.status is JobStatus.FAILED:
            log.error("admin replay dlq job failed", **fields, error=error)
        elif job.dry_run:
            log.info("admin replay dlq dry-run completed", **fields, would_replay=job.would_replay)
        else:
            log.info("admin replay dlq job completed", **fields)
