"""What a reference deployment starts with keeps working: its command line (Go flags:
``-config FILE`` serves, ``-check-config`` checks, anything else in that form exits 2 with the
flags' usage) and its newer ``server.shutdown_timeout`` key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ensemble_tap.cli import ReferenceFlagError, reference_command

SCRIPT = Path(sys.executable).parent / "ensemble-tap"


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["-config", "a.yaml"], ["serve", "--config", "a.yaml"]),
        (["--config", "a.yaml"], ["serve", "--config", "a.yaml"]),
        (["-config=a.yaml"], ["serve", "--config", "a.yaml"]),
        (["-config", "a.yaml", "-check-config"], ["check-config", "--config", "a.yaml"]),
        (["-check-config", "--config=a.yaml"], ["check-config", "--config", "a.yaml"]),
        (["--check-config"], ["check-config"]),
        (["-check-config=false", "-config", "a.yaml"], ["serve", "--config", "a.yaml"]),
        (["-check-config=T"], ["check-config"]),
        (["-config", "-check-config"], ["serve", "--config", "-check-config"]),  # as Go reads it
    ],
)
def test_reference_flags_become_subcommands(args: list[str], command: list[str]) -> None:
    assert reference_command(args) == command


@pytest.mark.parametrize(
    "args", [[], ["serve", "--config", "a.yaml"], ["check-config"], ["--help"], ["-c", "a.yaml"]]
)
def test_subcommand_lines_are_left_alone(args: list[str]) -> None:
    assert reference_command(args) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-config"], "flag needs an argument: -config"),
        (["-config", "a.yaml", "-port", "1"], "flag provided but not defined: -port"),
        (["-check-config=maybe"], 'invalid boolean value "maybe" for -check-config'),
        (["-config", "a.yaml", "serve"], "unexpected argument after the flags: serve"),
    ],
)
def test_bad_reference_lines_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(ReferenceFlagError, match=message):
        reference_command(args)


def test_the_installed_command_takes_the_reference_flags(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("providers:\n  stripe:\n    secret: whsec_test\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    checked = subprocess.run(
        [SCRIPT, "-config", str(config), "-check-config"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "config check passed" in checked.stdout
    refused = subprocess.run(
        [SCRIPT, "-config", str(config), "-bogus"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.startswith("flag provided but not defined: -bogus\nUsage of ensemble-tap")


def test_shutdown_timeout_is_the_http_drain_budget(tmp_path: Path) -> None:
    from ensemble_tap.app import TapApp, uvicorn_config
    from tests.support.configs import make_config

    config = make_config(None, str(tmp_path), server={"shutdown_timeout": "2500ms"})
    assert uvicorn_config(TapApp(config)).timeout_graceful_shutdown == 2.5
