"""Waiting for a condition, the one way tests wait: poll it until it holds or a generous
deadline passes (a hang fails the test, slowness does not; no test asserts a duration)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx


async def eventually(
    check: Callable[[], Any],
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Until ``check()`` (a function or a coroutine function) returns something truthy, which
    is returned; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s (last: {result!r})")
        await asyncio.sleep(interval)


def until(
    check: Callable[[], Any],
    timeout: float = 30.0,
    *,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    """``eventually`` for code that is not async (blocking sleeps between checks)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s (last: {result!r})")
        time.sleep(interval)


async def status_of(client: httpx.AsyncClient, path: str, status: int) -> httpx.Response:
    """Until ``path`` answers ``status`` (readiness is cached for a second)."""

    last: list[httpx.Response] = []

    async def answered() -> bool:
        last[:] = [await client.get(path)]
        return last[0].status_code == status

    await eventually(answered, 15.0, what=f"{path} answering {status}")
    return last[0]


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until ``url``/readyz answers 200; fails with the process's output when it exits first."""

    def ready() -> bool:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise AssertionError(f"the service exited ({process.returncode}):\n{output}")
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    until(ready, timeout, what="the service ready (/readyz 200)")
