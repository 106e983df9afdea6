"""``server.spool``: defaults, YAML, TAP_* overrides, the example file, the directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ensemble_tap.config import load_config
from ensemble_tap.config.loader import env_override_path
from ensemble_tap.config.models import Config, SpoolConfig
from ensemble_tap.providers import REGISTRY
from ensemble_tap.spool import spool_dir
from tests.support.configs import load_text, problems_of

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def test_the_spool_is_off_by_default() -> None:
    spool = Config().server.spool
    assert spool == SpoolConfig()
    assert (spool.enabled, spool.dir, spool.max_bytes, spool.ready_while_spooling) == (
        False,
        "",
        1 << 30,
        True,
    )


def test_the_spool_section_loads_from_yaml(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        server:
          spool:
            enabled: true
            dir: /var/lib/tap/spool
            max_bytes: 2097152
            ready_while_spooling: false
        """,
    )
    assert loaded.config.server.spool == SpoolConfig(
        enabled=True, dir="/var/lib/tap/spool", max_bytes=2_097_152, ready_while_spooling=False
    )


def test_spool_problems_name_their_key(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        server:
          spool:
            max_bytes: 1000
            fsync: always
        """,
    )
    assert "server.spool.fsync: unknown key" in problems
    assert any(
        p.startswith("server.spool.max_bytes: Input should be greater than") for p in problems
    )


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("TAP_SERVER_SPOOL_ENABLED", ["server", "spool", "enabled"]),
        ("TAP_SERVER_SPOOL_MAX_BYTES", ["server", "spool", "max_bytes"]),
        ("TAP_SERVER__SPOOL__READY_WHILE_SPOOLING", ["server", "spool", "ready_while_spooling"]),
        ("TAP_SERVER_SPOOL", ["server", "spool"]),  # not a key: the section is a mapping
    ],
)
def test_environment_names_reach_the_nested_section(name: str, path: list[str]) -> None:
    assert env_override_path(name) == path


def test_the_environment_overrides_spool_keys() -> None:
    env = {"TAP_SERVER_SPOOL_ENABLED": "true", "TAP_SERVER_SPOOL_MAX_BYTES": "5242880"}
    spool = load_config(None, environ=env, providers=REGISTRY).config.server.spool
    assert (spool.enabled, spool.max_bytes) == (True, 5_242_880)


def test_the_example_lists_every_spool_key_with_its_default() -> None:
    tree = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert set(tree["server"]["spool"]) == set(SpoolConfig.model_fields)
    assert (
        load_config(str(EXAMPLE), environ={}, providers=REGISTRY).config.server.spool
        == SpoolConfig()
    )


def test_the_spool_lives_under_data_dir_unless_dir_is_set() -> None:
    assert spool_dir(Config(data_dir="/srv/tap")) == Path("/srv/tap/spool")
    custom = Config.model_validate({"server": {"spool": {"dir": "/mnt/spool"}}})
    assert spool_dir(custom) == Path("/mnt/spool")
