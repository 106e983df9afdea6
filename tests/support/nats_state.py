"""The NATS state store and lease buckets on a real nats-server, with bucket names of the
test's own (so tests sharing a server never see each other's keys)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator

import nats
from nats.aio.client import Client

from ensemble_tap.state.jetstream import INLINE_LIMIT, NatsStateStore

_names = itertools.count()


def bucket_names() -> tuple[str, str]:
    """A fresh (state, large) pair of bucket names."""
    n = next(_names)
    return f"TEST_STATE_{os.getpid()}_{n}", f"TEST_LARGE_{os.getpid()}_{n}"


@contextlib.asynccontextmanager
async def nats_store(
    url: str, *, inline_limit: int = INLINE_LIMIT, buckets: tuple[str, str] | None = None
) -> AsyncIterator[NatsStateStore]:
    """A store on its own connection; ``buckets`` shares them with another store."""
    state, large = buckets or bucket_names()
    nc: Client = await nats.connect(url)
    try:
        store = await NatsStateStore.open(
            nc.jetstream(),
            replicas=1,
            inline_limit=inline_limit,
            bucket=state,
            large_bucket=large,
        )
        yield store
        await store.close()
    finally:
        await nc.close()
