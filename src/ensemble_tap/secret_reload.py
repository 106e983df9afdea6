"""Secrets rotated without a restart.

``SIGHUP`` (and, with ``vault.refresh_interval``, that period) loads the config again from
its source: the file, ``${VAR}`` placeholders, ``TAP_*`` overrides and every ``vault://``
reference are read anew. The new secret values — webhook signing secrets, admin tokens,
poller credentials — replace the old ones in one step per part (a request is verified with
either the old set or the new one, never a mix); every other key keeps its running value and a
change to one is logged as needing a restart. A reload that fails keeps every old value, is
logged and counted (``tap_vault_refresh_total{result="failure"}``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ensemble_tap.config import ConfigError, load_config
from ensemble_tap.config.models import Config, ProviderConfig, TenantOverride
from ensemble_tap.observability import Metrics, get_logger
from ensemble_tap.providers import REGISTRY

log = get_logger("ensemble_tap.secrets")
# Keys whose values are secrets a reload swaps in; every other key needs a restart.
PROVIDER_SECRETS = ("secret", "client_secret", "access_token", "api_key", "refresh_token")
SERVER_SECRETS = (
    "admin_token",
    "admin_token_secondary",
    "admin_token_read",
    "admin_token_replay",
    "admin_token_cancel",
)


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where the running config came from (``--config`` path, or None for ./config.yaml or
    the defaults), so it can be loaded again; picklable, for worker processes."""

    path: str | None

    def load(self) -> Config:
        return load_config(self.path, providers=REGISTRY).config


class SecretConsumer(Protocol):
    """A part of the service that holds secrets: it takes the new set in one step."""

    def apply_secrets(self, config: Config) -> None: ...


def with_new_secrets(running: Config, loaded: Config) -> Config:
    """``running`` with the secret values of ``loaded`` (providers and tenants both configs
    have; a provider or tenant added or removed needs a restart)."""
    server = running.server.model_copy(
        update={key: getattr(loaded.server, key) for key in SERVER_SECRETS}
    )
    providers = {}
    for name, provider in running.providers.items():
        fresh = loaded.providers.get(name)
        providers[name] = provider if fresh is None else _provider_secrets(provider, fresh)
    return running.model_copy(update={"server": server, "providers": providers})


def _provider_secrets(running: ProviderConfig, loaded: ProviderConfig) -> ProviderConfig:
    tenants = {
        key: _secrets_of(tenant, loaded.tenants[key]) if key in loaded.tenants else tenant
        for key, tenant in running.tenants.items()
    }
    updated = _secrets_of(running, loaded)
    return updated.model_copy(update={"tenants": tenants})


Settings = TypeVar("Settings", bound=TenantOverride)


def _secrets_of(running: Settings, loaded: TenantOverride) -> Settings:
    return running.model_copy(update={key: getattr(loaded, key) for key in PROVIDER_SECRETS})


def restart_only_changes(running: Config, loaded: Config) -> list[str]:
    """Key paths whose non-secret value differs (they take effect at the next start)."""
    return sorted(_differences(_without_secrets(running), _without_secrets(loaded), ""))


def _without_secrets(config: Config) -> dict[str, Any]:
    tree = config.model_dump()
    for key in SERVER_SECRETS:
        tree["server"].pop(key, None)
    for provider in tree["providers"].values():
        for settings in (provider, *provider.get("tenants", {}).values()):
            for key in PROVIDER_SECRETS:
                settings.pop(key, None)
    return tree


def _differences(old: Any, new: Any, path: str) -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old.keys() | new.keys():
            yield from _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    elif old != new:
        yield path


class SecretReloader:
    """Loads the config again and hands its secrets to the parts that hold them."""

    def __init__(
        self,
        running: Config,
        load: Callable[[], Config],
        consumers: list[SecretConsumer],
        metrics: Metrics,
    ) -> None:
        self.running = running
        self.load = load
        self.consumers = consumers
        self.metrics = metrics
        self._lock = asyncio.Lock()
        self._periodic: asyncio.Task[None] | None = None

    async def reload(self, trigger: str) -> bool:
        """One reload (concurrent triggers run one after the other); True when applied."""
        async with self._lock:
            try:
                loaded = await asyncio.to_thread(self.load)  # Vault and files block
            except ConfigError as exc:
                self.metrics.vault_refreshes.labels("failure").inc()
                log.warning("secrets reload failed; the running secrets stay", trigger=trigger,
                            problems=exc.problems)  # fmt: skip
                return False
            except Exception as exc:  # a reload must never take the service down
                self.metrics.vault_refreshes.labels("failure").inc()
                log.warning("secrets reload failed; the running secrets stay", trigger=trigger,
                            error=f"{type(exc).__name__}: {exc}")  # fmt: skip
                return False
            restart = restart_only_changes(self.running, loaded)
            updated = with_new_secrets(self.running, loaded)
            for consumer in self.consumers:
                consumer.apply_secrets(updated)
            self.running = updated
            self.metrics.vault_refreshes.labels("success").inc()
            log.info("secrets reloaded", trigger=trigger)
            if restart:
                log.warning("config changes need a restart to take effect", keys=restart)
            return True

    def start_periodic(self, interval: float) -> None:
        self._periodic = asyncio.create_task(self._every(interval), name="secrets-refresh")

    async def _every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.reload("refresh_interval")

    async def stop(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
            await asyncio.gather(self._periodic, return_exceptions=True)
            self._periodic = None
