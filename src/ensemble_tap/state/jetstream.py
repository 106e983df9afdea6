"""State in JetStream KV (``state.backend: nats``): shared by every replica, so the replica
that takes a target over resumes exactly where the last holder committed.

Bucket ``TAP_POLL_STATE`` (history 1, ``nats.stream_replicas``) holds, keyed by escaped parts
(``kv_keys.py``): ``cp.<state key>.<stream>`` a stream's checkpoint, ``snap.<state key>.<type>.
<id>`` a record's snapshot (``=<digest>\\n<canonical JSON>``), ``tok.<state key>`` a rotated
refresh token, ``ctl.<state key>`` an operator's pause of the target (read by whichever
replica holds the target's lease), ``legacy.<state key>`` the reference's single checkpoint
(from ``state migrate``), and ``ver.<state key>.<type>.<id>`` the newest version the webhook
path saw of a record (``{"version_ns": …, "deleted": …}``, raised by compare-and-set, never
lowered). A snapshot larger than ``inline_limit`` (KV values are bounded by the server's
``max_payload``) lives in object store ``TAP_POLL_LARGE`` under the same name, and its KV
value is ``><digest>``.

Commits are fenced: a page's checkpoint is written with compare-and-set on the revision this
store read or last wrote, so once another replica has committed the stream, this one's commit
fails (``StaleCheckpoint``) and its engine reads the checkpoint again. KV has no transaction
over several keys, so a page's snapshots are written before its checkpoint; a failure between
leaves snapshots ahead of the checkpoint, which is harmless because a page's events are
published before its commit: the page is read again, finds those records unchanged, and their
events are already in the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import TypeVar

import orjson
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from ensemble_tap.state import kv_keys
from ensemble_tap.state.base import (
    EntityKey,
    SnapshotWrite,
    StateError,
    StoredSnapshot,
    StoredToken,
    StreamState,
    TargetControl,
)
from ensemble_tap.state.buckets import (
    LARGE_BUCKET,
    STATE_BUCKET,
    create_if_absent,
    ensure_kv,
    ensure_object_store,
)
from ensemble_tap.state.kv_scan import scan
from ensemble_tap.state.versions import SeenVersion, VersionNote

# Attempts to raise one version against concurrent writers (other ingress processes).
VERSION_ATTEMPTS = 5
# Well under nats-server's default max_payload (1 MiB), leaving room for the subject/headers.
INLINE_LIMIT = 512 * 1024
_T = TypeVar("_T")


class StaleCheckpoint(StateError):
    """Another replica committed this stream since this store read it: nothing committed."""


@contextlib.asynccontextmanager
async def _errors(action: str) -> AsyncIterator[None]:
    try:
        yield
    except StateError:
        raise
    except (NatsError, TimeoutError, OSError) as exc:  # OSError: a connection lost mid-call
        raise StateError(f"state in nats: {action}: {exc or type(exc).__name__}") from exc


class NatsStateStore:
    def __init__(
        self, kv: KeyValue, objects: ObjectStore, *, inline_limit: int = INLINE_LIMIT
    ) -> None:
        self._kv = kv
        self._objects = objects
        self.inline_limit = inline_limit
        # (state key, stream) → the checkpoint revision the next commit must replace (0: none)
        self._revisions: dict[tuple[str, str], int] = {}

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        replicas: int,
        inline_limit: int = INLINE_LIMIT,
        bucket: str = STATE_BUCKET,
        large_bucket: str = LARGE_BUCKET,
    ) -> NatsStateStore:
        """Create (or find) the buckets. JetStream errors propagate: the caller retries."""
        kv = await ensure_kv(js, bucket, replicas=replicas)
        objects = await ensure_object_store(js, large_bucket, replicas=replicas)
        return cls(kv, objects, inline_limit=inline_limit)

    async def _get(self, key: str) -> KeyValue.Entry | None:
        try:
            return await self._kv.get(key)
        except KeyNotFoundError:
            return None

    async def load_stream(self, state_key: str, stream: str) -> StreamState:
        async with _errors(f"read checkpoint {state_key}/{stream}"):
            entry = await self._get(kv_keys.checkpoint_key(state_key, stream))
            if entry is not None and entry.value is not None:
                self._revisions[(state_key, stream)] = entry.revision or 0
                return StreamState.from_json(entry.value)
            self._revisions[(state_key, stream)] = 0
            legacy = await self._get(kv_keys.legacy_key(state_key))
        if legacy is not None and legacy.value is not None:
            return StreamState(cursor_ns=StreamState.from_json(legacy.value).cursor_ns)
        return StreamState()

    async def load_streams(self, state_key: str) -> dict[str, StreamState]:
        prefix = kv_keys.checkpoint_key(state_key, "")[: -len(kv_keys.escape(""))]
        async with _errors(f"read checkpoints of {state_key}"):
            entries = await scan(self._kv, f"{prefix}*")
        found: dict[str, StreamState] = {}
        for entry in entries:
            stream = kv_keys.unescape(entry.key.rsplit(".", 1)[1])
            self._revisions[(state_key, stream)] = entry.revision or 0
            found[stream] = StreamState.from_json(entry.value or b"")
        return found

    async def get_snapshots(
        self, state_key: str, keys: Sequence[EntityKey]
    ) -> dict[EntityKey, StoredSnapshot]:
        unique = list(dict.fromkeys(keys))
        async with _errors(f"read snapshots of {state_key}"):
            found = await _all(self._read_snapshot(state_key, *key) for key in unique)
        return {key: snap for key, snap in zip(unique, found, strict=True) if snap is not None}

    async def _read_snapshot(
        self, state_key: str, entity_type: str, entity_id: str
    ) -> StoredSnapshot | None:
        name = kv_keys.snapshot_key(state_key, entity_type, entity_id)
        entry = await self._get(name)
        if entry is None or not entry.value:
            return None
        value = entry.value
        if value[:1] == b"=":
            digest, _, payload = value[1:].partition(b"\n")
            return StoredSnapshot(digest.decode(), payload)
        if value[:1] == b">":
            try:
                payload = (await self._objects.get(name)).data or b""
            except NotFoundError:
                raise StateError(f"snapshot {name} points to a missing object") from None
            # The object is written first: after a failed commit it may be newer than the KV
            # value, and its own digest is then the true one.
            return StoredSnapshot(hashlib.sha256(payload).hexdigest(), payload)
        raise StateError(f"snapshot {name}: unknown encoding")

    async def known_entities(self, state_key: str, entity_types: Sequence[str]) -> set[EntityKey]:
        found: set[EntityKey] = set()
        async with _errors(f"list snapshots of {state_key}"):
            for entity_type in dict.fromkeys(entity_types):
                prefix = kv_keys.snapshot_key(state_key, entity_type, "")[:-1]
                for entry in await scan(self._kv, f"{prefix}*", values=False):
                    found.add((entity_type, kv_keys.unescape(entry.key.rsplit(".", 1)[1])))
        return found

    async def commit(
        self, state_key: str, stream: str, writes: Sequence[SnapshotWrite], state: StreamState
    ) -> None:
        checkpoint = state.to_json()  # encode first: a failure must change nothing
        last = self._revisions.get((state_key, stream), 0)
        async with _errors(f"commit {state_key}/{stream}"):
            await _all(self._write_snapshot(state_key, write) for write in writes)
            try:
                revision = await self._kv.update(
                    kv_keys.checkpoint_key(state_key, stream), checkpoint, last=last
                )
            except KeyWrongLastSequenceError:
                self._revisions.pop((state_key, stream), None)
                raise StaleCheckpoint(
                    f"checkpoint {state_key}/{stream} was committed by another replica since "
                    "this one read it: page not committed"
                ) from None
        self._revisions[(state_key, stream)] = revision

    async def _write_snapshot(self, state_key: str, write: SnapshotWrite) -> None:
        name = kv_keys.snapshot_key(state_key, write.entity_type, write.entity_id)
        snapshot = write.snapshot
        if snapshot is None:
            entry = await self._get(name)
            if entry is not None and entry.value and entry.value[:1] == b">":
                with contextlib.suppress(NotFoundError):
                    await self._objects.delete(name)
            if entry is not None:
                await self._kv.delete(name)
            return
        if len(snapshot.payload) > self.inline_limit:
            await self._objects.put(name, snapshot.payload)
            await self._kv.put(name, b">" + snapshot.digest.encode())
        else:
            await self._kv.put(name, b"=" + snapshot.digest.encode() + b"\n" + snapshot.payload)

    async def record_versions(self, notes: Sequence[VersionNote]) -> None:
        async with _errors("record webhook versions"):
            await _all(self._record_version(note) for note in notes)

    async def _record_version(self, note: VersionNote) -> None:
        name = kv_keys.version_key(note.state_key, note.entity_type, note.entity_id)
        for _ in range(VERSION_ATTEMPTS):
            entry = await self._get(name)
            current = _version_of(entry)
            wanted = note.seen.merged(current)
            if wanted == current:
                return
            value = encode_version(wanted)
            try:
                if entry is None:
                    await create_if_absent(self._kv, name, value)
                else:
                    await self._kv.update(name, value, last=entry.revision)
                return
            except KeyWrongLastSequenceError:
                continue  # written by another process meanwhile: compare again
        raise StateError(f"version {name}: written concurrently {VERSION_ATTEMPTS} times")

    async def get_versions(
        self, state_key: str, keys: Sequence[EntityKey]
    ) -> dict[EntityKey, SeenVersion]:
        unique = list(dict.fromkeys(keys))
        async with _errors(f"read versions of {state_key}"):
            entries = await _all(self._get(kv_keys.version_key(state_key, *key)) for key in unique)
        found = {key: _version_of(entry) for key, entry in zip(unique, entries, strict=True)}
        return {key: seen for key, seen in found.items() if seen is not None}

    async def load_token(self, state_key: str) -> StoredToken | None:
        async with _errors(f"read token of {state_key}"):
            entry = await self._get(kv_keys.token_key(state_key))
        if entry is None or not entry.value:
            return None
        value = orjson.loads(entry.value)
        return StoredToken(value["refresh_token"], value["origin"])

    async def save_token(self, state_key: str, token: StoredToken) -> None:
        value = encode_token(token)
        async with _errors(f"save token of {state_key}"):
            await self._kv.put(kv_keys.token_key(state_key), value)

    async def load_control(self, state_key: str) -> TargetControl | None:
        async with _errors(f"read control of {state_key}"):
            entry = await self._get(kv_keys.control_key(state_key))
        if entry is None or not entry.value:
            return None
        return TargetControl.from_json(entry.value)

    async def save_control(self, state_key: str, control: TargetControl | None) -> None:
        name = kv_keys.control_key(state_key)
        async with _errors(f"save control of {state_key}"):
            if control is None:
                await self._kv.delete(name)
            else:
                await self._kv.put(name, control.to_json())

    async def reset_checkpoints(self, state_key: str) -> int:
        """Overwrite the target's checkpoints with empty ones (and drop the reference's). The
        holder's next commit of a stream then fails its compare-and-set (``StaleCheckpoint``),
        and its engine reads the checkpoint anew: empty, so it starts from the lookback.
        (Written, not deleted: a commit expecting "no key" fails on a delete marker.)"""
        prefix = kv_keys.checkpoint_key(state_key, "")[: -len(kv_keys.escape(""))]
        empty = StreamState().to_json()
        async with _errors(f"reset checkpoints of {state_key}"):
            entries = await scan(self._kv, f"{prefix}*")
            names = [
                e.key for e in entries if StreamState.from_json(e.value or b"") != StreamState()
            ]
            await _all(self._kv.put(name, empty) for name in names)
            legacy = await self._get(kv_keys.legacy_key(state_key))
            if legacy is not None:
                await self._kv.delete(kv_keys.legacy_key(state_key))
                names.append(kv_keys.legacy_key(state_key))
        return len(names)

    async def close(self) -> None:
        """Nothing to close: the connection belongs to the caller."""

    # Migration (``ensemble-tap state migrate``): each write only creates what is missing,
    # so a second run changes nothing and never overwrites state replicas have committed.

    async def import_value(self, key: str, value: bytes) -> bool:
        """Create ``key`` unless it exists; True when it was created."""
        async with _errors(f"import {key}"):
            try:
                await create_if_absent(self._kv, key, value)
            except KeyWrongLastSequenceError:
                return False
        return True

    async def import_snapshot(
        self, state_key: str, *, entity_type: str, entity_id: str, snapshot: StoredSnapshot
    ) -> bool:
        name = kv_keys.snapshot_key(state_key, entity_type, entity_id)
        async with _errors(f"import {name}"):
            if await self._get(name) is not None:
                return False
            await self._write_snapshot(state_key, SnapshotWrite(entity_type, entity_id, snapshot))
        return True


def _version_of(entry: KeyValue.Entry | None) -> SeenVersion | None:
    if entry is None or not entry.value:
        return None
    try:
        value = orjson.loads(entry.value)
        return SeenVersion(int(value["version_ns"]), bool(value["deleted"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise StateError(f"version {entry.key}: not a stored version") from None


def encode_version(seen: SeenVersion) -> bytes:
    return orjson.dumps({"version_ns": seen.version_ns, "deleted": seen.deleted})


def encode_token(token: StoredToken) -> bytes:
    return orjson.dumps({"refresh_token": token.refresh_token, "origin": token.origin})


async def _all(calls: Iterable[Awaitable[_T]]) -> list[_T]:
    """Run concurrently (nats-py pipelines them on one connection); raise the first error
    only after every call has ended, so none is left running behind the caller's back."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
