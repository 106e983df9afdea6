"""``GET /admin/events/stream``: server-sent events of the events stream as it is written.

One ``data:`` line of CloudEvent JSON per event with ``id:`` its stream sequence, a comment
every ``KEEPALIVE`` seconds so proxies keep the connection, at most ``MAX_STREAMS`` streams at
once (the next gets ``503``). A stream ends when the client goes away (Starlette cancels the
generator: the consumer is unsubscribed in its ``finally``) or when the service stops
(``LiveStreams.close_all``: shutdown is not held up by open streams).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import orjson

from ensemble_tap.bus.live import LiveEvent, LiveFeed

MAX_STREAMS = 16
KEEPALIVE = 15.0
OpenFeed = Callable[[], AbstractAsyncContextManager[LiveFeed]]


@dataclass(slots=True, frozen=True)
class TailFilter:
    provider: str = ""
    tenant: str = ""
    type: str = ""

    def matches(self, event: dict[str, object]) -> bool:
        # source is tap/<provider>/<tenant or "default"> (events.build_envelope)
        _, _, rest = str(event.get("source", "")).partition("/")
        provider, _, tenant = rest.partition("/")
        return (
            (not self.provider or provider == self.provider)
            and (not self.tenant or tenant == self.tenant)
            and (not self.type or event.get("type") == self.type)
        )


@dataclass(slots=True)
class LiveStreams:
    """The open streams of one admin app."""

    limit: int = MAX_STREAMS
    keepalive: float = KEEPALIVE
    feeds: set[LiveFeed] = field(default_factory=set)
    open: int = 0  # counted before the subscription is made, so the limit holds
    closed: bool = False

    def full(self) -> bool:
        return self.closed or self.open >= self.limit

    def close_all(self) -> None:
        self.closed = True
        for feed in self.feeds:
            feed.close()

    async def serve(self, open_feed: OpenFeed, wanted: TailFilter) -> AsyncIterator[bytes]:
        """The response body: SSE frames until the client leaves or the service stops."""
        self.open += 1
        try:
            async for frame in self._frames(open_feed, wanted):
                yield frame
        finally:
            self.open -= 1

    async def _frames(self, open_feed: OpenFeed, wanted: TailFilter) -> AsyncIterator[bytes]:
        async with open_feed() as feed:
            self.feeds.add(feed)
            if self.closed:
                return
            try:
                yield b": connected\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(feed.queue.get(), self.keepalive)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if event is None:
                        return
                    frame = _frame(event, wanted)
                    if frame:
                        yield frame
            finally:
                self.feeds.discard(feed)


def _frame(event: LiveEvent, wanted: TailFilter) -> bytes:
    try:
        value = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return b""
    if not isinstance(value, dict) or not wanted.matches(value):
        return b""
    return b"id: %d\ndata: %s\n\n" % (event.sequence, orjson.dumps(value))
