"""The state store contract and the value types it stores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ensemble_tap.events import format_time_ns, parse_rfc3339_ns

if TYPE_CHECKING:  # versions.py imports this module
    from ensemble_tap.state.versions import SeenVersion, VersionNote


class StateError(RuntimeError):
    """The store could not be read or written. Never treated as "not found" (a transient
    read error must not make a poller re-announce every record as created)."""


@dataclass(slots=True, frozen=True)
class Position:
    """Where a pass of a stream (re)starts.

    ``since_ns`` is the inclusive lower bound (provider version time) of the query in
    progress; None means "from the very beginning". ``token`` is the provider's paging state
    inside that query (JSON-serializable); None means "first page".
    """

    since_ns: int | None = None
    token: Mapping[str, Any] | None = None


@dataclass(slots=True)
class StreamState:
    """The checkpoint of one stream: its high-water mark and the pass in progress, if any."""

    cursor_ns: int | None = None
    resume: Position | None = None

    def to_json(self) -> bytes:
        value: dict[str, Any] = {
            "cursor": None if self.cursor_ns is None else format_time_ns(self.cursor_ns)
        }
        if self.resume is not None:
            since = self.resume.since_ns
            value["resume"] = {
                "since": None if since is None else format_time_ns(since),
                "token": dict(self.resume.token) if self.resume.token is not None else None,
            }
        return orjson.dumps(value)

    @classmethod
    def from_json(cls, data: bytes | str) -> StreamState:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"stored checkpoint is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise StateError("stored checkpoint is not a JSON object")
        state = cls(cursor_ns=_time(value.get("cursor")))
        resume = value.get("resume")
        if isinstance(resume, dict):
            token = resume.get("token")
            state.resume = Position(
                since_ns=_time(resume.get("since")),
                token=token if isinstance(token, dict) else None,
            )
        return state


def _time(value: Any) -> int | None:
    return parse_rfc3339_ns(value) if isinstance(value, str) else None


@dataclass(slots=True, frozen=True)
class StoredToken:
    """A refresh token the provider rotated to, and the configured token it descends from."""

    refresh_token: str
    origin: str  # SHA-256 of the configured refresh token


@dataclass(slots=True, frozen=True)
class StoredSnapshot:
    """A record's last published state: its canonical JSON and that JSON's SHA-256."""

    digest: str
    payload: bytes

    def data(self) -> dict[str, Any]:
        value = orjson.loads(self.payload)
        return value if isinstance(value, dict) else {}


@dataclass(slots=True, frozen=True)
class SnapshotWrite:
    """Store (``snapshot`` set) or forget (None, after a delete) one record's snapshot."""

    entity_type: str
    entity_id: str
    snapshot: StoredSnapshot | None


@dataclass(slots=True, frozen=True, kw_only=True)
class TargetControl:
    """An operator's pause of a poll target (``POST /admin/pollers/…/pause``): stored with the
    target's state, so it survives restarts and every replica sees it."""

    since_ns: int
    by: str  # the admin token slot that paused it
    reason: str
    request_id: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "paused": True,
                "since": format_time_ns(self.since_ns),
                "by": self.by,
                "reason": self.reason,
                "request_id": self.request_id,
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> TargetControl | None:
        """The stored pause, or None for a record that says "not paused"."""
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"stored poller control is not JSON: {exc}") from None
        if not isinstance(value, dict) or not value.get("paused"):
            return None
        return cls(
            since_ns=_time(value.get("since")) or 0,
            by=str(value.get("by", "")),
            reason=str(value.get("reason", "")),
            request_id=str(value.get("request_id", "")),
        )


EntityKey = tuple[str, str]


def state_key(provider: str, tenant_id: str) -> str:
    """``provider`` or ``provider::tenant``: the scope of checkpoints, snapshots, versions
    and status (the poller's targets and the webhook path name it alike)."""
    tenant = tenant_id.strip()
    return f"{provider.strip()}::{tenant}" if tenant else provider.strip()


class StateStore(Protocol):
    async def load_stream(self, state_key: str, stream: str) -> StreamState: ...

    async def load_streams(self, state_key: str) -> dict[str, StreamState]: ...

    async def get_snapshots(
        self, state_key: str, keys: Sequence[EntityKey]
    ) -> dict[EntityKey, StoredSnapshot]: ...

    async def known_entities(
        self, state_key: str, entity_types: Sequence[str]
    ) -> set[EntityKey]: ...

    async def commit(
        self, state_key: str, stream: str, writes: Sequence[SnapshotWrite], state: StreamState
    ) -> None:
        """Write the snapshots of one page and the stream's checkpoint, all or nothing."""
        ...

    async def record_versions(self, notes: Sequence[VersionNote]) -> None:
        """Keep each entity's newest version seen by the webhook path (never an older one)."""
        ...

    async def get_versions(
        self, state_key: str, keys: Sequence[EntityKey]
    ) -> dict[EntityKey, SeenVersion]: ...

    async def load_token(self, state_key: str) -> StoredToken | None: ...

    async def load_control(self, state_key: str) -> TargetControl | None:
        """The target's pause, None when it is not paused."""
        ...

    async def save_control(self, state_key: str, control: TargetControl | None) -> None:
        """Pause the target (``control``) or lift its pause (None)."""
        ...

    async def reset_checkpoints(self, state_key: str) -> int:
        """Forget every checkpoint of the target (the reference's single one too): its next
        cycle starts from the provider's initial lookback. Snapshots stay, so records that
        did not change are not announced again. The number of checkpoints removed."""
        ...

    async def save_token(self, state_key: str, token: StoredToken) -> None: ...

    async def close(self) -> None: ...
