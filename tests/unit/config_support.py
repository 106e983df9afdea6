"""Helpers shared by the config tests: write YAML to a temp file and load it."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from ensemble_tap.config import ConfigError, LoadedConfig, load_config
from ensemble_tap.providers import REGISTRY


def write_config(directory: Path, text: str, name: str = "config.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(directory: Path, text: str, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load ``text`` as a config file with ``env`` (default: empty) as the environment."""
    return load_config(
        str(write_config(directory, text)), environ=dict(env or {}), providers=REGISTRY
    )


def problems_of(directory: Path, text: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The problems a config reports; fails the test when it loads."""
    with pytest.raises(ConfigError) as info:
        load_text(directory, text, env)
    return info.value.problems


def only_problem(directory: Path, text: str, env: Mapping[str, str] | None = None) -> str:
    problems = problems_of(directory, text, env)
    assert len(problems) == 1, problems
    return problems[0]
