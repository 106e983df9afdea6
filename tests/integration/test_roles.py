"""``serve --role``: processes running a part of the service each, meeting in NATS."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ensemble_tap.bus.embedded import free_port
from tests.integration.conftest import StartApp
from tests.support.signing import generic_headers

CLI = str(Path(sys.executable).parent / "ensemble-tap")
TOKEN = "admin-token-for-roles-test"
ACME = {"acme": {"secret": "s"}}


def _webhook(url: str, event_id: str) -> int:
    body = b'{"id":"deal_1"}'
    headers = generic_headers("s", body, "deal.updated", event_id)
    return httpx.post(f"{url}/webhooks/acme", content=body, headers=headers).status_code


def test_an_ingress_process_runs_nothing_else(start_app: StartApp) -> None:
    app = start_app(
        roles=frozenset({"ingress"}),
        providers=ACME,
        server={"admin_token": TOKEN},
        clickhouse={"backend": "embedded"},
    )
    assert (app.app.sink, app.app.pollers, app.app.admin) == (None, None, None)
    assert _webhook(app.url, "evt_ingress_only") == 202
    assert httpx.get(f"{app.url}/admin/dlq", headers={"X-Admin-Token": TOKEN}).status_code == 404
    assert httpx.get(f"{app.url}/readyz").status_code == 200


def test_a_sink_process_stores_what_an_ingress_process_accepted(start_app: StartApp) -> None:
    sink = start_app(
        roles=frozenset({"sink"}),
        providers=ACME,
        clickhouse={"backend": "embedded", "flush_interval": "100ms"},
    )
    front = start_app(
        roles=frozenset({"ingress", "admin"}), providers=ACME, server={"admin_token": TOKEN}
    )
    assert _webhook(sink.url, "evt_wrong_door") == 404  # no webhook routes without ingress
    assert _webhook(front.url, "evt_split") == 202
    deadline = time.monotonic() + 30
    while sink.metric("tap_clickhouse_rows_inserted_total") < 1:
        assert time.monotonic() < deadline, "the sink process did not store the event"
        time.sleep(0.05)
    answer = httpx.get(f"{front.url}/admin/events", headers={"X-Admin-Token": TOKEN})
    assert answer.status_code == 404
    assert "admin role" in answer.json()["error"]


def test_serve_rejects_an_unknown_role_and_workers_without_ingress(tmp_path: Path) -> None:
    bad = subprocess.run([CLI, "serve", "--role", "ingres"], capture_output=True, timeout=60)
    assert bad.returncode == 2
    message = " ".join(re.sub(r"[│╭╮╰╯─]", " ", bad.stderr.decode()).split())  # unboxed
    assert "unknown role ingres: choose from ingress, poller, sink, admin" in message
    config = tmp_path / "c.yaml"
    config.write_text(f"data_dir: {tmp_path}\nserver:\n  port: {free_port()}\n  workers: 2\n")
    result = subprocess.run(
        [CLI, "serve", "--config", str(config), "--role", "poller"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert b"server.workers > 1 needs the ingress role" in result.stdout
