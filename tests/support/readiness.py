"""Waiting for a service started as a subprocess to become ready."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until ``url``/readyz answers 200; fails with the process's output when it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise AssertionError(f"the service exited ({process.returncode}):\n{output}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the service was not ready within {timeout:g} s")
        time.sleep(0.1)
