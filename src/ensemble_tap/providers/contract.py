"""The contract between provider modules and the poller: what a provider poller declares and
implements, and what the poller hands to it.

Provider modules import this module and never the poller; the poller imports this module and
the registry (``providers/__init__.py``), never a provider module. The webhook half of the
contract is in ``base.py``; ``Provider`` names both halves of one provider for the registry.

A *stream* is one ordered walk over a provider's changes (e.g. HubSpot deals sorted by
modification time, or HubSpot's archived deals). A *pass* walks a stream from a lower bound to
its end, page by page; a pass may span several cycles when a cycle's budget runs out. After
every page the engine stores the page's snapshots together with the stream's checkpoint, so a
pass always resumes exactly after the last page it finished.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.config.provider_rules import PollRules
from ensemble_tap.providers.base import WebhookProvider
from ensemble_tap.state.base import Position, StreamState

__all__ = [
    "KnownEntities",
    "Page",
    "PollAuth",
    "PollError",
    "PollHTTP",
    "Position",
    "Provider",
    "ProviderPoller",
    "Record",
    "Response",
    "Stream",
    "StreamContext",
    "StreamState",
]


class PollError(Exception):
    """A cycle failed; the message is what operators see in the status (no secrets)."""


@dataclass(slots=True, frozen=True)
class Response:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self, provider: str) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise PollError(f"decode {provider} response: {exc}") from None

    def json_object(self, provider: str) -> dict[str, Any]:
        value = self.json(provider)
        if not isinstance(value, dict):
            raise PollError(f"decode {provider} response: expected a JSON object")
        return value


class PollAuth(Protocol):
    """The target's bearer token, as a stream may need it before its first request."""

    # Salesforce: the org's API host, from the token response ("" until one named it).
    instance_url: str

    async def token(self) -> str: ...


class PollHTTP(Protocol):
    """Requests to the provider's API: budgets, pacing, auth and error mapping included.

    ``request`` raises PollError for failures (the poller's subclasses say which).
    """

    @property
    def auth(self) -> PollAuth: ...

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        allow_status: tuple[int, ...] = (),
    ) -> Response: ...


@dataclass(slots=True, frozen=True)
class Record:
    """One record as the provider returned it.

    ``version_ns`` is the provider's modification time (None when the record carries none:
    such a record never moves a checkpoint, and its dedup id uses a content hash instead).
    A record with ``deleted`` set reports that the entity is gone; its ``snapshot`` is unused.
    """

    entity_type: str
    entity_id: str
    snapshot: dict[str, Any] | None
    version_ns: int | None
    deleted: bool = False
    time_ns: int | None = None  # event time when it differs from the version time

    @property
    def event_time_ns(self) -> int | None:
        return self.time_ns if self.time_ns is not None else self.version_ns


@dataclass(slots=True, frozen=True)
class Page:
    """One provider response worth of records.

    ``start`` is where this page was read from (a pass resumes there if the page could not be
    finished; None restarts the pass). ``next`` is where the pass continues after it; None
    ends the pass. ``cursor_ns`` is the stream's new high-water mark once the page is done.
    """

    records: Sequence[Record]
    start: Position | None
    next: Position | None
    cursor_ns: int | None = None


class Stream(Protocol):
    """One ordered walk over a provider's changes; ``name`` scopes its checkpoint."""

    name: str
    # Run a new pass only every ``period`` cycles (delete scans are full listings); a pass in
    # progress always continues.
    period: int

    def pages(self, start: Position, http: PollHTTP) -> AsyncGenerator[Page, None]: ...


# Entities of a target the store knows, for delete detection by absence (Notion).
KnownEntities = Callable[[Sequence[str]], Awaitable[set[tuple[str, str]]]]


@dataclass(slots=True, frozen=True)
class StreamContext:
    """What a provider needs from the runtime to build its streams."""

    state_key: str
    interval: float
    known_entities: KnownEntities
    now_ns: Callable[[], int]
    # ``poll_delete_interval``: how often delete lists that cost extra requests are read.
    delete_interval: float = 300.0


class ProviderPoller(PollRules, Protocol):
    """A provider's polling knowledge (one per provider module): its requests, and the facts
    and checks config validation applies to its poll targets (``PollRules``)."""

    # Extra headers on every request (e.g. Notion-Version).
    headers: Mapping[str, str]
    # Client authentication at the token endpoint: HTTP Basic (Intuit) or the form body.
    basic_token_auth: bool

    def streams(self, settings: ProviderConfig, context: StreamContext) -> list[Stream]: ...

    def rate_limit_hint(self, response: Response) -> float | None:
        """A wait in seconds when a non-429 response means "rate limited", else None."""
        ...


@dataclass(slots=True, frozen=True)
class Provider:
    """One line of the registry: a provider name and what it can do.

    ``webhook`` None: deliveries go through the generic HMAC verifier (``X-Signature``).
    ``poller`` None: the provider cannot be polled.
    """

    name: str
    webhook: WebhookProvider | None = None
    poller: ProviderPoller | None = None


def base_url(settings: ProviderConfig) -> str:
    """``base_url`` without surrounding space and trailing slashes."""
    return settings.base_url.strip().rstrip("/")


def scan_period(interval: float, every: float) -> int:
    """Cycles between two delete scans (HubSpot's archived records, Notion's full search:
    listings of everything) that run about ``every`` seconds at this poll interval (at least
    every cycle; ``every`` 0: every cycle)."""
    return max(1, round(every / interval)) if interval > 0 else 1


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]…``, or None where the path does not exist."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def objects_of(settings: ProviderConfig, default: Sequence[str]) -> list[str]:
    objects = [name.strip() for name in (settings.objects or []) if name.strip()]
    return objects or list(default)
