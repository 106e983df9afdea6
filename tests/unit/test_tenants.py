"""resolve_tenant: merging a provider's base settings with one tenant's overrides."""

from __future__ import annotations

from typing import Any

import pytest

from ensemble_tap.config import InvalidTenant, ProviderConfig, TenantNotFound, resolve_tenant
from ensemble_tap.config.models import TenantOverride


def provider(**values: Any) -> ProviderConfig:
    return ProviderConfig.model_validate(values)


BASE: dict[str, Any] = {
    "mode": "webhook",
    "secret": "base-secret",
    "client_secret": "base-client-secret",
    "access_token": "base-access",
    "api_key": "base-api-key",
    "base_url": "https://base.example.com",
    "realm_id": "base-realm",
    "refresh_token": "base-refresh",
    "token_url": "https://base.example.com/token",
    "client_id": "base-client",
    "scope": "base-scope",
    "objects": ["deals"],
    "api_version": "v59.0",
    "query_per_page": 100,
    "poll_interval": "1m",
    "poll_rate_limit_per_sec": 4,
    "poll_burst": 1,
    "poll_failure_budget": 5,
    "poll_circuit_break_duration": "30s",
    "poll_jitter_ratio": 0.15,
    "poll_max_pages": 200,
    "poll_max_requests": 400,
    "poll_lookback": "5m",
    "poll_delete_interval": "5m",
    "signature_versions": ["v3"],
}


def test_every_tenant_key_is_overridable() -> None:
    override = {
        "tenant_id": "acme-corp",
        "secret": ["t-secret-new", "t-secret-old"],
        "client_secret": "t-client-secret",
        "access_token": "t-access",
        "api_key": "t-api-key",
        "base_url": "https://tenant.example.com",
        "realm_id": "t-realm",
        "refresh_token": "t-refresh",
        "token_url": "https://tenant.example.com/token",
        "client_id": "t-client",
        "scope": "t-scope",
        "objects": ["contacts", "tickets"],
        "fields": ["email", "firstname"],
        "api_version": "v60.0",
        "query_per_page": 50,
        "poll_interval": "5m",
        "poll_rate_limit_per_sec": 2.5,
        "poll_burst": 3,
        "poll_failure_budget": 7,
        "poll_circuit_break_duration": "1m",
        "poll_jitter_ratio": 0.5,
        "poll_max_pages": 10,
        "poll_max_requests": 20,
        "poll_lookback": "1h",
        "poll_delete_interval": "15m",
    }
    # the test covers every TenantOverride field, so a new field must be added here too
    assert set(override) == set(TenantOverride.model_fields)
    base = provider(**BASE, tenants={"t1": override})
    merged = resolve_tenant(base, "t1")
    assert merged.tenant_id == "acme-corp"
    assert merged.secret == ["t-secret-new", "t-secret-old"]
    assert merged.client_secret == "t-client-secret"
    assert merged.access_token == "t-access"
    assert merged.api_key == "t-api-key"
    assert merged.base_url == "https://tenant.example.com"
    assert merged.realm_id == "t-realm"
    assert merged.refresh_token == "t-refresh"
    assert merged.token_url == "https://tenant.example.com/token"
    assert merged.client_id == "t-client"
    assert merged.scope == "t-scope"
    assert merged.objects == ["contacts", "tickets"]
    assert merged.fields == ["email", "firstname"]
    assert merged.api_version == "v60.0"
    assert merged.query_per_page == 50
    assert merged.poll_interval == 300.0
    assert merged.poll_rate_limit_per_sec == 2.5
    assert merged.poll_burst == 3
    assert merged.poll_failure_budget == 7
    assert merged.poll_circuit_break_duration == 60.0
    assert merged.poll_jitter_ratio == 0.5
    assert merged.poll_max_pages == 10
    assert merged.poll_max_requests == 20
    assert merged.poll_lookback == 3600.0
    assert merged.poll_delete_interval == 900.0
    # provider-only keys are kept from the base; tenants are dropped
    assert merged.mode == "webhook"
    assert merged.signature_versions == ["v3"]
    assert merged.tenants == {}


def test_blank_and_missing_overrides_inherit_the_base() -> None:
    base = provider(
        **BASE,
        tenants={
            "t1": {
                "secret": "",
                "client_secret": "   ",
                "access_token": "",
                "base_url": "",
                "objects": None,
                "poll_interval": None,
                "query_per_page": None,
            }
        },
    )
    merged = resolve_tenant(base, "t1")
    assert merged.secret == ["base-secret"]
    assert merged.client_secret == "base-client-secret"
    assert merged.access_token == "base-access"
    assert merged.base_url == "https://base.example.com"
    assert merged.objects == ["deals"]
    assert merged.poll_interval == 60.0
    assert merged.query_per_page == 100
    assert merged.poll_jitter_ratio == 0.15
    assert merged.tenant_id == "t1"
    assert merged.tenants == {}


