"""Configs for tests, one place: a ``Config`` from test-friendly defaults (``make_config``), a
``NatsConfig`` with a stream of its own (``unique_nats``), and YAML text loaded as a config file
is (``load_text``, ``problems_of``, ``only_problem``)."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ensemble_tap.config import ConfigError, LoadedConfig, load_config
from ensemble_tap.config.models import Config, NatsConfig
from ensemble_tap.providers import REGISTRY


def make_config(nats_url: str | None, data_dir: str, **sections: Any) -> Config:
    """A Config with test-friendly defaults; ``sections`` are merged over them."""
    tree: dict[str, Any] = {
        "data_dir": data_dir,
        "log_level": "error",
        "server": {"host": "127.0.0.1", "port": 8080},
        "nats": {"publish_timeout": "2s", "connect_timeout": "1s", "startup_timeout": "5s"},
        "providers": {},
    }
    if nats_url is not None:
        tree["nats"]["url"] = nats_url
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    return Config.model_validate(tree)


def unique_nats(prefix: str = "test", **values: Any) -> NatsConfig:
    """A NatsConfig whose stream and subjects no other test uses; ``values`` override."""
    name = "T" + uuid.uuid4().hex[:10].upper()
    base: dict[str, Any] = {
        "stream": name,
        "subject_prefix": f"{prefix}.{name.lower()}",
        "publish_timeout": "2s",
    }
    return NatsConfig.model_validate({**base, **values})


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
