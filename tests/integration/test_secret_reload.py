"""Secrets rotated without a restart: SIGHUP loads the config again and swaps webhook secrets
and admin tokens in one step, under load, with no 5xx; a reload that fails keeps the old
secrets and is counted (tap_vault_refresh_total{result})."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ensemble_tap.bus.embedded import free_port
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers
from tests.support.waiting import wait_ready

CLI = str(Path(sys.executable).parent / "ensemble-tap")
OLD, NEW = "old-signing-secret", "new-signing-secret"
OLD_ADMIN, NEW_ADMIN = "old-admin-token-0123456789", "new-admin-token-0123456789"


def write_config(
    path: Path, nats_url: str, port: int, secret: str, admin: str, workers: int
) -> None:
    path.write_text(
        f"data_dir: {path.parent / 'data'}\nlog_level: warning\n"
        f"server:\n  host: 127.0.0.1\n  port: {port}\n  workers: {workers}\n"
        f"  admin_token: {admin}\n"
        f"nats:\n  url: {nats_url}\n"
        f"providers:\n  acme:\n    secret: {secret}\n"
    )


@dataclass
class Service:
    url: str
    config: Path
    process: subprocess.Popen[bytes]
    nats_url: str
    port: int
    workers: int

    def reloads(self, result: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        found = re.search(rf'^tap_vault_refresh_total{{result="{result}"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    def rotate(self, secret: str, admin: str) -> None:
        write_config(self.config, self.nats_url, self.port, secret, admin, self.workers)

    def sighup_and_wait(self, result: str) -> None:
        before = self.reloads(result)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while self.reloads(result) < before + self.workers:  # every process reloads itself
            assert time.monotonic() < deadline, f"no {result} reload seen"
            time.sleep(0.05)


@pytest.fixture(params=[1, 2], ids=["one-process", "workers"])
def service(
    request: pytest.FixtureRequest, private_nats: NatsServer, tmp_path: Path
) -> Iterator[Service]:
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, private_nats.url, port, OLD, OLD_ADMIN, request.param)
    with subprocess.Popen(
        [CLI, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    ) as process:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        yield Service(url, config, process, private_nats.url, port, request.param)
        process.terminate()
        assert process.wait(30) == 0


def deliver(client: httpx.Client, secret: str, n: int) -> int:
    body = b'{"id":"%d"}' % n
    headers = generic_headers(secret, body, "deal.updated", f"evt-{secret}-{n}")
    return client.post("/webhooks/acme", content=body, headers=headers).status_code


@dataclass
class Load:
    """Deliveries signed with the old and the new secret, back to back, while a reload runs."""

    url: str
    answers: list[tuple[str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                for secret in (OLD, NEW):
                    self.answers.append((secret, deliver(client, secret, n)))
                n += 1


def test_sighup_swaps_webhook_secrets_under_load(service: Service) -> None:
    load = Load(service.url)
    thread = threading.Thread(target=load.run)
    thread.start()
    try:
        time.sleep(0.3)
        service.rotate(NEW, NEW_ADMIN)
        service.sighup_and_wait("success")
        with httpx.Client(base_url=service.url) as client:
            assert deliver(client, NEW, 10**6) == 202  # right after the reload
            assert deliver(client, OLD, 10**6 + 1) == 401
        time.sleep(0.3)
    finally:
        load.stop.set()
        thread.join(30)
    statuses = {status for _, status in load.answers}
    assert statuses <= {202, 401}, statuses  # never a 5xx
    for secret, accepted_first in ((OLD, True), (NEW, False)):
        sequence = [status == 202 for s, status in load.answers if s == secret]
        assert sequence[0] is accepted_first and sequence[-1] is not accepted_first
        if service.workers == 1:  # one process switches once; workers each at their moment
            switch = sequence.index(not accepted_first)
            assert all(v is not accepted_first for v in sequence[switch:]), secret


def test_sighup_swaps_admin_tokens_and_a_failed_reload_keeps_them(service: Service) -> None:
    def status(token: str) -> int:
        return httpx.get(
            f"{service.url}/admin/replay-dlq", headers={"X-Admin-Token": token}, timeout=5
        ).status_code

    assert (status(OLD_ADMIN), status(NEW_ADMIN)) == (200, 401)
    service.rotate(NEW, NEW_ADMIN)
    service.sighup_and_wait("success")
    assert (status(OLD_ADMIN), status(NEW_ADMIN)) == (401, 200)
    service.config.write_text("server: [not, a, mapping\n")  # broken: the reload fails
    service.sighup_and_wait("failure")
    assert status(NEW_ADMIN) == 200
    with httpx.Client(base_url=service.url) as client:
        assert deliver(client, NEW, 1) == 202
    assert service.process.poll() is None
