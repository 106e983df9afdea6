"""Merge a provider's base settings with one tenant's overrides."""

from __future__ import annotations

from typing import Any

from ensemble_tap.config.models import TENANT_KEY_RE, ProviderConfig, TenantOverride


class TenantNotFound(LookupError):
    """The provider lists its tenants and this key is not one of them."""


class InvalidTenant(ValueError):
    """The tenant key is not of the allowed syntax."""


def resolve_tenant(provider: ProviderConfig, key: str) -> ProviderConfig:
    """Return the provider's settings for tenant ``key`` (``tenants`` dropped).

    Unlike the reference, a provider that defines ``tenants`` only accepts those keys: an
    unknown key could otherwise tag events with any tenant using the base secret.
    """
    key = key.strip()
    if not TENANT_KEY_RE.match(key):
        raise InvalidTenant(key)
    override = provider.tenants.get(key)
    if override is None and provider.tenants:
        raise TenantNotFound(key)
    changes: dict[str, Any] = {"tenant_id": key, "tenants": {}}
    if override is not None:
        for name in TenantOverride.model_fields:
            value = getattr(override, name)
            if value is None or (isinstance(value, list) and not value):
                continue
            if isinstance(value, str) and not value.strip():  # blank inherits
                continue
            changes[name] = value.strip() if isinstance(value, str) else value
    return provider.model_copy(update=changes)
