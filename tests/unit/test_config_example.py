"""config.example.yaml: loads as is, and documents every key of the config models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from ensemble_tap.config import ConfigError, load_config
from ensemble_tap.config.models import (
    ClickHouseConfig,
    Config,
    NatsConfig,
    ProviderConfig,
    ServerConfig,
    StateConfig,
    TenantOverride,
    VaultConfig,
)
from ensemble_tap.config.reference_semantics import EMBEDDED_BROKER
from ensemble_tap.providers import REGISTRY

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
SECTIONS: dict[str, type[BaseModel]] = {
    "server": ServerConfig,
    "nats": NatsConfig,
    "clickhouse": ClickHouseConfig,
    "vault": VaultConfig,
    "state": StateConfig,
}
# keys that are documented as a commented-out line because setting them changes behaviour
COMMENTED_KEYS = {"nats.url"}


@pytest.fixture(scope="module")
def example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def example_tree(example_text: str) -> dict[str, Any]:
    tree = yaml.safe_load(example_text)
    assert isinstance(tree, dict)
    return tree


def test_example_loads_with_an_empty_environment() -> None:
    loaded = load_config(str(EXAMPLE), environ={}, providers=REGISTRY)
    assert loaded.warnings == [EMBEDDED_BROKER]  # make run's embedded nats-server
    cfg = loaded.config
    assert cfg.nats.url is None  # runs the embedded server
    assert cfg.server.admin_token == ""  # admin API disabled without tokens
    assert set(cfg.providers) == {"acme", "stripe", "github", "hubspot", "linear", "shopify"}
    assert cfg.providers["acme"].secret == ["dev-secret-change-me"]
    assert cfg.providers["acme"].tenants["tenant-a"].secret == ["dev-tenant-a-secret"]
    assert cfg.providers["hubspot"].client_secret == "dev-hubspot-secret"


def test_example_sections_hold_the_defaults() -> None:
    """The example promises "every configuration key, with its default"."""
    cfg = load_config(str(EXAMPLE), environ={}, providers=REGISTRY).config
    defaults = Config()
    for section in SECTIONS:
        value = getattr(cfg, section)
        if section == "clickhouse":  # the example runs the embedded sink (make run)
            assert value.mode == "embedded"
            value = value.model_copy(update={"backend": ""})
        assert value == getattr(defaults, section), section
    assert cfg.data_dir == defaults.data_dir
    assert cfg.log_level == defaults.log_level


def test_example_takes_secrets_from_the_environment() -> None:
    env = {
        "TAP_ADMIN_TOKEN": "admin",
        "TAP_ADMIN_TOKEN_SECONDARY": "admin-2",
        "STRIPE_WEBHOOK_SECRET": "whsec_real",
        "ACME_TENANT_A_SECRET": "tenant-a-real",
    }
    cfg = load_config(str(EXAMPLE), environ=env, providers=REGISTRY).config
    assert cfg.server.admin_token == "admin"
    assert cfg.server.admin_token_secondary == "admin-2"
    assert cfg.providers["stripe"].secret == ["whsec_real"]
    assert cfg.providers["acme"].tenants["tenant-a"].secret == ["tenant-a-real"]


def test_example_rejects_equal_admin_tokens() -> None:
    env = {"TAP_ADMIN_TOKEN": "same", "TAP_ADMIN_TOKEN_SECONDARY": "same"}
    with pytest.raises(ConfigError) as info:
        load_config(str(EXAMPLE), environ=env, providers=REGISTRY)
    assert info.value.problems == [
        "server.admin_token_secondary: server.admin_token and admin_token_secondary must differ"
    ]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_example_lists_every_section_key(
    section: str, example_tree: dict[str, Any], example_text: str
) -> None:
    present = set(example_tree.get(section) or {})
    for key in SECTIONS[section].model_fields:
        if f"{section}.{key}" in COMMENTED_KEYS:
            assert re.search(rf"^\s*#\s*{key}:", example_text, re.MULTILINE), key
            continue
        assert key in present, f"{section}.{key} is missing from config.example.yaml"


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_example_has_no_keys_beyond_the_model(section: str, example_tree: dict[str, Any]) -> None:
    assert set(example_tree.get(section) or {}) <= set(SECTIONS[section].model_fields)


def test_example_lists_top_level_keys(example_tree: dict[str, Any]) -> None:
    assert set(example_tree) == set(Config.model_fields)
    assert "data_dir" in example_tree
    assert "log_level" in example_tree


def documented_provider_keys(text: str, tree: dict[str, Any]) -> set[str]:
    """Keys the example sets under ``providers`` (providers and tenants), and keys it shows
    commented out there as ``# key: value`` lines; a word in a comment's prose is not one."""
    keys: set[str] = set()
    for provider in tree["providers"].values():
        keys |= set(provider)
        for tenant in (provider.get("tenants") or {}).values():
            keys |= set(tenant)
    section = re.search(r"^providers:\n(.*?)(?=^\S)", text, re.MULTILINE | re.DOTALL)
    assert section is not None
    return keys | set(re.findall(r"^\s*#\s+([a-z_]+): ", section.group(1), re.MULTILINE))


@pytest.mark.parametrize("key", sorted(ProviderConfig.model_fields))
def test_example_documents_every_provider_key(
    key: str, example_text: str, example_tree: dict[str, Any]
) -> None:
    assert key in documented_provider_keys(example_text, example_tree), (
        f"provider key {key} is not documented in config.example.yaml"
    )


def test_provider_fields_include_the_tenant_overrides() -> None:
    """The textual check above covers tenant keys too, because providers inherit them."""
    assert set(TenantOverride.model_fields) <= set(ProviderConfig.model_fields)


def test_example_tenant_keys_are_valid_tenant_fields(example_tree: dict[str, Any]) -> None:
    for provider in example_tree["providers"].values():
        assert set(provider) <= set(ProviderConfig.model_fields)
        for tenant in (provider.get("tenants") or {}).values():
            assert set(tenant) <= set(TenantOverride.model_fields)
