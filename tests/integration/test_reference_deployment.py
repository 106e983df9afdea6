"""A deployment of the reference moves over unchanged (issue #13, "Done when"): its config —
secrets as vault:// references, NATS through a .creds file — started with the reference's
command line (`-config FILE`, `-check-config`) against a real OpenBao and a nats-server in
operator/JWT mode, accepts a signed delivery sent with `ensemble-tap send`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ensemble_tap.bus.embedded import free_port
from tests.support.jetstream import stored_messages
from tests.support.nats_operator import Operator
from tests.support.nats_server import NatsServer
from tests.support.openbao import ROOT_TOKEN, OpenBao
from tests.support.waiting import wait_ready

BIN = Path(sys.executable).parent
SECRET = "whsec_reference_deployment"


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[OpenBao]:
    server = OpenBao(tmp_path / "bao").start()
    server.client().secrets.kv.v2.create_or_update_secret(
        path="homelab/ensemble-tap/runtime", secret={"stripe": SECRET, "admin-token": "a" * 32}
    )
    yield server
    server.stop()


def test_a_reference_config_starts_and_accepts_a_delivery(bao: OpenBao, tmp_path: Path) -> None:
    operator = Operator()
    account = operator.account("TAP")
    creds = account.write_creds(tmp_path / "tap.creds")
    nats = NatsServer(tmp_path / "nats", config=operator.server_config()).start()
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"server:\n  port: {port}\n"
        "  admin_token: vault://secret/data/homelab/ensemble-tap/runtime#admin-token\n"
        f"nats:\n  url: {nats.url}\n  creds_file: {creds}\n"
        f"vault:\n  address: {bao.address}\n  auth_method: token\n"
        "providers:\n  stripe:\n"
        "    secret: vault://secret/data/homelab/ensemble-tap/runtime#stripe\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VAULT_TOKEN": ROOT_TOKEN}
    try:
        checked = subprocess.run(
            [BIN / "ensemble-tap", "-config", str(config), "-check-config"],
            capture_output=True, text=True, env=env, check=False, timeout=60,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        with subprocess.Popen(
            [BIN / "ensemble-tap", "-config", str(config)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ) as service:  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, service)
            sent = subprocess.run(
                [BIN / "ensemble-tap", "send", "stripe", "--url", url],
                capture_output=True, text=True, check=False, timeout=60,
                env={**env, "TAP_SEND_SECRET": SECRET},
            )  # fmt: skip
            service.terminate()
            assert service.wait(30) == 0
        assert sent.returncode == 0, sent.stdout + sent.stderr
        # The stream is reachable with the account's credentials only.
        options = {"user_credentials": str(creds)}
        messages = asyncio.run(stored_messages(nats.url, "ENSEMBLE_TAP", **options))
    finally:
        nats.stop()
    assert len(messages) == 1
    assert messages[0].subject.startswith("ensemble.tap.stripe.")
