"""scripts/*.sh: shellcheck clean; smoke.sh against a served instance; smoke-onboarding.sh
with a stand-in ``kubectl`` whose port-forward is a plain TCP relay (no cluster here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helm_python import chart as helm

from ensemble_tap.bus.embedded import free_port
from ensemble_tap.config import load_config
from ensemble_tap.providers import REGISTRY
from tests.integration.conftest import StartApp, start_app  # noqa: F401 (fixture)
from tests.support.nats_server import NatsServer
from tests.support.sink import FAST

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
BIN = Path(sys.executable).parent
SECRET = "acme-smoke-secret"
ADMIN_TOKEN = "smoke-admin-token-0123456789"


def run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": f"{env.pop('PATH_PREFIX', '')}{BIN}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "ENSEMBLE_TAP": str(BIN / "ensemble-tap"),
        **env,
    }
    return subprocess.run(
        [SCRIPTS / script, *args], capture_output=True, text=True, env=environment,
        check=False, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_shellcheck_finds_nothing(script: str) -> None:
    result = subprocess.run(
        [BIN / "shellcheck", SCRIPTS / script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


@pytest.fixture
def served(start_app: StartApp) -> str:  # noqa: F811
    return start_app(providers={"acme": {"secret": SECRET}}).url


def test_smoke_sends_and_sees_the_event_arrive(served: str, private_nats: NatsServer) -> None:
    result = run(
        "smoke.sh", "--url", served, "--provider", "acme", "--secret", SECRET,
        "--nats", private_nats.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "202" in result.stdout
    assert '"type":"ensemble.tap.acme.' in result.stdout.replace(" ", "")


def test_smoke_takes_the_secret_from_the_environment_and_fails_on_a_wrong_one(
    served: str, private_nats: NatsServer
) -> None:
    result = run(
        "smoke.sh", "--url", served, "--provider", "acme", "--nats", private_nats.url,
        TAP_SEND_SECRET="not-the-secret",
    )  # fmt: skip
    assert result.returncode == 1
    assert "401" in result.stdout


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("smoke.sh", ["--url", "http://x"]),
        ("smoke.sh", ["--bogus"]),
        ("smoke-onboarding.sh", ["--provider", "acme"]),
    ],
)
def test_missing_or_unknown_arguments_exit_2_with_the_usage(script: str, args: list[str]) -> None:
    result = run(script, *args)
    assert result.returncode == 2
    assert "--provider" in result.stderr + result.stdout


KUBECTL = """#!/usr/bin/env python3
# Stand-in for `kubectl --namespace NS port-forward service/NAME LOCAL:8080`: records its
# arguments and relays LOCAL to the served instance, as a port-forward does.
import asyncio, os, sys
with open(os.environ["KUBECTL_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
local = int(sys.argv[-1].split(":")[0])
target_host, target_port = os.environ["KUBECTL_TARGET"].split(":")

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def handle(reader, writer):
    upstream_reader, upstream_writer = await asyncio.open_connection(target_host, int(target_port))
    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", local)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def test_smoke_onboarding_forwards_the_release_service(
    start_app: StartApp,  # noqa: F811
    tmp_path: Path,
) -> None:
    """All in one process here (webhooks, admin and the sink), so one forward serves both the
    delivery and its confirmation through /admin/events."""
    app = start_app(
        providers={"acme": {"secret": SECRET}},
        clickhouse={"backend": "embedded", **FAST},
        server={"admin_token": ADMIN_TOKEN},
    )
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "kubectl").write_text(KUBECTL.replace("python3", sys.executable, 1))
    (shim / "kubectl").chmod(0o755)
    log = tmp_path / "kubectl.log"
    port = str(free_port())
    result = run(
        "smoke-onboarding.sh", "--provider", "acme", "--release", "tap", "--namespace", "prod",
        "--secret", SECRET, "--local-port", port, "--timeout", "20",
        PATH_PREFIX=f"{shim}:", KUBECTL_LOG=str(log),
        KUBECTL_TARGET=app.url.removeprefix("http://"), TAP_ADMIN_TOKEN=ADMIN_TOKEN,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().splitlines() == [
        f"--namespace prod port-forward service/tap-ensemble-tap {port}:8080"
    ]
    assert "202" in result.stdout
    assert '"type":"ensemble.tap.acme.' in result.stdout.replace(" ", "")


def test_bootstrap_dry_run_prints_every_command_and_no_secret(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            SCRIPTS / "bootstrap.sh", "--provider", "acme", "--secret", "s3cr3t-value",
            "--release", "tap", "--namespace", "prod", "--clickhouse-addr", "ch:8123",
            "--clickhouse-password", "pw-value", "--dry-run",
        ],
        capture_output=True, text=True, cwd=tmp_path, check=False, stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin"},  # no kubectl, helm or ensemble-tap: nothing may run
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "s3cr3t-value" not in out + result.stderr
    assert "pw-value" not in out + result.stderr
    commands = [line[2:] for line in out.splitlines() if line.startswith("+ ")]
    chart = str(SCRIPTS / ".." / "charts" / "ensemble-tap")
    assert commands == [
        "command -v kubectl",
        "command -v helm",
        "command -v ensemble-tap",
        "write values.onboarding.yaml:",
        "kubectl get namespace prod || kubectl create namespace prod",
        "kubectl --namespace prod create secret generic tap-ensemble-tap-onboarding "
        "--from-literal=ACME_SIGNING_SECRET=**** --from-literal=TAP_ADMIN_TOKEN=**** "
        "--from-literal=CLICKHOUSE_PASSWORD=**** --dry-run=client -o yaml | kubectl apply -f -",
        f"helm upgrade --install tap {chart} --namespace prod "
        "--values values.onboarding.yaml --wait --timeout 5m",
        f"{SCRIPTS}/smoke-onboarding.sh --provider acme --release tap --namespace prod "
        "--admin-service tap-ensemble-tap-admin",
    ]
    assert not (tmp_path / "values.onboarding.yaml").exists()  # a dry run writes nothing
    values = "\n".join(line[2:] for line in out.splitlines() if line.startswith("  "))
    assert "existingSecret: tap-ensemble-tap-onboarding" in values
    assert "secret: ${ACME_SIGNING_SECRET}" in values
    assert "addr: ch:8123" in values
    # The values are the chart's, and the config they render is one the service accepts.
    rendered = helm.Chart.load(REPO / "charts" / "ensemble-tap").render(
        yaml.safe_load(values), name="tap", namespace="prod"
    )
    config = yaml.safe_load(rendered["ensemble-tap/templates/configmap.yaml"])["data"]
    (tmp_path / "config.yaml").write_text(config["config.yaml"])
    secret_env = {
        "ACME_SIGNING_SECRET": "s",
        "TAP_ADMIN_TOKEN": "t" * 32,
        "CLICKHOUSE_PASSWORD": "p",
    }
    loaded = load_config(str(tmp_path / "config.yaml"), environ=secret_env, providers=REGISTRY)
    assert loaded.config.providers["acme"].secret == ["s"]
    assert loaded.config.clickhouse.mode == "server"


def test_smoke_without_wait_checks_the_202_only(served: str) -> None:
    result = run("smoke.sh", "--url", served, "--provider", "acme", "--secret", SECRET, "--no-wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "202" in result.stdout


def test_bootstrap_needs_a_provider_and_secret_when_not_interactive() -> None:
    result = subprocess.run(
        [SCRIPTS / "bootstrap.sh", "--dry-run"], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--provider and --secret are required" in result.stderr
