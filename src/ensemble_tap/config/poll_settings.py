"""Poll settings as validation and the poller both read them: which configurations a provider
polls (tenant fan-out), its bearer token and whether OAuth refresh is on.

Fan-out follows the reference: the base configuration is a target when the provider has no
``tenants`` or the base itself carries a poll credential; every tenant key (in sorted order)
adds one; targets with the same tenant id are kept once (first wins). Unlike the reference,
a tenant may override every poller key and set a tuning value to zero (see
``tenants.resolve_tenant``).
"""

from __future__ import annotations

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.config.tenants import resolve_tenant

_POLL_CREDENTIALS = ("access_token", "api_key", "secret", "refresh_token")


def bearer_token(settings: ProviderConfig, token_key: str) -> str:
    """The configured bearer token: ``access_token``, else the provider's ``token_key``."""
    token = settings.access_token.strip()
    if token:
        return token
    fallback = getattr(settings, token_key, "")
    if isinstance(fallback, list):  # ``secret`` may be a rotation list: its first entry
        return next((str(item).strip() for item in fallback if str(item).strip()), "")
    return str(fallback).strip()


def oauth_enabled(settings: ProviderConfig) -> bool:
    return all(
        value.strip() for value in (settings.token_url, settings.client_id, settings.client_secret)
    )


def _has_poll_credentials(settings: ProviderConfig) -> bool:
    for key in _POLL_CREDENTIALS:
        value = getattr(settings, key)
        if value if isinstance(value, list) else str(value).strip():
            return True
    return False


def merged_settings(base: ProviderConfig) -> list[tuple[str | None, ProviderConfig]]:
    """The provider's configurations after tenant merging, in target order, deduplicated by
    tenant id, each with the tenant key it came from (None: the base configuration)."""
    candidates: list[tuple[str | None, ProviderConfig]] = []
    if not base.tenants or _has_poll_credentials(base):
        own = base.tenant_id.strip()
        if own and own in base.tenants:
            candidates.append((own, resolve_tenant(base, own)))
        else:
            candidates.append((None, base.model_copy(update={"tenant_id": own, "tenants": {}})))
    candidates.extend((name, resolve_tenant(base, name)) for name in sorted(base.tenants))
    seen: set[str] = set()
    unique: list[tuple[str | None, ProviderConfig]] = []
    for key, settings in candidates:
        tenant = settings.tenant_id.strip() or "__default__"
        if tenant not in seen:
            seen.add(tenant)
            unique.append((key, settings))
    return unique
