"""compose.yaml against the Compose specification's schema (no container engine here), and
the config it mounts checked as the service would load it with the environment it sets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import compose_spec
import pytest
import yaml
from compose_spec.models import ComposeSpecification

from ensemble_tap.config import load_config
from ensemble_tap.providers import REGISTRY

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"


def validate(tree: dict[str, Any]) -> None:
    """Both of compose-spec's checks: the schema's models and the Rust parser (which refuses
    unknown keys and enum values the models let through)."""
    ComposeSpecification.model_validate(tree)
    compose_spec.PyCompose.from_json(json.dumps(tree)).validate()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    tree = yaml.safe_load(COMPOSE.read_text())  # resolves the << merges as docker compose does
    assert isinstance(tree, dict)
    return tree


def test_compose_file_follows_the_specification(compose: dict[str, Any]) -> None:
    validate(compose)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "nats", "imagee"), "nats"),
        (("services", "tap", "depends_on", "nats", "condition"), "healthy"),
    ],
)
def test_the_validation_refuses_mistakes(
    compose: dict[str, Any], path: tuple[str, ...], value: str
) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError):
        validate(broken)


def test_profiles_run_tap_with_and_without_clickhouse(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "profiles" not in services["nats"]  # in every profile
    assert services["clickhouse"]["profiles"] == services["tap"]["profiles"] == ["clickhouse"]
    assert services["tap-lite"]["profiles"] == ["lite"]
    assert set(services["tap"]["depends_on"]) == {"nats", "clickhouse"}
    assert set(services["tap-lite"]["depends_on"]) == {"nats"}
    for name in ("nats", "clickhouse", "tap", "tap-lite"):
        assert "healthcheck" in services[name], name
    dotenv = (REPO / ".env").read_text()
    assert "COMPOSE_PROFILES=clickhouse" in dotenv  # `docker compose up` = the full stack


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as compose interpolates it with nothing set by the user
    (``${VAR:-default}`` → default)."""
    env = {}
    for key, value in service["environment"].items():
        text = str(value)
        if text.startswith("${") and ":-" in text:
            text = text[text.index(":-") + 2 : -1]
        env[key] = text
    return env


@pytest.mark.parametrize("service", ["tap", "tap-lite"])
def test_the_mounted_config_checks_with_the_services_environment(
    compose: dict[str, Any], service: str
) -> None:
    spec = compose["services"][service]
    [mount] = [v for v in spec["volumes"] if v.endswith(":/etc/ensemble-tap/config.yaml:ro")]
    path = str(REPO / mount.split(":")[0])
    loaded = load_config(path, environ=compose_environment(spec), providers=REGISTRY)
    config = loaded.config
    assert config.nats.url == "nats://nats:4222"
    assert config.providers["generic"].secret == ["dev-generic-secret"]
    if service == "tap":
        assert (config.clickhouse.mode, config.clickhouse.addr) == ("server", "clickhouse:8123")
    else:
        assert config.clickhouse.mode is None
    assert loaded.warnings == []
