"""Poll targets: tenant fan-out, merge, effective defaults and state keys (docs/polling.md)."""

from __future__ import annotations

from typing import Any

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.config.poll_settings import bearer_token
from ensemble_tap.poller.service import poll_targets
from ensemble_tap.poller.targets import build_targets
from ensemble_tap.providers import poll_provider
from ensemble_tap.state.base import state_key
from tests.support.configs import make_config


def provider(**values: Any) -> ProviderConfig:
    return ProviderConfig.model_validate({"mode": "poll", **values})


def token_of(name: str, settings: ProviderConfig) -> str:
    """The bearer token the poller of ``name`` sends (its ``token_key`` is the fallback)."""
    poller = poll_provider(name)
    assert poller is not None
    return bearer_token(settings, poller.token_key)


def test_state_keys() -> None:
    assert state_key("hubspot", "") == "hubspot"
    assert state_key(" hubspot ", " tenant-a ") == "hubspot::tenant-a"


def test_defaults_of_a_plain_target() -> None:
    (target,) = build_targets("hubspot", provider(access_token="t", base_url="https://x"))
    assert (target.tenant_id, target.state_key, target.scope) == ("", "hubspot", "base")
    assert (target.interval, target.rate_limit_per_sec, target.burst) == (60.0, 4.0, 1)
    assert (target.failure_budget, target.circuit_break, target.jitter_ratio) == (5, 30.0, 0.0)
    assert (target.lookback, target.max_pages, target.max_requests) == (60.0, 0, 0)


def test_fan_out_with_tenants_only() -> None:
    base = provider(
        base_url="https://x",
        tenants={
            "tenant-b": {"access_token": "b", "poll_interval": "30s", "poll_rate_limit_per_sec": 2,
                         "poll_burst": 2, "poll_failure_budget": 4,
                         "poll_circuit_break_duration": "20s", "poll_jitter_ratio": 0.2},
            "tenant-a": {"access_token": "a", "poll_interval": "15s", "poll_rate_limit_per_sec": 8,
                         "poll_burst": 4, "poll_failure_budget": 7,
                         "poll_circuit_break_duration": "45s", "poll_jitter_ratio": 0.35},
        },
    )  # fmt: skip
    targets = build_targets("hubspot", base)
    assert [t.state_key for t in targets] == ["hubspot::tenant-a", "hubspot::tenant-b"]
    a, b = targets
    assert (a.interval, a.rate_limit_per_sec, a.burst, a.failure_budget, a.circuit_break,
            a.jitter_ratio) == (15.0, 8.0, 4, 7, 45.0, 0.35)  # fmt: skip
    assert (b.interval, b.rate_limit_per_sec, b.burst, b.failure_budget, b.circuit_break,
            b.jitter_ratio) == (30.0, 2.0, 2, 4, 20.0, 0.2)  # fmt: skip
    assert token_of("hubspot", a.settings) == "a"
    assert not a.settings.tenants


def test_base_with_credentials_is_a_target_too() -> None:
    base = provider(access_token="base", base_url="https://x", tenants={"t1": {"api_key": "k"}})
    assert [t.state_key for t in build_targets("hubspot", base)] == ["hubspot", "hubspot::t1"]


def test_base_tenant_id_naming_a_tenant_takes_its_overrides_and_dedups() -> None:
    base = provider(
        access_token="base",
        base_url="https://x",
        tenant_id="t1",
        tenants={"t1": {"access_token": "tenant-token", "tenant_id": "t1"}, "t2": {}},
    )
    targets = build_targets("notion", base)
    assert [t.state_key for t in targets] == ["notion::t1", "notion::t2"]
    assert token_of("notion", targets[0].settings) == "tenant-token"
    assert token_of("notion", targets[1].settings) == "base"


def test_tenant_id_override_and_zero_overrides() -> None:
    base = provider(
        access_token="t", base_url="https://x", poll_jitter_ratio=0.5, poll_failure_budget=5,
        tenants={"key": {"tenant_id": "tenant-a-id", "poll_jitter_ratio": 0,
                         "poll_failure_budget": 0, "objects": ["deals"]}},
    )  # fmt: skip
    (target,) = [t for t in build_targets("hubspot", base) if t.tenant_id]
    assert target.state_key == "hubspot::tenant-a-id"
    assert (target.jitter_ratio, target.failure_budget) == (0.0, 0)  # zero is expressible
    assert target.settings.objects == ["deals"]


def test_token_fallbacks() -> None:
    assert token_of("hubspot", provider(api_key=" k ")) == "k"
    assert token_of("salesforce", provider(secret=["s1", "s2"])) == "s1"
    assert token_of("quickbooks", provider(access_token="a", secret="s")) == "a"
    assert token_of("notion", provider()) == ""


def test_only_poll_modes_make_targets(tmp_path: Any) -> None:
    config = make_config(
        None,
        str(tmp_path),
        providers={
            "notion": {"mode": "poll", "secret": "s", "base_url": "https://api.notion.com"},
            "hubspot": {"mode": "webhook", "client_secret": "s"},
            "salesforce": {"mode": "webhook+poll", "secret": "s", "base_url": "https://x"},
        },
    )
    assert [t.state_key for t in poll_targets(config)] == ["notion", "salesforce"]
