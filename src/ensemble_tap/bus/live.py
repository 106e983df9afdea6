"""Events as they are published: an ordered ephemeral consumer of the events stream, from
now on (``GET /admin/events/stream``). Nothing is acknowledged or stored; the consumer goes
away with the subscription."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

# Events held for one slow reader; beyond, the oldest waiting ones are dropped (counted).
QUEUE_SIZE = 1024


@dataclass(slots=True, frozen=True)
class LiveEvent:
    sequence: int  # in the events stream
    data: bytes  # the CloudEvent


@dataclass(slots=True, eq=False)  # compared (and hashed) by identity: kept in sets
class LiveFeed:
    """What one subscription delivered; ``None`` in ``queue`` ends it (``close``)."""

    queue: asyncio.Queue[LiveEvent | None]
    dropped: int = 0

    def offer(self, event: LiveEvent) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    def close(self) -> None:
        """End the reader's loop (the service stops)."""
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(None)


@contextlib.asynccontextmanager
async def live_events(
    js: JetStreamContext, *, stream: str, subject: str
) -> AsyncIterator[LiveFeed]:
    """Events of ``stream`` on ``subject`` published from now on, while the context lasts."""
    feed = LiveFeed(asyncio.Queue(QUEUE_SIZE))

    async def on_message(msg: Msg) -> None:
        feed.offer(LiveEvent(msg.metadata.sequence.stream, msg.data or b""))

    subscription = await js.subscribe(
        subject,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
        stream=stream,
    )
    try:
        yield feed
    finally:
        with contextlib.suppress(Exception):  # the connection may be closing already
            await subscription.unsubscribe()
