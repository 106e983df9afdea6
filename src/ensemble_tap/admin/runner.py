"""Runs replay jobs in the background: at most ``max_concurrent`` at a time, each bounded by
the job timeout. A job runs only once its store granted this runner the claim on it.

On shutdown, waiting jobs stay queued (a SQLite or NATS store runs them later) and running
ones are released: the local stores mark them failed, the NATS store hands them to another
replica. With a store several replicas share, the runner also looks every ``sweep_interval``
for jobs nobody runs (queued on a replica that stopped, or running on one that died)."""

from __future__ import annotations

import asyncio
import contextlib

from ensemble_tap.admin.jobs import TERMINAL, JobStatus
from ensemble_tap.admin.replay import Replayer
from ensemble_tap.admin.replay_jobs import ClaimLost, JobClaim, JobsUnavailable, ReplayJobs
from ensemble_tap.config import format_duration
from ensemble_tap.observability import Metrics, get_logger

log = get_logger("ensemble_tap.admin.jobs")


class ReplayRunner:
    def __init__(
        self,
        *,
        jobs: ReplayJobs,
        replayer: Replayer,
        max_concurrent: int,
        timeout: float,
        metrics: Metrics,
        sweep_interval: float = 10.0,
    ) -> None:
        self.jobs = jobs
        self.replayer = replayer
        self.timeout = timeout
        self.metrics = metrics
        self.sweep_interval = sweep_interval
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def submit(self, job_id: str) -> None:
        """Run the job when a slot is free (nothing when this runner already has it)."""
        if job_id in self._tasks:
            return
        task = asyncio.create_task(self._run(job_id), name=f"replay-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def start(self) -> None:
        """Once NATS is reached: run the stored queued jobs, and look for others' leftovers."""
        try:
            for job_id in await self.jobs.open():
                self.submit(job_id)
        except JobsUnavailable as exc:
            log.warning("replay jobs not loaded: retried by the sweep", error=str(exc))
        if self.jobs.shared and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="replay-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                for job_id in await self.jobs.runnable():
                    self.submit(job_id)
            except JobsUnavailable as exc:
                log.warning("replay job sweep failed", error=str(exc))

    async def _run(self, job_id: str) -> None:
        async with self._slots:
            try:
                claim = await self.jobs.claim(job_id)
            except JobsUnavailable as exc:
                log.warning("replay job not claimed", job_id=job_id, error=str(exc))
                return
            if claim is None:
                return  # cancelled, finished or run by another replica meanwhile
            self.metrics.admin_jobs_in_flight.inc()
            try:
                await self._execute(claim)
            finally:
                self.metrics.admin_jobs_in_flight.dec()

    async def _execute(self, claim: JobClaim) -> None:
        job = claim.job
        error = ""
        try:
            async with asyncio.timeout(self.timeout):
                if job.dry_run:
                    await self.replayer.dry_run(job)
                else:
                    await self.replayer.run(job, lambda _: claim.progress())
        except TimeoutError:
            error = f"replay timed out after {format_duration(self.timeout)}"
        except (ClaimLost, JobsUnavailable) as exc:
            log.warning("replay job stopped: its claim was lost", job_id=job.job_id, error=str(exc))
            return
        except asyncio.CancelledError:
            await claim.release()
            if job.status in TERMINAL:
                self.metrics.admin_jobs.labels(job.status.value).inc()
            raise
        except Exception as exc:  # a job must end in a state, whatever went wrong
            error = str(exc) or type(exc).__name__
        try:
            await claim.finish(error)
        except (ClaimLost, JobsUnavailable) as exc:
            log.warning("replay job end not recorded", job_id=job.job_id, error=str(exc))
            return
        self.metrics.admin_jobs.labels(job.status.value).inc()
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
