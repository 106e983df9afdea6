"""The JetStream buckets of the poll state, created idempotently.

Callers hand in nats-py's JetStream context (``state/`` never imports ``ensemble_tap.bus``).
A bucket that exists with another configuration (``nats.stream_replicas`` or
``state.lease_ttl`` changed) is updated in place; any other error is the caller's to retry.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

STATE_BUCKET = "TAP_POLL_STATE"  # checkpoints, snapshots, rotated refresh tokens
LARGE_BUCKET = "TAP_POLL_LARGE"  # object store: snapshots too large for a KV value
LEASE_BUCKET = "TAP_POLL_LEASES"  # a lease per poll target, a heartbeat per replica
# JSStreamNameExistErr: "stream name already in use with a different configuration".
_EXISTS_OTHERWISE = 10058
# nats-py's KV default; a stream's duplicate window may not exceed its max_age.
_KV_DUPLICATE_WINDOW = 120.0
# create_if_absent's tries when the key keeps vanishing under it (each try is two requests).
_CREATE_ATTEMPTS = 3


async def ensure_kv(
    js: JetStreamContext, bucket: str, *, replicas: int, ttl: float | None = None
) -> KeyValue:
    """The KV bucket, created or brought to ``replicas`` and ``ttl`` (None: keep forever)."""
    config = KeyValueConfig(
        bucket=bucket, history=1, replicas=replicas, ttl=ttl, storage=StorageType.FILE
    )
    try:
        return await js.create_key_value(config)
    except BadRequestError as exc:
        if exc.err_code != _EXISTS_OTHERWISE:
            raise
    info = await js.stream_info(f"KV_{bucket}")
    stream = info.config
    stream.num_replicas = replicas
    stream.max_age = ttl or 0.0
    stream.duplicate_window = min(_KV_DUPLICATE_WINDOW, ttl) if ttl else _KV_DUPLICATE_WINDOW
    await js.update_stream(stream)
    return await js.key_value(bucket)


async def ensure_object_store(js: JetStreamContext, bucket: str, *, replicas: int) -> ObjectStore:
    config = ObjectStoreConfig(replicas=replicas, storage=StorageType.FILE)
    try:
        return await js.create_object_store(bucket, config)
    except BadRequestError as exc:
        if exc.err_code != _EXISTS_OTHERWISE:
            raise
    info = await js.stream_info(f"OBJ_{bucket}")
    stream = info.config
    stream.num_replicas = replicas
    await js.update_stream(stream)
    return await js.object_store(bucket)


async def create_if_absent(kv: KeyValue, key: str, value: bytes) -> int:
    """Write ``key`` only when it has no live value; its revision. KeyWrongLastSequenceError
    when it has one.

    nats-py's ``create`` writes at revision 0 and, when the key has messages, reads it to see
    whether the last one is a delete marker; a key whose last message expires between the two
    (a lease past its ``max_age``, a purge marker past its TTL) makes that read raise
    KeyNotFoundError. The key is then absent, so the create is tried again.
    """
    for _ in range(_CREATE_ATTEMPTS - 1):
        try:
            return await kv.create(key, value)
        except KeyNotFoundError:
            continue
    return await kv.create(key, value)
