"""``http_connections.drain``: after a stop signal, requests newly routed here are served
until none has arrived for ``QUIET`` seconds (after ``server.shutdown_delay``), within
``server.shutdown_timeout``; in-flight requests get what is left of it."""

from __future__ import annotations

import asyncio
import time

from ensemble_tap.config.models import ServerConfig
from ensemble_tap.http_connections import (
    DRAIN_TICK,
    QUIET,
    ConnectionGuard,
    ConnectionLimits,
    drain,
)
from ensemble_tap.observability import Metrics


def a_guard() -> ConnectionGuard:
    return ConnectionGuard(ConnectionLimits.of(ServerConfig()), Metrics())


async def drained(guard: ConnectionGuard, *, delay: float, budget: float) -> tuple[float, float]:
    """How long the drain lasted, and the grace it left in-flight requests."""
    graces: list[float] = []
    started = time.monotonic()
    await drain(guard, delay=delay, budget=budget, stop=graces.append)
    assert len(graces) == 1
    return time.monotonic() - started, graces[0]


async def test_an_idle_process_stops_at_once_with_the_whole_budget() -> None:
    lasted, grace = await drained(a_guard(), delay=0, budget=10)
    assert lasted < DRAIN_TICK
    assert 9.5 < grace <= 10


async def test_requests_arriving_keep_it_serving_until_they_stop() -> None:
    guard = a_guard()

    async def routed_here_for(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            guard.last_request = guard.now  # what a request head does (serving.py)
            await asyncio.sleep(0.02)

    traffic = asyncio.create_task(routed_here_for(1.0))
    await asyncio.sleep(0)
    lasted, grace = await drained(guard, delay=0, budget=10)
    await traffic
    assert 1.0 + QUIET - DRAIN_TICK <= lasted < 1.0 + QUIET + 4 * DRAIN_TICK
    assert grace > 10 - lasted - DRAIN_TICK


async def test_a_head_stamped_before_the_signal_on_a_stale_clock_still_counts() -> None:
    guard = a_guard()
    # A request 0.05 s ago, stamped on a guard clock one sweep interval behind.
    guard.last_request = time.monotonic() - 0.05 - guard.interval
    lasted, _ = await drained(guard, delay=0, budget=10)
    assert QUIET - 0.05 - DRAIN_TICK <= lasted < QUIET + 3 * DRAIN_TICK


async def test_the_delay_is_served_even_when_quiet() -> None:
    lasted, grace = await drained(a_guard(), delay=0.4, budget=10)
    assert 0.4 <= lasted < 0.4 + DRAIN_TICK * 2
    assert grace > 9.5


async def test_the_budget_ends_a_drain_that_never_goes_quiet() -> None:
    guard = a_guard()

    async def routed_here_for_ever() -> None:
        while True:
            guard.last_request = guard.now
            await asyncio.sleep(0.02)

    traffic = asyncio.create_task(routed_here_for_ever())
    try:
        lasted, grace = await drained(guard, delay=0, budget=0.6)
    finally:
        traffic.cancel()
    assert 0.6 <= lasted < 0.6 + 3 * DRAIN_TICK
    assert grace == DRAIN_TICK  # in-flight requests still get a moment
