"""When the next cycle runs: first at start-up, the interval after a success, and after a
failure a real wait (backoff, Retry-After, circuit breaker) — docs/polling.md, "Failures"."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.observability import Metrics
from ensemble_tap.poller.engine import CycleStats
from ensemble_tap.poller.errors import PollError, RateLimited
from ensemble_tap.poller.metrics import PollerMetrics
from ensemble_tap.poller.scheduler import PollScheduler, RetryPolicy
from ensemble_tap.poller.status import StatusRegistry
from ensemble_tap.poller.targets import PollTarget, target_of
from tests.support.polling import FakeClock


def target(**values: Any) -> PollTarget:
    settings = ProviderConfig.model_validate(
        {"mode": "poll", "access_token": "t", "base_url": "https://x", **values}
    )
    return target_of("notion", settings)


class ScriptedEngine:
    """Stands in for PollEngine: each cycle takes ``duration`` and fails or succeeds."""

    def __init__(self, clock: FakeClock, outcomes: list[BaseException | None], duration: float):
        self.clock = clock
        self.outcomes = outcomes
        self.duration = duration
        self.starts: list[float] = []
        self.wanted = 0
        self.reached = asyncio.Event()
        self.last_stats = CycleStats()
        self.cursors: dict[str, int | None] = {}

    async def run_cycle(self) -> CycleStats:
        self.starts.append(self.clock.monotonic())
        if len(self.starts) >= self.wanted:
            self.reached.set()
        self.clock.advance(self.duration)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return self.last_stats


async def run_until(engine: ScriptedEngine, scheduler: PollScheduler, cycles: int) -> None:
    engine.wanted = cycles
    task = asyncio.create_task(scheduler.run())
    await engine.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def scheduler_for(
    t: PollTarget, outcomes: list[BaseException | None], duration: float = 1.0
) -> tuple[PollScheduler, ScriptedEngine, FakeClock]:
    clock = FakeClock()
    engine = ScriptedEngine(clock, outcomes, duration)
    registry = StatusRegistry(clock)
    metrics = PollerMetrics(Metrics().registry, registry)
    scheduler = PollScheduler(
        t,
        engine=engine,  # type: ignore[arg-type]
        status=registry.upsert(t),
        metrics=metrics,
        clock=clock,
        rng=random.Random(7),
    )
    return scheduler, engine, clock


async def test_first_cycle_at_start_then_every_interval() -> None:
    scheduler, engine, _ = scheduler_for(target(poll_interval="60s"), [], duration=5)
    await run_until(engine, scheduler, 3)
    assert engine.starts == [0.0, 60.0, 120.0]


async def test_an_overrunning_cycle_is_followed_at_once() -> None:
    scheduler, engine, _ = scheduler_for(target(poll_interval="10s"), [], duration=25)
    await run_until(engine, scheduler, 3)
    assert engine.starts == [0.0, 25.0, 50.0]


async def test_retry_after_really_delays_the_next_attempt() -> None:
    # The reference retried at max(wait, next tick); with interval 1s a 3s Retry-After held,
    # but a 90s one after a 60s interval also held — here the wait always holds as given.
    scheduler, engine, _ = scheduler_for(
        target(poll_interval="5m"), [RateLimited("notion", 3.0)], duration=0.5
    )
    await run_until(engine, scheduler, 3)
    assert engine.starts == [0.0, 3.5, 303.5]


async def test_backoff_is_shorter_than_the_interval_and_grows() -> None:
    failures: list[BaseException | None] = [PollError("x")] * 4
    scheduler, engine, _ = scheduler_for(target(poll_interval="1h", poll_failure_budget=0),
                                         failures, duration=0)  # fmt: skip
    await run_until(engine, scheduler, 5)
    gaps = [b - a for a, b in zip(engine.starts, engine.starts[1:], strict=False)]
    assert 0.25 <= gaps[0] <= 0.75
    assert all(0 < gap <= 15 for gap in gaps)
    assert sum(gaps) < 3600


async def test_circuit_opens_after_the_budget_then_a_probe_closes_it() -> None:
    failures: list[BaseException | None] = [PollError("down")] * 4
    t = target(poll_interval="10m", poll_failure_budget=3, poll_circuit_break_duration="2m")
    scheduler, engine, _ = scheduler_for(t, failures, duration=0)
    await run_until(engine, scheduler, 6)
    gaps = [b - a for a, b in zip(engine.starts, engine.starts[1:], strict=False)]
    assert gaps[0] < 1 and gaps[1] < 2
    assert gaps[2] == pytest.approx(120)  # third failure: the circuit opens
    assert gaps[3] == pytest.approx(120)  # the failed probe opens it again at once
    assert gaps[4] == pytest.approx(600)  # the probe succeeded: the normal interval
    assert scheduler.policy.circuit == "closed"
    assert scheduler.status.consecutive_failures == 0


def test_retry_policy_details() -> None:
    policy = RetryPolicy(target(poll_jitter_ratio=0.5), random.Random(1))
    for _ in range(50):  # jitter never makes a Retry-After shorter
        assert policy.on_failure(RateLimited("notion", 3.0)) >= 3.0
        policy.on_success()
    assert RetryPolicy(target(), random.Random(1)).on_failure(RateLimited("x", 0)) == 2.0
    plain = RetryPolicy(target(poll_failure_budget=0), random.Random(2))
    waits = [plain.on_failure(PollError("x")) for _ in range(20)]
    assert max(waits) <= 15 and plain.circuit == "closed"  # a budget of 0 never opens


def test_jitter_spreads_intervals() -> None:
    policy = RetryPolicy(target(poll_jitter_ratio=0.2), random.Random(3))
    values = {round(policy.interval(60), 3) for _ in range(20)}
    assert len(values) > 10 and all(48 <= v <= 72 for v in values)
    assert RetryPolicy(target(), random.Random(3)).interval(60) == 60
