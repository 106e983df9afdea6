"""``ensemble-tap serve`` as a separate process, for tests that kill and restart it.

The process gets a session of its own, so ``stop()`` can reach every process it started
(worker processes) even after its primary was killed; it dies with the test process too
(parent-death signal), so an interrupted run leaves nothing behind. The methods that wait
are coroutines: they run while a sender keeps sending on the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from ensemble_tap.lifetime import exit_with_parent
from tests.support.ports import stable_port
from tests.support.waiting import eventually

CLI = str(Path(sys.executable).parent / "ensemble-tap")


@dataclass
class ServiceProcess:
    """One ``serve`` command: ``config`` is written to ``workdir/<name>.yaml`` with
    ``server.host``/``server.port`` filled in; ``roles`` are ``--role`` options."""

    workdir: Path
    config: dict[str, Any]
    roles: tuple[str, ...] = ()
    name: str = "service"
    port: int = field(default_factory=stable_port)  # kept over a restart
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        server = {**self.config.get("server", {}), "host": "127.0.0.1", "port": self.port}
        self.config = {**self.config, "server": server}
        self.config_file.write_text(yaml.safe_dump(self.config), encoding="utf-8")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / f"{self.name}.yaml"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def start(self) -> ServiceProcess:
        """Spawn the process (one more run appends to the same log); does not wait."""
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [CLI, "serve", "--config", str(self.config_file)]
        for role in self.roles:
            command += ["--role", role]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=exit_with_parent,
            )
        return self

    async def wait_status(self, path: str, status: int = 200, timeout: float = 60) -> None:
        """Poll ``path`` until it answers ``status``; fails with the log when the process
        exits or the deadline passes."""
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:

            async def answered() -> bool:
                if not self.alive():
                    raise AssertionError(f"{self.name} exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get(path)).status_code == status
                return False

            try:
                await eventually(answered, timeout, what=f"{self.name}: {path} {status}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    async def wait_ready(self, timeout: float = 60) -> None:
        await self.wait_status("/readyz", 200, timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def group(self) -> list[int]:
        """Living (not zombie) processes of the session started by the last ``start()``:
        the primary and its workers, also after the primary was killed."""
        if self.process is None:
            return []
        return session_members(self.process.pid)

    async def kill(self) -> None:
        """SIGKILL the primary only (as an OOM kill or ``kill -9``): its workers get SIGTERM
        from the parent-death signal and finish what they were doing. Returns once every
        process of the session is gone (bounded)."""
        assert self.process is not None
        self.process.kill()
        await asyncio.to_thread(self.process.wait)
        await self._wait_group_gone(60)

    async def stop(self) -> int | None:
        """SIGTERM and wait for a clean exit; SIGKILL whatever is left after a bound.
        Returns the primary's exit code (None when it was not running)."""
        if self.process is None:
            return None
        code: int | None = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                code = await asyncio.to_thread(self.process.wait, 60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
        self.kill_leftovers()
        return code

    def kill_leftovers(self) -> None:
        """SIGKILL every process left in the session (teardown of last resort)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.group():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def _wait_group_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while left := self.group():
            if time.monotonic() > deadline:
                self.kill_leftovers()
                raise AssertionError(f"{self.name}: processes outlived the primary: {left}")
            await asyncio.sleep(0.05)


def session_members(session: int) -> list[int]:
    """Pids of the living processes whose session id is ``session``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (field 3 of stat), fields[3] the session id (field 6).
        if fields[0] != "Z" and int(fields[3]) == session:
            members.append(int(entry.name))
    return members
