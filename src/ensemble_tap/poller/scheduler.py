"""When a target's next cycle runs.

* The first cycle runs at start-up (the reference waited one interval).
* After a success the next cycle starts one interval after the last one started (a cycle that
  overran starts the next at once); with ``poll_jitter_ratio`` every interval is jittered, so
  targets with equal intervals do not fire in lock-step.
* After a failure the next attempt waits — really waits, whatever the interval — for the
  upstream's ``Retry-After`` (429), else for an exponential backoff (0.5 s × 1.5ⁿ, ±50 %,
  at most 15 s). Jitter applies to the wait, but never shortens a ``Retry-After``.
* ``poll_failure_budget`` consecutive failures open the circuit: the next attempt waits at
  least ``poll_circuit_break_duration``, and is a single probe (half-open). The probe's success
  closes the circuit; its failure opens it again at once. A budget of 0 never opens it.
* Operators' controls (``POST /admin/pollers/…``): ``request_run`` starts the next cycle at
  once (after the one in flight), whatever the wait; a pause (``TargetControl``, read from the
  state store before every cycle) holds every cycle until it is lifted, and an in-flight cycle
  finishes. With state shared by replicas the pause is read again every ``CONTROL_RECHECK``
  seconds while paused, so a resume on another replica is seen here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable

from ensemble_tap.observability import get_logger
from ensemble_tap.poller.clock import Clock
from ensemble_tap.poller.engine import CycleStats, PollEngine, describe_error
from ensemble_tap.poller.errors import RateLimited
from ensemble_tap.poller.http import DEFAULT_RETRY_AFTER
from ensemble_tap.poller.metrics import PollerMetrics
from ensemble_tap.poller.status import PollerStatus
from ensemble_tap.poller.targets import PollTarget
from ensemble_tap.state.base import StateError, TargetControl

BACKOFF_INITIAL = 0.5
BACKOFF_MULTIPLIER = 1.5
BACKOFF_RANDOMIZATION = 0.5
BACKOFF_MAX = 15.0
MIN_WAIT = 0.01
# A cycle saves its progress page by page, so cutting a hung one short loses nothing.
MIN_CYCLE_TIMEOUT = 600.0
# The results of tap_poller_records_total (``known``: webhook+poll, a webhook brought it).
RECORD_RESULTS = ("created", "updated", "deleted", "unchanged", "skipped", "dead_lettered", "known")
# State shared by replicas: how often a paused target reads its pause again.
CONTROL_RECHECK = 5.0
ControlSource = Callable[[], Awaitable[TargetControl | None]]
log = get_logger("ensemble_tap.poller")


class RetryPolicy:
    """Failure waits and the circuit breaker of one target."""

    def __init__(self, target: PollTarget, rng: random.Random) -> None:
        self.budget = target.failure_budget
        self.circuit_break = target.circuit_break
        self.jitter = target.jitter_ratio
        self.rng = rng
        self.failures = 0
        self.circuit = "closed"
        self._backoff = BACKOFF_INITIAL

    def before_attempt(self) -> None:
        if self.circuit == "open":
            self.circuit = "half_open"

    def on_success(self) -> None:
        self.failures = 0
        self.circuit = "closed"
        self._backoff = BACKOFF_INITIAL

    def on_failure(self, error: BaseException) -> float:
        """The wait before the next attempt."""
        self.failures += 1
        if isinstance(error, RateLimited):
            wait = error.retry_after if error.retry_after > 0 else DEFAULT_RETRY_AFTER
            if self.jitter > 0:  # the server named the earliest time: only ever later
                wait *= 1 + self.jitter * self.rng.random()
        else:
            wait = self._next_backoff()
            if self.jitter > 0:
                wait *= 1 + self.jitter * self.rng.uniform(-1, 1)
        wait = max(wait, MIN_WAIT)
        if self.circuit == "half_open" or (self.budget > 0 and self.failures >= self.budget):
            self.circuit = "open"
            self._backoff = BACKOFF_INITIAL
            wait = max(wait, self.circuit_break)
        return wait

    def _next_backoff(self) -> float:
        value = self._backoff * (1 + BACKOFF_RANDOMIZATION * self.rng.uniform(-1, 1))
        self._backoff = min(self._backoff * BACKOFF_MULTIPLIER, BACKOFF_MAX)
        return min(value, BACKOFF_MAX)

    def interval(self, base: float) -> float:
        if self.jitter <= 0:
            return base
        return base * (1 + self.jitter * self.rng.uniform(-1, 1))


class PollScheduler:
    def __init__(
        self,
        target: PollTarget,
        *,
        engine: PollEngine,
        status: PollerStatus,
        metrics: PollerMetrics,
        clock: Clock,
        rng: random.Random | None = None,
        gate: asyncio.Semaphore | None = None,
        control: ControlSource | None = None,
        recheck: float | None = None,
    ) -> None:
        """``control`` reads the target's pause from the state store (before every cycle);
        ``recheck``: while paused, read it again this often (None: only when woken)."""
        self.target = target
        self.engine = engine
        self.status = status
        self.metrics = metrics
        self.clock = clock
        # Jitter for waits, not a secret: the standard generator is right here.
        self.policy = RetryPolicy(target, rng or random.Random())  # nosec B311
        self.gate = gate
        self.cycle_timeout = max(MIN_CYCLE_TIMEOUT, 10 * target.interval)
        self._labels = (target.provider, target.tenant_id)
        self._control = control
        self.recheck = recheck
        self._wake = asyncio.Event()
        self._run_now = False

    @property
    def paused(self) -> TargetControl | None:
        return self.status.control

    def set_control(self, control: TargetControl | None) -> None:
        """Pause (or lift the pause) here at once; the caller stored it."""
        self.status.control = control
        self._wake.set()

    def request_run(self) -> None:
        """Start the next cycle now (after the one in flight, if any)."""
        self._run_now = True
        self._wake.set()

    async def run(self) -> None:
        """Cycle until cancelled."""
        next_at = self.clock.monotonic()
        while True:
            await self._wait(next_at)
            await self._read_control()
            if self.paused is not None:
                continue  # paused since the wait ended: wait again, nothing polled
            next_at = await self.run_once()

    async def _read_control(self) -> None:
        if self._control is None:
            return
        try:
            self.status.control = await self._control()
        except StateError as exc:  # keep the pause as last read; the cycle reports the store
            log.warning("poller control not readable", provider=self.target.provider,
                        tenant=self.target.tenant_id, error=str(exc))  # fmt: skip

    async def _wait(self, moment: float) -> None:
        """Until ``moment``, a run request, or (paused) the end of the pause."""
        while True:
            self._wake.clear()  # before the checks: a wake-up after them is not lost
            if self.paused is not None:
                self.status.next_run_ns = None
                if self.recheck is None:
                    await self._wake.wait()
                elif not await self._sleep_or_wake(self.recheck):
                    await self._read_control()
                continue
            if self._run_now:
                self._run_now = False
                await asyncio.sleep(0)
                return
            delay = moment - self.clock.monotonic()
            if delay <= 0:
                await asyncio.sleep(0)  # overran: run at once, but let other tasks in first
                return
            if not await self._sleep_or_wake(delay):
                return

    async def _sleep_or_wake(self, delay: float) -> bool:
        """Sleep ``delay`` on the clock unless woken first; True when woken."""
        waker = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        try:
            await asyncio.wait((waker, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waker, sleeper):
                task.cancel()
            await asyncio.gather(waker, sleeper, return_exceptions=True)
        return waker.done() and not waker.cancelled()

    async def run_once(self) -> float:
        """Run one attempt now; return the monotonic time of the next one."""
        self.policy.before_attempt()
        self.status.circuit = self.policy.circuit
        async with self._slot():
            started = self.clock.monotonic()
            self.status.mark_run(self.clock.now_ns())
            self.status.cycle_running = True
            try:
                async with asyncio.timeout(self.cycle_timeout):
                    await self.engine.run_cycle()
            except asyncio.CancelledError:
                self.status.cycle_running = False
                raise
            except Exception as exc:
                wait = self.policy.on_failure(exc)
                self._finished(exc)
                next_at = self.clock.monotonic() + wait
            else:
                self.policy.on_success()
                self._finished(None)
                next_at = max(started + self.policy.interval(self.target.interval),
                              self.clock.monotonic())  # fmt: skip
        self.status.circuit = self.policy.circuit
        self.status.next_run_ns = self.clock.now_ns() + int(
            max(0.0, next_at - self.clock.monotonic()) * 1e9
        )
        return next_at

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self.gate is None:
            yield
            return
        async with self.gate:
            yield

    def _finished(self, error: BaseException | None) -> None:
        self.status.cycle_running = False
        stats = self.engine.last_stats
        now = self.clock.now_ns()
        self.status.checkpoints = dict(self.engine.cursors)
        self.status.last_cycle = stats.to_json()
        metrics = self.metrics
        provider, tenant = self._labels
        metrics.requests.labels(provider, tenant).inc(stats.requests)
        metrics.pages.labels(provider, tenant).inc(stats.pages)
        metrics.cycle_duration.labels(provider).observe(stats.duration)
        for result in RECORD_RESULTS:
            count = getattr(stats, result)
            if count:
                metrics.records.labels(provider, result).inc(count)
        fields = _log_fields(self.target, stats)
        if stats.truncated:
            metrics.truncated.labels(provider, tenant).inc()
            log.warning("poller fetch capped by budget", **fields)
        if error is None:
            self.status.mark_success(now)
            metrics.cycles.labels(provider, tenant, "success").inc()
            log.info("poll cycle finished", **fields)
        else:
            message = describe_error(error)
            self.status.mark_error(now, message)
            metrics.cycles.labels(provider, tenant, "failure").inc()
            log.warning(
                "poll cycle failed",
                **fields,
                error=message,
                consecutive_failures=self.status.consecutive_failures,
                circuit=self.policy.circuit,
            )


def _log_fields(target: PollTarget, stats: CycleStats) -> dict[str, object]:
    return {
        "provider": target.provider,
        "tenant": target.tenant_id,
        "fetched_entities": stats.fetched,
        "published_entities": stats.published,
        "created": stats.created,
        "updated": stats.updated,
        "deleted": stats.deleted,
        "unchanged": stats.unchanged,
        "dead_lettered": stats.dead_lettered,
        "duplicates": stats.duplicates,
        "known": stats.known,
        "fetch_requests": stats.requests,
        "fetch_pages": stats.pages,
        "truncated": stats.truncated,
        "duration_ms": round(stats.duration * 1000, 1),
    }
