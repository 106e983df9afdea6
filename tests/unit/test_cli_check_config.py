"""`ensemble-tap check-config`: exit 0 and "config check passed", or 1 with the key path."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensemble_tap.cli import cli
from ensemble_tap.config.reference_semantics import EMBEDDED_BROKER
from tests.support.configs import write_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.yaml"
SCRIPT = Path(sys.executable).parent / "ensemble-tap"

VALID = """
server:
  port: 9090
nats:
  url: nats://127.0.0.1:4222
providers:
  stripe:
    secret: whsec_test
"""
INVALID = """
nats:
  stream_storage: disk
server:
  prot: 1
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The CLI reads the process environment: drop anything that could change the config."""
    for name in list(os.environ):
        if name.startswith("TAP_") or name.endswith(("_SECRET", "_WEBHOOK_SECRET")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_valid_file_passes(tmp_path: Path) -> None:
    path = write_config(tmp_path, VALID, "valid.yaml")
    code, out, err = run("check-config", "--config", str(path))
    assert code == 0, err
    assert "config check passed" in out
    assert str(path) in out
    assert err == ""


def test_short_option(tmp_path: Path) -> None:
    path = write_config(tmp_path, VALID, "valid.yaml")
    code, out, _ = run("check-config", "-c", str(path))
    assert code == 0
    assert "config check passed" in out


def test_example_file_passes() -> None:
    code, out, err = run("check-config", "--config", str(EXAMPLE))
    assert code == 0, err
    assert "config check passed" in out
    assert err == f"warning: {EMBEDDED_BROKER}\n"  # the one warning: make run's own broker


def test_invalid_file_fails_with_key_paths(tmp_path: Path) -> None:
    path = write_config(tmp_path, INVALID, "invalid.yaml")
    code, out, err = run("check-config", "--config", str(path))
    assert code == 1
    assert "config check passed" not in out
    assert "nats.stream_storage:" in err
    assert "server.prot: unknown key" in err
    assert "2 problems" in err
    assert err.startswith("error: invalid config")


def test_rule_violation_fails(tmp_path: Path) -> None:
    path = write_config(tmp_path, "providers:\n  stripe: {}\n", "nosecret.yaml")
    code, _, err = run("check-config", "--config", str(path))
    assert code == 1
    assert "providers.stripe: webhook mode requires secret" in err


def test_missing_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    code, out, err = run("check-config", "--config", str(path))
    assert code == 1
    assert f"config file {path} does not exist" in err
    assert "config check passed" not in out


def test_invalid_yaml_fails(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server: [unclosed\n", "broken.yaml")
    code, _, err = run("check-config", "--config", str(path))
    assert code == 1
    assert "not valid YAML" in err


def test_warnings_go_to_stderr_and_still_pass(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "providers:\n  github:\n    secret: s\n    events: [push]\n", "warn.yaml"
    )
    code, out, err = run("check-config", "--config", str(path))
    assert code == 0
    assert "config check passed" in out
    assert (
        "warning: providers.github.events: is accepted for compatibility but has no effect" in err
    )


def test_default_path_when_no_option(tmp_path: Path) -> None:
    code, out, _ = run("check-config")
    assert code == 0
    assert "config check passed (built-in defaults)" in out
    write_config(tmp_path, "server:\n  prot: 1\n")  # ./config.yaml is picked up
    code, _, err = run("check-config")
    assert code == 1
    assert "server.prot: unknown key" in err


def test_environment_overrides_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, VALID, "valid.yaml")
    monkeypatch.setenv("TAP_SERVER_PORT", "0")
    code, _, err = run("check-config", "--config", str(path))
    assert code == 1
    assert "server.port:" in err


def test_required_placeholder_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(
        tmp_path, "providers:\n  stripe:\n    secret: ${TAP_TEST_STRIPE:?missing}\n", "req.yaml"
    )
    code, _, err = run("check-config", "--config", str(path))
    assert code == 1
    assert "providers.stripe.secret: environment variable TAP_TEST_STRIPE is required" in err
    monkeypatch.setenv("TAP_TEST_STRIPE", "whsec")
    code, out, _ = run("check-config", "--config", str(path))
    assert code == 0
    assert "config check passed" in out


def test_secrets_are_not_printed(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "server:\n  admin_token: [super-secret-value]\n",
        "secret.yaml",
    )
    code, _, err = run("check-config", "--config", str(path))
    assert code == 1
    assert "server.admin_token:" in err
    assert "super-secret-value" not in err


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed")
def test_console_script(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    valid = write_config(tmp_path, VALID, "valid.yaml")
    invalid = write_config(tmp_path, INVALID, "invalid.yaml")
    ok = subprocess.run(
        [str(SCRIPT), "check-config", "--config", str(valid)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "config check passed" in ok.stdout
    bad = subprocess.run(
        [str(SCRIPT), "check-config", "--config", str(invalid)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0
    assert "nats.stream_storage:" in bad.stderr
    assert "config check passed" not in bad.stdout