def test_empty_tenant_entry_inherits_everything() -> None:
    base = provider(**BASE, tenants={"t1": {}})
    merged = resolve_tenant(base, "t1")
    expected = base.model_copy(update={"tenant_id": "t1", "tenants": {}})
    assert merged == expected


def test_explicit_zero_overrides_are_real_zeros() -> None:
    """Unlike the reference, a tenant can set 0 (e.g. no jitter) over a non-zero base."""
    base = provider(
        **BASE,
        tenants={
            "t1": {
                "poll_jitter_ratio": 0,
                "poll_failure_budget": 0,
                "poll_max_pages": 0,
                "poll_max_requests": 0,
                "poll_circuit_break_duration": 0,
                "poll_lookback": "0s",
                "poll_delete_interval": "0s",
            }
        },
    )
    merged = resolve_tenant(base, "t1")
    assert merged.poll_jitter_ratio == 0
    assert merged.poll_failure_budget == 0
    assert merged.poll_max_pages == 0
    assert merged.poll_max_requests == 0
    assert merged.poll_circuit_break_duration == 0
    assert merged.poll_lookback == 0
    assert merged.poll_delete_interval == 0


def test_override_strings_are_trimmed() -> None:
    base = provider(**BASE, tenants={"t1": {"base_url": "  https://t.example.com  "}})
    assert resolve_tenant(base, "t1").base_url == "https://t.example.com"


def test_tenant_id_defaults_to_the_key() -> None:
    base = provider(secret="s", tenant_id="base-tenant", tenants={"Tenant.A_1-x": {}})
    assert resolve_tenant(base, "Tenant.A_1-x").tenant_id == "Tenant.A_1-x"


def test_tenant_id_override_replaces_the_key() -> None:
    base = provider(secret="s", tenants={"key": {"tenant_id": "real-id"}})
    assert resolve_tenant(base, "key").tenant_id == "real-id"


def test_key_is_trimmed_before_lookup() -> None:
    base = provider(secret="s", tenants={"t1": {"secret": "x"}})
    merged = resolve_tenant(base, "  t1 ")
    assert merged.tenant_id == "t1"
    assert merged.secret == ["x"]


def test_base_is_not_modified() -> None:
    base = provider(secret="s", tenants={"t1": {"secret": "x"}})
    resolve_tenant(base, "t1")
    assert base.secret == ["s"]
    assert base.tenant_id == ""
    assert set(base.tenants) == {"t1"}


def test_unknown_key_is_rejected_when_tenants_are_defined() -> None:
    base = provider(secret="s", tenants={"t1": {}})
    with pytest.raises(TenantNotFound):
        resolve_tenant(base, "t2")


def test_tenant_keys_are_case_sensitive() -> None:
    base = provider(secret="s", tenants={"tenant-a": {}})
    with pytest.raises(TenantNotFound):
        resolve_tenant(base, "Tenant-A")


def test_any_valid_key_is_accepted_without_a_tenants_map() -> None:
    base = provider(**BASE)
    merged = resolve_tenant(base, "whoever")
    assert merged.tenant_id == "whoever"
    assert merged.secret == ["base-secret"]
    assert merged.model_dump(exclude={"tenant_id"}) == base.model_dump(exclude={"tenant_id"})


@pytest.mark.parametrize(
    "key",
    [
        "",
        "   ",
        "-leading-dash",
        ".leading-dot",
        "_leading-underscore",
        "has space",
        "slash/inside",
        "colon:inside",
        "ümlaut",
        "a" * 129,
        "star*",
    ],
)
def test_invalid_key_syntax(key: str) -> None:
    for base in (provider(secret="s"), provider(secret="s", tenants={"t1": {}})):
        with pytest.raises(InvalidTenant):
            resolve_tenant(base, key)


@pytest.mark.parametrize("key", ["a", "A", "0", "t1", "a.b_c-d", "a" * 128])
def test_valid_key_syntax(key: str) -> None:
    assert resolve_tenant(provider(secret="s"), key).tenant_id == key


def test_error_types() -> None:
    assert issubclass(TenantNotFound, LookupError)
    assert issubclass(InvalidTenant, ValueError)
