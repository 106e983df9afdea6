"""Bearer tokens of one poll target, refreshed with OAuth and kept durably when rotated.

Refresh is enabled when ``token_url``, ``client_id`` and ``client_secret`` are all set. It
runs after a 401, before a token known to expire soon (``expires_in``), and at the first
request when no access token is configured (a refresh-token-only setup). A refresh token the
provider returns (Intuit rotates them) replaces the configured one in the state store, so the
chain survives restarts; the stored token is only used while the configured one is the one it
was derived from — after an operator re-authorizes, the new configured token wins.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from ensemble_tap.poller.clock import Clock
from ensemble_tap.poller.errors import AuthError, PollError
from ensemble_tap.poller.http import ERROR_BODY_BYTES, check_url
from ensemble_tap.state.base import StoredToken

# Refresh this long before the provider's expiry, so a request never races it.
EXPIRY_MARGIN = 60.0


class TokenStore(Protocol):
    async def load_token(self, state_key: str) -> StoredToken | None: ...

    async def save_token(self, state_key: str, token: StoredToken) -> None: ...


@dataclass(slots=True, frozen=True)
class OAuthSettings:
    token_url: str
    client_id: str
    client_secret: str
    refresh_token: str = ""
    scope: str = ""
    # Intuit documents HTTP Basic client authentication for its token endpoint; the others
    # take the client credentials in the form body.
    basic_auth: bool = False


def origin_of(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest() if refresh_token else ""


class TokenSource:
    def __init__(
        self,
        provider: str,
        *,
        state_key: str,
        access_token: str,
        oauth: OAuthSettings | None,
        store: TokenStore,
        client: httpx.AsyncClient,
        clock: Clock,
        on_refresh: Callable[[str], None] | None = None,
    ) -> None:
        self.provider = provider
        self.state_key = state_key
        self.access_token = access_token.strip()
        self._configured_access_token = self.access_token
        self.oauth = oauth
        self.store = store
        self.client = client
        self.clock = clock
        self.on_refresh = on_refresh
        self.expires_at: float | None = None
        self.instance_url = ""  # Salesforce: the org's API host, from the token response
        self._refresh_token: str | None = None
        self._lock = asyncio.Lock()

    @property
    def can_refresh(self) -> bool:
        return self.oauth is not None

    def replace_credentials(self, access_token: str, oauth: OAuthSettings | None) -> None:
        """Configured credentials changed (secret_reload): a new access token is used from the
        next request; a new configured refresh token replaces any rotated one."""
        configured = access_token.strip()
        if configured != self._configured_access_token:
            self._configured_access_token = configured
            if configured:  # else keep the token a refresh got
                self.access_token, self.expires_at = configured, None
        if oauth != self.oauth:
            old_refresh = self.oauth.refresh_token if self.oauth is not None else None
            if oauth is None or oauth.refresh_token != old_refresh:
                self._refresh_token = None  # read again: the stored one only if it came from it
            self.oauth = oauth

    def forget_rotated(self) -> None:
        """Read the rotated refresh token from the store again: another replica may have
        rotated it while it polled the target (this replica takes the target over)."""
        self._refresh_token = None

    async def token(self) -> str:
        if not self.access_token or self._expiring():
            if not self.can_refresh:
                raise AuthError(f"{self.provider} access_token is required")
            await self.refresh(if_unchanged=self.access_token)
        return self.access_token

    def _expiring(self) -> bool:
        return self.expires_at is not None and self.clock.monotonic() >= self.expires_at

    async def refresh(self, if_unchanged: str | None = None) -> None:
        """Get a new access token. Concurrent callers share one refresh."""
        seen = self.access_token if if_unchanged is None else if_unchanged
        async with self._lock:
            if self.access_token != seen and not self._expiring():
                return  # someone else refreshed while we waited
            try:
                await self._refresh()
            except PollError as exc:
                self._report("failure")
                raise AuthError(f"token refresh failed: {exc}") from None
            self._report("success")

    def _report(self, outcome: str) -> None:
        if self.on_refresh is not None:
            self.on_refresh(outcome)

    async def _refresh(self) -> None:
        oauth = self.oauth
        if oauth is None:
            raise PollError("OAuth refresh is not configured")
        try:
            check_url(oauth.token_url)
        except PollError as exc:
            raise PollError(f"invalid token url: {exc}") from None
        refresh_token = await self._current_refresh_token()
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if not refresh_token:
            form = {"grant_type": "client_credentials"}
        if oauth.scope.strip():
            form["scope"] = oauth.scope.strip()
        headers = {"Accept": "application/json"}
        if oauth.basic_auth:
            pair = f"{oauth.client_id}:{oauth.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form["client_id"] = oauth.client_id
            form["client_secret"] = oauth.client_secret
        try:
            reply = await self.client.post(oauth.token_url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise PollError(f"token endpoint: {type(exc).__name__}") from None
        if reply.status_code >= 300:
            snippet = reply.content[:ERROR_BODY_BYTES].decode("utf-8", errors="replace")
            raise PollError(f"token endpoint status {reply.status_code}: {snippet}")
        try:
            payload: Any = orjson.loads(reply.content)
        except orjson.JSONDecodeError as exc:
            raise PollError(f"decode token response: {exc}") from None
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise PollError("token endpoint did not return access_token")
        self.access_token = token.strip()
        self.expires_at = _expiry(payload.get("expires_in"), self.clock.monotonic())
        instance_url = payload.get("instance_url")
        if isinstance(instance_url, str) and instance_url.strip():
            self.instance_url = instance_url.strip().rstrip("/")
        rotated = payload.get("refresh_token")
        if isinstance(rotated, str) and rotated.strip() and rotated.strip() != refresh_token:
            # Persist before using it: the provider may already have revoked the old one.
            await self.store.save_token(
                self.state_key, StoredToken(rotated.strip(), origin_of(oauth.refresh_token))
            )
            self._refresh_token = rotated.strip()

    async def _current_refresh_token(self) -> str:
        if self._refresh_token is not None:
            return self._refresh_token
        assert self.oauth is not None
        configured = self.oauth.refresh_token.strip()
        stored = await self.store.load_token(self.state_key)
        if stored is not None and stored.origin == origin_of(configured):
            self._refresh_token = stored.refresh_token
        else:
            self._refresh_token = configured
        return self._refresh_token


def _expiry(expires_in: Any, now: float) -> float | None:
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float | str):
        return None
    try:
        seconds = float(expires_in)
    except ValueError:
        return None
    if seconds <= 0:
        return None
    return now + max(seconds - EXPIRY_MARGIN, seconds / 2)
