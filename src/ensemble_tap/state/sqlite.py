"""State in one SQLite file, safe across restarts.

Schema versions (``PRAGMA user_version``):

1. the reference's tables: ``checkpoints(provider, checkpoint)`` with one checkpoint per
   state key, and ``snapshots(provider, entity_type, entity_id, snapshot_json)``;
2. this service: checkpoints per state key *and stream* (``stream_checkpoints``), a digest
   per snapshot (cheap "unchanged" checks), rotated OAuth refresh tokens (``oauth_tokens``),
   and HubSpot's plural entity types renamed to the singular names webhooks use;
3. ``entity_versions``: the newest version per entity the webhook path saw (``webhook+poll``,
   ``versions.py``);
4. operators' pauses of poll targets (``target_controls``, one JSON row per paused target).

A file of the reference is migrated in place; its single checkpoint is read as the starting
point of every stream of that state key (with the lookback, so nothing between is lost).

All statements run on one connection in one worker thread, so the event loop never blocks on
disk and writes never interleave. A page's snapshots and its checkpoint are one transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ensemble_tap.events import format_time_ns, now_ns, parse_rfc3339_ns
from ensemble_tap.state.base import (
    EntityKey,
    SnapshotWrite,
    StateError,
    StoredSnapshot,
    StoredToken,
    StreamState,
    TargetControl,
)
from ensemble_tap.state.versions import SeenVersion, VersionNote

SCHEMA_VERSION = 4
_T = TypeVar("_T")
_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
)
_HUBSPOT_SINGULAR = {
    "deals": "deal",
    "contacts": "contact",
    "companies": "company",
    "tickets": "ticket",
}
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS checkpoints (
            provider   TEXT PRIMARY KEY,
            checkpoint TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS snapshots (
            provider      TEXT NOT NULL,
            entity_type   TEXT NOT NULL,
            entity_id     TEXT NOT NULL,
            snapshot_json TEXT NOT NULL,
            PRIMARY KEY (provider, entity_type, entity_id)
        )""",
    ),
    2: (
        "ALTER TABLE snapshots ADD COLUMN digest TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE IF NOT EXISTS stream_checkpoints (
            state_key  TEXT NOT NULL,
            stream     TEXT NOT NULL,
            state_json TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (state_key, stream)
        )""",
        """CREATE TABLE IF NOT EXISTS oauth_tokens (
            state_key     TEXT PRIMARY KEY,
            refresh_token TEXT NOT NULL,
            origin        TEXT NOT NULL,
            updated_at    TEXT NOT NULL
        )""",
        *(
            # Only constants of this module are formatted in.
            f"UPDATE OR IGNORE snapshots SET entity_type = '{singular}' "  # nosec B608
            f"WHERE entity_type = '{plural}' "
            "AND (provider = 'hubspot' OR provider LIKE 'hubspot::%')"
            for plural, singular in _HUBSPOT_SINGULAR.items()
        ),
    ),
    3: (
        """CREATE TABLE IF NOT EXISTS entity_versions (
            state_key   TEXT NOT NULL,
            entity_type TEXT NOT NULL,
            entity_id   TEXT NOT NULL,
            version_ns  INTEGER NOT NULL,
            deleted     INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (state_key, entity_type, entity_id)
        )""",
    ),
    4: (
        """CREATE TABLE IF NOT EXISTS target_controls (
            state_key    TEXT PRIMARY KEY,
            control_json TEXT NOT NULL,
            updated_at   TEXT NOT NULL
        )""",
    ),
}
# The newer version wins; at equal versions a delete does (right-hand sides read the old row).
_RECORD_VERSION = """INSERT INTO entity_versions
    (state_key, entity_type, entity_id, version_ns, deleted) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (state_key, entity_type, entity_id) DO UPDATE SET
    deleted = CASE
        WHEN excluded.version_ns > version_ns THEN excluded.deleted
        WHEN excluded.version_ns = version_ns THEN max(deleted, excluded.deleted)
        ELSE deleted END,
    version_ns = max(version_ns, excluded.version_ns)"""


class SqliteStateStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tap-state")
        try:
            self._db = self._executor.submit(_open, path).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        loop = asyncio.get_running_loop()
        db = self._db

        def call() -> _T:
            try:
                return work(db)
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: {exc}") from exc

        return await loop.run_in_executor(self._executor, call)

    async def load_stream(self, state_key: str, stream: str) -> StreamState:
        def work(db: sqlite3.Connection) -> StreamState:
            row = db.execute(
                "SELECT state_json FROM stream_checkpoints WHERE state_key = ? AND stream = ?",
                (state_key, stream),
            ).fetchone()
            if row is not None:
                return StreamState.from_json(row[0])
            legacy = db.execute(
                "SELECT checkpoint FROM checkpoints WHERE provider = ?", (state_key,)
            ).fetchone()
            return StreamState(cursor_ns=_legacy_time(legacy[0]) if legacy else None)

        return await self._run(work)

    async def load_streams(self, state_key: str) -> dict[str, StreamState]:
        def work(db: sqlite3.Connection) -> dict[str, StreamState]:
            rows = db.execute(
                "SELECT stream, state_json FROM stream_checkpoints WHERE state_key = ?",
                (state_key,),
            ).fetchall()
            return {stream: StreamState.from_json(data) for stream, data in rows}

        return await self._run(work)

    async def get_snapshots(
        self, state_key: str, keys: Sequence[EntityKey]
    ) -> dict[EntityKey, StoredSnapshot]:
        if not keys:
            return {}

        def work(db: sqlite3.Connection) -> dict[EntityKey, StoredSnapshot]:
            found: dict[EntityKey, StoredSnapshot] = {}
            for entity_type, entity_id in keys:
                row = db.execute(
                    "SELECT digest, snapshot_json FROM snapshots "
                    "WHERE provider = ? AND entity_type = ? AND entity_id = ?",
                    (state_key, entity_type, entity_id),
                ).fetchone()
                if row is not None:
                    found[(entity_type, entity_id)] = StoredSnapshot(row[0], row[1].encode())
            return found

        return await self._run(work)

    async def known_entities(self, state_key: str, entity_types: Sequence[str]) -> set[EntityKey]:
        def work(db: sqlite3.Connection) -> set[EntityKey]:
            marks = ",".join("?" for _ in entity_types)
            rows = db.execute(
                # Only ? placeholders are formatted in; the values are bound.
                "SELECT entity_type, entity_id FROM snapshots "  # nosec B608
                f"WHERE provider = ? AND entity_type IN ({marks})",
                (state_key, *entity_types),
            ).fetchall()
            return {(row[0], row[1]) for row in rows}

        if not entity_types:
            return set()
        return await self._run(work)

    async def commit(
        self, state_key: str, stream: str, writes: Sequence[SnapshotWrite], state: StreamState
    ) -> None:
        checkpoint = state.to_json().decode()
        stamp = format_time_ns(now_ns())

        def work(db: sqlite3.Connection) -> None:
            with db:  # one transaction: rolled back entirely if any statement fails
                for write in writes:
                    if write.snapshot is None:
                        db.execute(
                            "DELETE FROM snapshots "
                            "WHERE provider = ? AND entity_type = ? AND entity_id = ?",
                            (state_key, write.entity_type, write.entity_id),
                        )
                    else:
                        db.execute(
                            "INSERT INTO snapshots "
                            "(provider, entity_type, entity_id, snapshot_json, digest) "
                            "VALUES (?, ?, ?, ?, ?) "
                            "ON CONFLICT (provider, entity_type, entity_id) DO UPDATE SET "
                            "snapshot_json = excluded.snapshot_json, digest = excluded.digest",
                            (
                                state_key,
                                write.entity_type,
                                write.entity_id,
                                write.snapshot.payload.decode(),
                                write.snapshot.digest,
                            ),
                        )
                db.execute(
                    "INSERT INTO stream_checkpoints (state_key, stream, state_json, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (state_key, stream) DO UPDATE SET "
                    "state_json = excluded.state_json, updated_at = excluded.updated_at",
                    (state_key, stream, checkpoint, stamp),
                )

        await self._run(work)

    async def record_versions(self, notes: Sequence[VersionNote]) -> None:
        rows = [
            (n.state_key, n.entity_type, n.entity_id, n.seen.version_ns, int(n.seen.deleted))
            for n in notes
        ]

        def work(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(_RECORD_VERSION, rows)

        if rows:
            await self._run(work)

    async def get_versions(
        self, state_key: str, keys: Sequence[EntityKey]
    ) -> dict[EntityKey, SeenVersion]:
        def work(db: sqlite3.Connection) -> dict[EntityKey, SeenVersion]:
            found: dict[EntityKey, SeenVersion] = {}
            for entity_type, entity_id in keys:
                row = db.execute(
                    "SELECT version_ns, deleted FROM entity_versions "
                    "WHERE state_key = ? AND entity_type = ? AND entity_id = ?",
                    (state_key, entity_type, entity_id),
                ).fetchone()
                if row is not None:
                    found[(entity_type, entity_id)] = SeenVersion(row[0], bool(row[1]))
            return found

        if not keys:
            return {}
        return await self._run(work)

    async def load_token(self, state_key: str) -> StoredToken | None:
        def work(db: sqlite3.Connection) -> StoredToken | None:
            row = db.execute(
                "SELECT refresh_token, origin FROM oauth_tokens WHERE state_key = ?",
                (state_key,),
            ).fetchone()
            return None if row is None else StoredToken(row[0], row[1])

        return await self._run(work)

    async def save_token(self, state_key: str, token: StoredToken) -> None:
        stamp = format_time_ns(now_ns())

        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO oauth_tokens (state_key, refresh_token, origin, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (state_key) DO UPDATE SET "
                    "refresh_token = excluded.refresh_token, origin = excluded.origin, "
                    "updated_at = excluded.updated_at",
                    (state_key, token.refresh_token, token.origin, stamp),
                )

        await self._run(work)

    async def load_control(self, state_key: str) -> TargetControl | None:
        def work(db: sqlite3.Connection) -> TargetControl | None:
            row = db.execute(
                "SELECT control_json FROM target_controls WHERE state_key = ?", (state_key,)
            ).fetchone()
            return None if row is None else TargetControl.from_json(row[0])

        return await self._run(work)

    async def save_control(self, state_key: str, control: TargetControl | None) -> None:
        stamp = format_time_ns(now_ns())

        def work(db: sqlite3.Connection) -> None:
            with db:
                if control is None:
                    db.execute("DELETE FROM target_controls WHERE state_key = ?", (state_key,))
                    return
                db.execute(
                    "INSERT INTO target_controls (state_key, control_json, updated_at) "
                    "VALUES (?, ?, ?) ON CONFLICT (state_key) DO UPDATE SET "
                    "control_json = excluded.control_json, updated_at = excluded.updated_at",
                    (state_key, control.to_json().decode(), stamp),
                )

        await self._run(work)

    async def reset_checkpoints(self, state_key: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            with db:
                removed = db.execute(
                    "DELETE FROM stream_checkpoints WHERE state_key = ?", (state_key,)
                ).rowcount
                removed += db.execute(
                    "DELETE FROM checkpoints WHERE provider = ?", (state_key,)
                ).rowcount
            return int(removed)

        return await self._run(work)

    async def export(self) -> StateDump:
        """Everything stored (``state migrate``)."""

        def work(db: sqlite3.Connection) -> StateDump:
            streams = [
                (key, stream, StreamState.from_json(data))
                for key, stream, data in db.execute(
                    "SELECT state_key, stream, state_json FROM stream_checkpoints"
                )
            ]
            legacy = [
                (key, _legacy_time(text))
                for key, text in db.execute("SELECT provider, checkpoint FROM checkpoints")
            ]
            snapshots = [
                (key, entity_type, entity_id, StoredSnapshot(digest, payload.encode()))
                for key, entity_type, entity_id, payload, digest in db.execute(
                    "SELECT provider, entity_type, entity_id, snapshot_json, digest FROM snapshots"
                )
            ]
            tokens = [
                (key, StoredToken(refresh, origin))
                for key, refresh, origin in db.execute(
                    "SELECT state_key, refresh_token, origin FROM oauth_tokens"
                )
            ]
            versions = [
                (key, entity_type, entity_id, SeenVersion(version_ns, bool(deleted)))
                for key, entity_type, entity_id, version_ns, deleted in db.execute(
                    "SELECT state_key, entity_type, entity_id, version_ns, deleted "
                    "FROM entity_versions"
                )
            ]
            controls = [
                (key, control)
                for key, text in db.execute("SELECT state_key, control_json FROM target_controls")
                if (control := TargetControl.from_json(text)) is not None
            ]
            return StateDump(streams, legacy, snapshots, tokens, versions, controls)

        return await self._run(work)

    async def close(self) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.close()

        try:
            await self._run(work)
        finally:
            self._executor.shutdown(wait=True)


@dataclass(slots=True, frozen=True)
class StateDump:
    streams: list[tuple[str, str, StreamState]]  # state key, stream, checkpoint
    legacy: list[tuple[str, int | None]]  # the reference's checkpoint per state key
    snapshots: list[tuple[str, str, str, StoredSnapshot]]  # state key, type, id, snapshot
    tokens: list[tuple[str, StoredToken]]
    versions: list[tuple[str, str, str, SeenVersion]]  # state key, type, id, webhook's newest
    controls: list[tuple[str, TargetControl]]  # operators' pauses


def _legacy_time(value: str) -> int | None:
    """The reference's checkpoint text: RFC3339(Nano), Salesforce style, or epoch digits."""
    text = value.strip()
    if text.isdigit():
        number = int(text)
        return number * 1_000_000 if len(text) >= 13 else number * 1_000_000_000
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"
    return parse_rfc3339_ns(text)


def _open(path: str) -> sqlite3.Connection:
    target = Path(path)
    if str(target.parent) not in ("", "."):
        target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    if not target.exists():
        # The file holds OAuth refresh tokens: readable by the service user only.
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StateError(f"open state store {path}: {exc}") from exc
    try:
        for pragma in _PRAGMAS:
            try:
                db.execute(pragma)
            except sqlite3.Error as exc:
                raise StateError(f'apply sqlite pragma "{pragma}": {exc}') from exc
        _migrate(db, path)
    except BaseException:
        db.close()
        raise
    # Python's sqlite3 opens transactions itself unless isolation_level is None; "with db"
    # then needs them, so switch to the default deferred mode after the migrations.
    db.isolation_level = "DEFERRED"
    return db


def _migrate(db: sqlite3.Connection, path: str) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StateError(
            f"state store {path} has schema version {version}, newer than this release "
            f"understands ({SCHEMA_VERSION})"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        try:
            db.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[target]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {target}")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise StateError(f"migrate state store {path} to version {target}: {exc}") from exc
