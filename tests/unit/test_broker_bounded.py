"""The start-up budget holds even when a cancellation is lost (no server needed)."""

from __future__ import annotations

import asyncio

import pytest

from ensemble_tap.bus.connection import _bounded


async def _loses_the_first_cancellation(attempts: list[int]) -> None:
    """As nats-py's connect loop on Python 3.11, where a nested ``wait_for`` that completes
    as it is cancelled swallows the cancellation (gh-86296), and the loop retries."""
    swallowed = False
    while True:
        attempts.append(1)
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True


async def test_a_lost_cancellation_is_repeated_until_the_connect_loop_stops() -> None:
    attempts: list[int] = []
    bounded = asyncio.ensure_future(_bounded(_loses_the_first_cancellation(attempts), 0.05))
    done, _ = await asyncio.wait({bounded}, timeout=10)  # a hang fails; slowness does not
    assert done, "the connect loop outlived its budget"
    with pytest.raises(TimeoutError):
        bounded.result()


async def test_wait_for_alone_would_not_stop_it() -> None:
    """Why ``_bounded`` exists: the same loop under ``asyncio.wait_for`` keeps running."""
    attempts: list[int] = []
    waiting = asyncio.ensure_future(asyncio.wait_for(_loses_the_first_cancellation(attempts), 0.05))
    done, _ = await asyncio.wait({waiting}, timeout=0.5)
    assert not done
    waiting.cancel()  # the second cancellation ends it
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_connect_within_the_budget_returns_its_result() -> None:
    async def connects() -> None:
        await asyncio.sleep(0)

    await _bounded(connects(), 1.0)
    await _bounded(connects(), None)
