"""Provider requests: bearer auth, OAuth refresh, budgets, pacing, 429 and error mapping.

One ``ProviderHTTP`` per poll target. Every provider request passes, in order: URL check
(http/https, a host, no user info), the cycle's fetch budget, the target's token bucket, then
the request itself with the current bearer token. A 401 (or a 403 that is not a rate limit)
refreshes the token once and retries; 429 becomes ``RateLimited`` with the server's
``Retry-After``. Token refreshes and the one retry after them do not count against the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from ensemble_tap.poller.clock import Clock
from ensemble_tap.poller.errors import BudgetExhausted, PollError, RateLimited, UpstreamError
from ensemble_tap.providers.contract import PollAuth, Response

DEFAULT_RETRY_AFTER = 2.0
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
ERROR_BODY_BYTES = 256
DEFAULT_MAX_PAGES = 200
DEFAULT_MAX_REQUESTS = 400


def check_url(url: str) -> None:
    """Outbound URLs: http(s) with a host and without user info (credentials in URLs leak)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise PollError(f"invalid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise PollError(f'unsupported URL scheme "{parts.scheme}"')
    if not parts.hostname:
        raise PollError("missing URL host")
    if parts.username is not None or parts.password is not None:
        raise PollError("URL userinfo is not allowed")


def retry_after_seconds(value: str | None, now_ns: int) -> float:
    """``Retry-After`` as seconds: a positive integer, or a future HTTP date; else 2 s."""
    text = (value or "").strip()
    if text.isdigit() and int(text) > 0:
        return float(int(text))
    if text:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER
        if moment.tzinfo is not None:
            wait = moment.timestamp() - now_ns / 1e9
            if wait > 0:
                return wait
    return DEFAULT_RETRY_AFTER


class FetchBudget:
    """Pages and requests one cycle may use, shared by all streams of the target."""

    def __init__(self, max_pages: int, max_requests: int) -> None:
        self.max_pages = max_pages if max_pages > 0 else DEFAULT_MAX_PAGES
        self.max_requests = max_requests if max_requests > 0 else DEFAULT_MAX_REQUESTS
        self.requests = 0
        self.pages = 0

    def take_request(self) -> None:
        if self.requests >= self.max_requests or self.pages >= self.max_pages:
            raise BudgetExhausted
        self.requests += 1

    def page_done(self) -> None:
        self.pages += 1


class TokenBucket:
    """Paces a target's requests: ``rate`` per second with bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.tokens = self.burst
        self.clock = clock
        self.updated = clock.monotonic()

    async def acquire(self) -> None:
        while True:
            now = self.clock.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await self.clock.sleep((1 - self.tokens) / self.rate)


# Returns a wait in seconds when a response means "rate limited" although it is not a 429
# (Salesforce answers 403 REQUEST_LIMIT_EXCEEDED).
RateLimitHint = Callable[[Response], float | None]


class TokenAuth(PollAuth, Protocol):
    """The target's tokens (``oauth.TokenSource``): refreshed once after a 401."""

    @property
    def can_refresh(self) -> bool: ...

    async def refresh(self, if_unchanged: str | None = None) -> None: ...


class ProviderHTTP:
    """The ``PollHTTP`` of one poll target."""

    def __init__(
        self,
        provider: str,
        *,
        client: httpx.AsyncClient,
        auth: TokenAuth,
        limiter: TokenBucket,
        clock: Clock,
        headers: Mapping[str, str] | None = None,
        rate_limit_hint: RateLimitHint | None = None,
    ) -> None:
        self.provider = provider
        self.client = client
        self.auth = auth
        self.limiter = limiter
        self.clock = clock
        self.headers = dict(headers or {})
        self.rate_limit_hint = rate_limit_hint
        self.budget = FetchBudget(0, 0)

    def new_cycle(self, budget: FetchBudget) -> None:
        self.budget = budget

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        allow_status: tuple[int, ...] = (),
    ) -> Response:
        """One logical provider request; raises PollError, RateLimited or BudgetExhausted."""
        check_url(url)
        self.budget.take_request()
        await self.limiter.acquire()
        response = await self._send(method, url, json=json, params=params, headers=headers)
        if response.status in (401, 403) and self._hint(response) is None and self.auth.can_refresh:
            await self.auth.refresh()
            await self.limiter.acquire()
            response = await self._send(method, url, json=json, params=params, headers=headers)
        wait = self._hint(response)
        if wait is not None:
            raise RateLimited(self.provider, wait)
        if response.status >= 300 and response.status not in allow_status:
            snippet = response.body[:ERROR_BODY_BYTES].decode("utf-8", errors="replace")
            raise UpstreamError(
                f"{self.provider} request failed: request failed with status "
                f"{response.status}: {snippet}",
                response.status,
            )
        return response

    def _hint(self, response: Response) -> float | None:
        if response.status == 429:
            return retry_after_seconds(response.headers.get("retry-after"), self.clock.now_ns())
        if self.rate_limit_hint is not None and response.status >= 400:
            return self.rate_limit_hint(response)
        return None

    async def _send(
        self,
        method: str,
        url: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> Response:
        token = await self.auth.token()
        merged = {**self.headers, **(headers or {}), "Authorization": f"Bearer {token}"}
        if json is not None:
            merged.setdefault("Content-Type", "application/json")
        content = orjson.dumps(json) if json is not None else None
        try:
            async with self.client.stream(
                method, url, content=content, params=params, headers=merged
            ) as reply:
                body = await _read_capped(reply)
                return Response(reply.status_code, reply.headers, body)
        except httpx.HTTPError as exc:
            raise PollError(
                f"{self.provider} request failed: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from None


async def _read_capped(reply: httpx.Response) -> bytes:
    """The body, refusing more than MAX_RESPONSE_BYTES (the reference read without limit)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in reply.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise PollError(f"response larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
