"""The README's quick start, as a new user runs it: `ensemble-tap serve` on the example config
(what `make run` does), then the README's own `ensemble-tap send` commands, copied from it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ensemble_tap.bus.embedded import free_port

ROOT = Path(__file__).parent.parent.parent
CLI = str(Path(sys.executable).parent / "ensemble-tap")


def readme_commands() -> list[str]:
    """The shell blocks of the README's "Send a signed webhook" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Send a signed webhook", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[str]:
    """`make run` in a fresh checkout: the example config, data under ./data; the port is a
    free one (8080 may be taken on a shared machine). Yields the port."""
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TAP_") and not key.endswith("_WEBHOOK_SECRET")
    }
    env.update(TAP_SERVER_PORT=str(port), TAP_SERVER_HOST="127.0.0.1", TAP_LOG_LEVEL="error")
    process = subprocess.Popen(
        [CLI, "serve", "--config", str(ROOT / "config.example.yaml")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"the service did not get ready (exit {process.poll()})")
        yield str(port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_readme_quick_start_sends_and_sees_the_event(make_run: str, tmp_path: Path) -> None:
    send, wrong_secret = readme_commands()
    assert "--wait --nats" in send and "ensemble-tap send acme" in send

    def run(command: str) -> subprocess.CompletedProcess[str]:
        command = command.replace(".venv/bin/ensemble-tap", CLI)
        command = command.replace("localhost:8080", f"localhost:{make_run}")
        return subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    accepted = run(send)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    lines = accepted.stdout.splitlines()
    assert lines[1].startswith("HTTP 202 Accepted")
    assert lines[3].startswith("arrived: evt_")
    assert lines[3].endswith(" in ensemble.tap.acme.deal.updated")
    assert '"type":"ensemble.tap.acme.deal.updated"' in lines[4]

    refused = run(wrong_secret)
    assert refused.returncode == 1
    assert "HTTP 401 Unauthorized" in refused.stdout
    assert refused.stderr == "error: expected HTTP 202, got 401\n"
