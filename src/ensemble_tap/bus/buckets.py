"""JetStream key-value buckets: opened (created when missing) for the layers above ``bus/``,
with the few errors they act on, so that no module above imports nats-py's KV directly.

A bucket keeps one revision per key (``history`` 1); every write may name the revision it
expects (``last``), which makes it a compare-and-set: the basis of claims, fencing and
create-if-absent records.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from ensemble_tap.state.buckets import create_if_absent

__all__ = [
    "BUCKET_UNAVAILABLE",
    "Bucket",
    "BucketOnFirstUse",
    "Entry",
    "KeyValue",
    "RevisionMismatch",
    "open_bucket",
]

# A write whose expected revision is not the key's current one (or a create of a key that
# exists): someone else wrote first.
RevisionMismatch = KeyWrongLastSequenceError
# What a bucket operation raises when NATS cannot be reached or does not answer in time.
BUCKET_UNAVAILABLE: tuple[type[Exception], ...] = (NatsError, TimeoutError, OSError)
# How long a removed key's purge marker stays before the server drops it.
MARKER_TTL = 60.0


@dataclass(slots=True, frozen=True)
class Entry:
    key: str
    value: bytes
    revision: int


class Bucket:
    """One KV bucket: get, create-if-absent, compare-and-set, remove, and a snapshot of all
    current values."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, key: str) -> Entry | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return Entry(key, entry.value or b"", entry.revision or 0)

    async def create(self, key: str, value: bytes) -> int:
        """Write ``key`` only when it has no value; RevisionMismatch when it has one."""
        return int(await create_if_absent(self.kv, key, value))

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write ``key`` only when its current revision is ``revision``; the new revision."""
        return int(await self.kv.update(key, value, last=revision))

    async def remove(self, key: str) -> None:
        """Drop the key; its marker expires after MARKER_TTL, so removed keys leave nothing."""
        await self.kv.purge(key, msg_ttl=MARKER_TTL)

    async def snapshot(self, prefix: str, timeout: float = 5.0) -> AsyncIterator[Entry]:
        """The current value of every key under ``prefix`` (a consistent read of the bucket's
        stream, one consumer, not one request per key)."""
        watcher = await self.kv.watch(f"{prefix}>")
        try:
            while True:
                update = await watcher.updates(timeout)  # type: ignore[no-untyped-call]
                if update is None:
                    return
                if update.operation in (KV_DEL, KV_PURGE) or not update.value:
                    if update.delta == 0:
                        return
                    continue
                yield Entry(update.key, update.value, update.revision or 0)
                if update.delta == 0:
                    return
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]


class BucketOnFirstUse:
    """``await it()``: the bucket ``open_bucket`` opens, opened at the first call (NATS may
    be reached only after start-up) and only once, also when calls race."""

    def __init__(self, open_bucket: Callable[[], Awaitable[Bucket]]) -> None:
        self._open_bucket = open_bucket
        self._bucket: Bucket | None = None
        self._opening = asyncio.Lock()

    async def __call__(self) -> Bucket:
        if self._bucket is None:
            async with self._opening:
                if self._bucket is None:
                    self._bucket = await self._open_bucket()
        return self._bucket


async def open_bucket(
    js: JetStreamContext, name: str, *, replicas: int, max_age: float = 0.0, attempts: int = 3
) -> Bucket:
    """Bind to bucket ``name``, creating it (file storage, one revision per key, per-message
    TTLs allowed for markers, values dropped ``max_age`` seconds after their write unless 0)
    when it does not exist. Replicas creating it at the same moment all succeed: the creation
    is idempotent for an equal configuration."""
    for attempt in range(attempts):
        try:
            return Bucket(await js.key_value(name))
        except BucketNotFoundError:
            pass
        try:
            config = KeyValueConfig(
                bucket=name, history=1, replicas=replicas, storage=StorageType.FILE, ttl=max_age
            )
            return Bucket(await js.create_key_value(config))
        except NatsError:
            if attempt + 1 == attempts:
                raise
            await asyncio.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")
