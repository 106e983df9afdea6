"""State in process memory: gone on restart (every record is then announced again)."""

from __future__ import annotations

from collections.abc import Sequence

from ensemble_tap.state.base import (
    EntityKey,
    SnapshotWrite,
    StoredSnapshot,
    StoredToken,
    StreamState,
    TargetControl,
)
from ensemble_tap.state.versions import SeenVersion, VersionNote, merge_into


class MemoryStateStore:
    def __init__(self) -> None:
        # Tuple keys: parts may contain ':' (state keys do), so joined strings could collide.
        self._streams: dict[tuple[str, str], bytes] = {}
        self._snapshots: dict[str, dict[EntityKey, StoredSnapshot]] = {}
        self._tokens: dict[str, StoredToken] = {}
        self._versions: dict[str, dict[EntityKey, SeenVersion]] = {}
        self._controls: dict[str, TargetControl] = {}

    async def load_stream(self, state_key: str, stream: str) -> StreamState:
        data = self._streams.get((state_key, stream))
        return StreamState() if data is None else StreamState.from_json(data)

    async def load_streams(self, state_key: str) -> dict[str, StreamState]:
        return {
            stream: StreamState.from_json(data)
            for (key, stream), data in self._streams.items()
            if key == state_key
        }

    async def get_snapshots(
        self, state_key: str, keys: Sequence[EntityKey]
    ) -> dict[EntityKey, StoredSnapshot]:
        stored = self._snapshots.get(state_key, {})
        # Snapshots are immutable bytes, so callers can never change what is stored.
        return {key: stored[key] for key in keys if key in stored}

    async def known_entities(self, state_key: str, entity_types: Sequence[str]) -> set[EntityKey]:
        wanted = set(entity_types)
        return {key for key in self._snapshots.get(state_key, {}) if key[0] in wanted}

    async def commit(
        self, state_key: str, stream: str, writes: Sequence[SnapshotWrite], state: StreamState
    ) -> None:
        checkpoint = _exact(state.to_json())  # encode first: a failure must change nothing
        snapshots = self._snapshots.setdefault(state_key, {})
        for write in writes:
            key = (write.entity_type, write.entity_id)
            if write.snapshot is None:
                snapshots.pop(key, None)
            else:
                snapshots[key] = StoredSnapshot(
                    write.snapshot.digest, _exact(write.snapshot.payload)
                )
        self._streams[(state_key, stream)] = checkpoint

    async def record_versions(self, notes: Sequence[VersionNote]) -> None:
        for note in notes:
            found = self._versions.setdefault(note.state_key, {})
            merge_into(found, (note.entity_type, note.entity_id), note.seen)

    async def get_versions(
        self, state_key: str, keys: Sequence[EntityKey]
    ) -> dict[EntityKey, SeenVersion]:
        stored = self._versions.get(state_key, {})
        return {key: stored[key] for key in keys if key in stored}

    async def load_token(self, state_key: str) -> StoredToken | None:
        return self._tokens.get(state_key)

    async def save_token(self, state_key: str, token: StoredToken) -> None:
        self._tokens[state_key] = token

    async def load_control(self, state_key: str) -> TargetControl | None:
        return self._controls.get(state_key)

    async def save_control(self, state_key: str, control: TargetControl | None) -> None:
        if control is None:
            self._controls.pop(state_key, None)
        else:
            self._controls[state_key] = control

    async def reset_checkpoints(self, state_key: str) -> int:
        keys = [key for key in self._streams if key[0] == state_key]
        for key in keys:
            del self._streams[key]
        return len(keys)

    async def close(self) -> None:
        return None


def _exact(data: bytes) -> bytes:
    """A copy of exactly ``len(data)`` bytes. orjson returns bytes backed by a 4 KiB buffer
    however short the JSON is; kept for the life of the process, that is 4 KiB a record."""
    return bytes(memoryview(data))
