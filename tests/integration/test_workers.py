"""``server.workers``: several processes serve the port as one service."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ensemble_tap.bus.embedded import free_port
from tests.support.signing import generic_headers
from tests.support.waiting import until

CLI = str(Path(sys.executable).parent / "ensemble-tap")
TOKEN = "admin-token-for-workers-test"
SECRET = "s3cret"


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def worker_pids(self) -> list[int]:
        """The worker pids the primary logged at start-up."""
        started = [e for e in self.log_lines() if e.get("msg") == "workers started"]
        assert started, self.log.read_text()
        return [int(pid) for pid in started[-1]["pids"]]


def _post(url: str, event_id: str) -> int:
    body = json.dumps({"id": event_id}).encode()
    headers = generic_headers(SECRET, body, "deal.updated", event_id)
    with httpx.Client() as client:  # a new connection per request: any process may take it
        return client.post(f"{url}/webhooks/acme", content=body, headers=headers).status_code


def _accepted(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(
        r'tap_webhooks_received_total\{provider="acme",status="accepted"\} (\S+)', text
    )
    return float(match.group(1)) if match else 0.0


def _stored(url: str) -> int:
    """Events in the sink's table, asked through whichever process takes the request."""
    response = httpx.get(
        f"{url}/admin/events", params={"limit": 100}, headers={"X-Admin-Token": TOKEN}
    )
    assert response.status_code == 200, response.text
    return len(response.json()["events"])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
server:
  host: 127.0.0.1
  port: {port}
  workers: 3
  admin_token: {TOKEN}
  admin_allowed_cidrs: [127.0.0.1/32]
providers:
  acme:
    secret: {SECRET}
clickhouse:
  backend: embedded
  flush_interval: 100ms
""",
        encoding="utf-8",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CLI, "serve", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    service = Service(process, f"http://127.0.0.1:{port}", log)
    try:
        until(lambda: '"workers started"' in log.read_text() or process.poll() is not None)
        assert process.poll() is None, log.read_text()
        yield service
    finally:
        if process.poll() is None:
            process.terminate()  # not kill: the embedded nats-server would outlive it
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_workers_serve_webhooks_while_the_primary_is_paused(service: Service) -> None:
    pids = service.worker_pids()
    assert len(pids) == 2
    os.kill(service.process.pid, signal.SIGSTOP)
    try:
        statuses = [_post(service.url, f"paused_{i}") for i in range(10)]
    finally:
        os.kill(service.process.pid, signal.SIGCONT)
    assert statuses == [202] * 10
    statuses = [_post(service.url, f"running_{i}") for i in range(10)]
    assert statuses == [202] * 10
    # The sink runs in the primary only and stores what every process accepted, once.
    until(lambda: _stored(service.url) == 20)
    assert {_stored(service.url) for _ in range(6)} == {20}
    # Whichever process answers, /metrics counts the whole service.
    assert {_accepted(service.url) for _ in range(6)} == {20.0}
    assert httpx.get(f"{service.url}/readyz").status_code == 200
    for _ in range(6):  # one Date header, whichever process answers
        assert len(httpx.get(f"{service.url}/metrics").headers.get_list("date")) == 1
    for _ in range(6):  # probes and forwarded GET routes answer HEAD in every process
        head = httpx.head(f"{service.url}/metrics")
        assert (head.status_code, head.content) == (200, b"")
        assert int(head.headers["content-length"]) > 0


def test_admin_requests_reach_the_primary_from_any_process(service: Service) -> None:
    headers = {"X-Admin-Token": TOKEN}
    answers = [httpx.get(f"{service.url}/admin/dlq", headers=headers) for _ in range(8)]
    assert [a.status_code for a in answers] == [200] * 8
    assert all(a.json()["records"] == [] for a in answers)
    # The client address a worker forwards cannot be set by the client.
    spoofed = {**headers, "X-Ensemble-Tap-Peer": "10.9.9.9"}
    assert {
        httpx.get(f"{service.url}/admin/dlq", headers=spoofed).status_code for _ in range(8)
    } == {200}
    replay = httpx.post(
        f"{service.url}/admin/replay-dlq", headers=headers, json={"limit": 10, "dry_run": True}
    )
    assert replay.status_code == 202, replay.text
    job_id = replay.json()["job"]["job_id"]
    for _ in range(6):  # the job registry is the primary's, whoever answers
        found = httpx.get(f"{service.url}/admin/replay-dlq/{job_id}", headers=headers)
        assert found.status_code == 200, found.text


def test_a_dead_worker_is_restarted_and_sigterm_stops_every_process(service: Service) -> None:
    first, second = service.worker_pids()
    os.kill(first, signal.SIGKILL)
    until(lambda: any(e.get("msg") == "worker restarted" for e in service.log_lines()), 60)
    restarted = next(e for e in service.log_lines() if e.get("msg") == "worker restarted")
    assert restarted["worker"] == 1
    assert restarted["pid"] not in (first, second)
    exits = [e for e in service.log_lines() if e.get("msg") == "worker exited: restarting"]
    assert exits[0]["exit_code"] == -signal.SIGKILL
    children = Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children")
    statuses = [_post(service.url, f"after_restart_{i}") for i in range(10)]
    assert statuses == [202] * 10
    tree = set(map(int, children.read_text().split()))

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(60) == 0
    # multiprocessing's resource tracker leaves when it reads EOF from the exited primary:
    # give the children a moment, then none may be left.
    deadline = time.monotonic() + 10
    while [pid for pid in tree if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {pid: _cmdline(pid) for pid in tree if _alive(pid)}
    assert not left, f"child processes outlived the service: {left}"
    started = [e for e in service.log_lines() if e.get("msg") == "ensemble-tap started"]
    assert sorted(int(e.get("worker", 0)) for e in started) == [0, 1, 1, 2]  # worker 1 twice
    stopped = [e for e in service.log_lines() if e.get("msg") == "ensemble-tap stopped"]
    assert sorted(int(e.get("worker", 0)) for e in stopped) == [0, 1, 2]
