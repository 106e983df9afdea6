"""``ensemble-tap serve`` as a user runs it: embedded nats-server, signals, exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ensemble_tap.bus.embedded import free_port
from tests.support.signing import generic_headers
from tests.support.waiting import wait_ready

CLI = str(Path(sys.executable).parent / "ensemble-tap")


def _write_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
server:
  host: 127.0.0.1
  port: {port}
providers:
  acme:
    secret: ${{ACME_SECRET}}
""",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    config = _write_config(tmp_path, port)
    process = subprocess.Popen(
        [CLI, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ACME_SECRET": "s3cret"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield process, url, tmp_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_with_embedded_nats_accepts_and_stops_cleanly(
    serve: tuple[subprocess.Popen[bytes], str, Path], stop_signal: signal.Signals
) -> None:
    process, url, tmp_path = serve
    body = b'{"id":"deal_1"}'
    response = httpx.post(
        f"{url}/webhooks/acme",
        content=body,
        headers=generic_headers("s3cret", body, "deal.updated", "evt_cli"),
    )
    assert response.status_code == 202
    # A client closing its connection mid-response must not kill the service (SIGPIPE).
    status = Path(f"/proc/{process.pid}/status").read_text()
    ignored = int(
        next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16
    )
    assert ignored & (1 << (signal.SIGPIPE - 1)), "serve must ignore SIGPIPE"
    nats_url = (tmp_path / "data" / "nats" / "url").read_text().strip()
    assert nats_url.startswith("nats://127.0.0.1:")

    tail = subprocess.run(
        [CLI, "tail", "--all", "--count", "1", "--config", str(tmp_path / "config.yaml")],
        capture_output=True,
        timeout=30,
        env={**os.environ, "ACME_SECRET": "s3cret"},
    )
    assert tail.returncode == 0, tail.stderr
    assert b'"id":"evt_cli"' in tail.stdout

    rejected = httpx.post(f"{url}/webhooks/acme", content=body, headers={"X-Signature": "00"})
    assert rejected.status_code == 401
    dead = subprocess.run(
        [CLI, "tail", "--dlq", "--all", "--count", "1", "--config", str(tmp_path / "config.yaml")],
        capture_output=True,
        timeout=30,
        env={**os.environ, "ACME_SECRET": "s3cret"},
    )
    assert dead.returncode == 0, dead.stderr
    assert dead.stdout.startswith(b"ensemble.dlq.verify.acme {")

    process.send_signal(stop_signal)
    assert process.wait(30) == 0
    output = process.stdout.read().decode() if process.stdout else ""
    assert '"msg":"ensemble-tap stopped"' in output
    assert "s3cret" not in output  # no secrets in logs
    assert not (tmp_path / "data" / "nats" / "url").exists()
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "data" / "nats")], capture_output=True)
    assert leftover.returncode == 1, "embedded nats-server still running"


def test_events_survive_a_restart_of_the_embedded_server(tmp_path: Path) -> None:
    port = free_port()
    config = _write_config(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ACME_SECRET": "s3cret"}
    for event_id in ("evt_a", "evt_b"):
        process = subprocess.Popen(
            [CLI, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, env=env
        )
        try:
            wait_ready(url, process)
            body = f'{{"id":"{event_id}"}}'.encode()
            headers = generic_headers("s3cret", body, "deal.updated", event_id)
            assert httpx.post(f"{url}/webhooks/acme", content=body, headers=headers).is_success
        finally:
            process.terminate()
            assert process.wait(30) == 0

    process = subprocess.Popen(
        [CLI, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, env=env
    )
    try:
        wait_ready(url, process)
        tail = subprocess.run(
            [CLI, "tail", "--all", "--count", "2", "--config", str(config)],
            capture_output=True,
            timeout=30,
            env=env,
        )
    finally:
        process.terminate()
        process.wait(30)
    assert tail.stdout.count(b'"source":"tap/acme/default"') == 2


def test_serve_reports_a_bad_config_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("nats:\n  stream_storage: disk\n")
    result = subprocess.run([CLI, "serve", "--config", str(config)], capture_output=True)
    assert result.returncode == 1
    assert b"nats.stream_storage" in result.stderr


def test_serve_fails_when_nats_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"nats:\n  url: nats://127.0.0.1:{free_port()}\n  startup_timeout: 1s\n"
        f"server:\n  port: {free_port()}\n"
    )
    result = subprocess.run(
        [CLI, "serve", "--config", str(config)], capture_output=True, timeout=30
    )
    assert result.returncode == 1
    assert b"nats not reachable" in result.stdout


def test_serves_probes_while_nats_is_unreachable_and_stops_cleanly(tmp_path: Path) -> None:
    """No ``nats.startup_timeout``: the service keeps trying to reach NATS while /livez
    answers 200 and /readyz 503; a signal then stops it promptly with exit 0."""
    port = free_port()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"nats:\n  url: nats://127.0.0.1:{free_port()}\n"
        f"server:\n  host: 127.0.0.1\n  port: {port}\n"
    )
    process = subprocess.Popen(
        [CLI, "serve", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    for line in process.stdout:  # wait until it is trying to reach NATS
        if b"nats" in line and b"error" in line:
            break
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "no listener while NATS is unreachable"
                time.sleep(0.05)
        assert live.status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        assert ready.status_code == 503
        assert "connecting to nats" in ready.json()["error"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        process.stdout.close()
