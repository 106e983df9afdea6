"""Poll targets: one per provider configuration after tenant merging.

Fan-out follows the reference: the base configuration is a target when the provider has no
``tenants`` or the base itself carries a poll credential; every tenant key (in sorted order)
adds one; targets with the same tenant id are kept once (first wins). Unlike the reference,
a tenant may override every poller key and set a tuning value to zero (see
``config.tenants.resolve_tenant``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ensemble_tap.config.durations import format_duration
from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.config.tenants import resolve_tenant

# The bearer token of each poller: ``access_token``, else this provider's fallback key.
TOKEN_FALLBACK = {
    "hubspot": "api_key",
    "salesforce": "secret",
    "quickbooks": "secret",
    "notion": "secret",
}
REQUIRED_KEYS = {"quickbooks": ("realm_id",)}
DEFAULT_INTERVAL = 60.0
DEFAULT_RATE = 4.0
DEFAULT_BURST = 1
DEFAULT_FAILURE_BUDGET = 5
DEFAULT_CIRCUIT_BREAK = 30.0
DEFAULT_LOOKBACK = 60.0
MAX_JITTER = 0.95
_POLL_CREDENTIALS = ("access_token", "api_key", "secret", "refresh_token")


def state_key(provider: str, tenant_id: str) -> str:
    """``provider`` or ``provider::tenant``: the scope of checkpoints, snapshots and status."""
    tenant = tenant_id.strip()
    return f"{provider.strip()}::{tenant}" if tenant else provider.strip()


@dataclass(slots=True, frozen=True)
class PollTarget:
    """One poller: the merged settings plus the effective (defaulted) tuning values."""

    provider: str
    settings: ProviderConfig
    interval: float
    rate_limit_per_sec: float
    burst: int
    failure_budget: int  # 0: the circuit never opens
    circuit_break: float
    jitter_ratio: float
    lookback: float
    max_pages: int  # 0: the default budget (200 pages)
    max_requests: int  # 0: the default budget (400 requests)

    @property
    def tenant_id(self) -> str:
        return self.settings.tenant_id.strip()

    @property
    def state_key(self) -> str:
        return state_key(self.provider, self.tenant_id)

    @property
    def scope(self) -> str:
        """How validation messages name the target: ``base`` or ``tenant "<id>"``."""
        return f'tenant "{self.tenant_id}"' if self.tenant_id else "base"

    def describe(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "tenant": self.tenant_id,
            "interval": format_duration(self.interval),
        }


def token_of(provider: str, settings: ProviderConfig) -> str:
    """The configured bearer token (``access_token``, else the provider's fallback key)."""
    token = settings.access_token.strip()
    if token:
        return token
    fallback = getattr(settings, TOKEN_FALLBACK.get(provider, "access_token"), "")
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


def build_targets(provider: str, base: ProviderConfig) -> list[PollTarget]:
    return [target_of(provider, settings) for _, settings in merged_settings(base)]


def target_of(provider: str, settings: ProviderConfig) -> PollTarget:
    def pick(value: float | None, default: float) -> float:
        return default if value is None else value

    return PollTarget(
        provider=provider,
        settings=settings,
        interval=pick(settings.poll_interval, DEFAULT_INTERVAL),
        rate_limit_per_sec=pick(settings.poll_rate_limit_per_sec, DEFAULT_RATE),
        burst=int(pick(settings.poll_burst, DEFAULT_BURST)),
        failure_budget=int(pick(settings.poll_failure_budget, DEFAULT_FAILURE_BUDGET)),
        circuit_break=pick(settings.poll_circuit_break_duration, DEFAULT_CIRCUIT_BREAK),
        jitter_ratio=min(MAX_JITTER, max(0.0, pick(settings.poll_jitter_ratio, 0.0))),
        lookback=pick(settings.poll_lookback, DEFAULT_LOOKBACK),
        max_pages=settings.poll_max_pages or 0,
        max_requests=settings.poll_max_requests or 0,
    )
