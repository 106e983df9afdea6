"""Keeps a renewable Vault token alive while the service runs (``vault.auth_method: token``),
so the next secrets reload (SIGHUP, ``vault.refresh_interval``) can still read. Login methods
(kubernetes, approle) log in again at every reload and need no renewal.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import hvac

from ensemble_tap.config.models import VaultConfig
from ensemble_tap.config.vault import REQUEST_TIMEOUT, VaultError, token_of
from ensemble_tap.observability import get_logger

log = get_logger("ensemble_tap.secrets")
# Renew when half the token's time to live is left; retry a failed renewal this much sooner.
RENEW_AT = 0.5
RETRY_AFTER = 0.25
MIN_WAIT = 1.0


def renewal_wanted(settings: VaultConfig, env: Mapping[str, str] | None = None) -> bool:
    """A token is configured for Vault (the only method whose token outlives a load)."""
    env = os.environ if env is None else env
    address = settings.address.strip() or env.get("VAULT_ADDR", "").strip()
    if settings.auth_method != "token" or not address:
        return False
    try:
        token_of(settings, env)
    except VaultError:
        return False
    return True


class TokenRenewal:
    def __init__(self, settings: VaultConfig, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.client = hvac.Client(
            url=settings.address.strip() or env.get("VAULT_ADDR", "").strip(),
            namespace=settings.namespace.strip() or env.get("VAULT_NAMESPACE", "").strip() or None,
            verify=False
            if settings.insecure_skip_verify
            else (settings.ca_file.strip() or env.get("VAULT_CACERT", "").strip() or True),
            timeout=REQUEST_TIMEOUT,
        )
        self.client.token = token_of(settings, env)
        self.renewals = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="vault-token-renewal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        try:
            info = await asyncio.to_thread(self.client.auth.token.lookup_self)
        except Exception as exc:  # Vault unreachable: nothing to renew yet
            log.warning("vault token lookup failed; not renewing", error=type(exc).__name__)
            return
        data: dict[str, Any] = info.get("data") or {}
        ttl = float(data.get("ttl") or 0)
        if not data.get("renewable") or ttl <= 0:
            log.info("vault token needs no renewal", renewable=bool(data.get("renewable")), ttl=ttl)
            return
        while True:
            await asyncio.sleep(max(ttl * RENEW_AT, MIN_WAIT))
            try:
                answer = await asyncio.to_thread(self.client.auth.token.renew_self)
            except Exception as exc:
                log.warning("vault token renewal failed", error=type(exc).__name__)
                ttl = max(ttl * RETRY_AFTER, MIN_WAIT)
                continue
            ttl = float((answer.get("auth") or {}).get("lease_duration") or ttl)
            self.renewals += 1
            log.info("vault token renewed", ttl=ttl)
