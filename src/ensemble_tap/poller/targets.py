"""Poll targets: one per provider configuration after tenant merging
(``config.poll_settings.merged_settings`` says which), with the tuning defaults applied."""

from __future__ import annotations

from dataclasses import dataclass

from ensemble_tap.config.durations import format_duration
from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.config.poll_settings import merged_settings
from ensemble_tap.state.base import state_key

DEFAULT_INTERVAL = 60.0
DEFAULT_RATE = 4.0
DEFAULT_BURST = 1
DEFAULT_FAILURE_BUDGET = 5
DEFAULT_CIRCUIT_BREAK = 30.0
DEFAULT_LOOKBACK = 60.0
DEFAULT_DELETE_INTERVAL = 300.0
MAX_JITTER = 0.95


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
    delete_interval: float  # delete lists that cost extra requests: read this often
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
        delete_interval=pick(settings.poll_delete_interval, DEFAULT_DELETE_INTERVAL),
        max_pages=settings.poll_max_pages or 0,
        max_requests=settings.poll_max_requests or 0,
    )
