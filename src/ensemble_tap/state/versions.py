"""What the webhook path saw of each record, for ``webhook+poll`` reconciliation.

Per entity (state key × entity type × entity id, the scope of snapshots) the newest version a
webhook brought: the provider's time of the change (``Extraction.provider_time_ns``: HubSpot's
``occurredAt``, the generic handler's body timestamp), compared by the poller with the
record's modification time (``Record.version_ns``). A record the poller reads at that version
or an older one was announced by the webhook already, so the poller stays silent.

The webhook path writes versions off the request (``VersionRecorder``): ``note`` appends to a
buffer (no await, no I/O), a background task writes the buffer in batches. A failure to
record (store error, buffer full) is logged and counted, never seen by the sender; the cost
is at most one change announced twice (once by the webhook, once by the poller).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ensemble_tap.observability import get_logger
from ensemble_tap.state.base import EntityKey

# Versions waiting to be written; beyond, new ones are dropped (and counted).
MAX_PENDING = 50_000
# How long the first note of a batch waits for company before the batch is written.
FLUSH_DELAY = 0.05
log = get_logger("ensemble_tap.state")


@dataclass(slots=True, frozen=True)
class SeenVersion:
    """The newest version of one entity a webhook brought; ``deleted``: that was a delete."""

    version_ns: int
    deleted: bool = False

    def covers(self, version_ns: int | None, deleted: bool) -> bool:
        """Whether a record read by the poller (at ``version_ns``, maybe a delete) is
        already announced: a delete seen by both paths, or a version not newer than this."""
        if deleted and self.deleted:
            return True
        return version_ns is not None and version_ns <= self.version_ns

    def merged(self, other: SeenVersion | None) -> SeenVersion:
        """The newer of the two; at equal versions a delete wins."""
        if other is None or self.version_ns > other.version_ns:
            return self
        if other.version_ns > self.version_ns:
            return other
        return self if self.deleted or not other.deleted else other


@dataclass(slots=True, frozen=True)
class VersionNote:
    state_key: str
    entity_type: str
    entity_id: str
    seen: SeenVersion


class VersionStore(Protocol):
    """The part of a state store the webhook path writes to."""

    async def record_versions(self, notes: Sequence[VersionNote]) -> None: ...


def merge_notes(notes: Sequence[VersionNote]) -> list[VersionNote]:
    """One note per entity, the newest (a batch often holds one record's several changes)."""
    newest: dict[tuple[str, str, str], SeenVersion] = {}
    for note in notes:
        key = (note.state_key, note.entity_type, note.entity_id)
        newest[key] = note.seen.merged(newest.get(key))
    return [VersionNote(*key, seen) for key, seen in newest.items()]


def merge_into(found: dict[EntityKey, SeenVersion], key: EntityKey, seen: SeenVersion) -> None:
    found[key] = seen.merged(found.get(key))


_Pending = tuple[str, str, str, int, bool]


class VersionRecorder:
    """Buffers the versions webhooks brought and writes them in batches in the background.

    ``attach`` names the store (the poller's, opened after NATS is reached, or one of this
    process's own); notes taken before wait for it in the buffer."""

    def __init__(
        self,
        *,
        lost: Callable[[str, int], None] | None = None,
        max_pending: int = MAX_PENDING,
        delay: float = FLUSH_DELAY,
    ) -> None:
        """``lost(reason, count)``: versions that will not be written (``full``, ``error``)."""
        self.store: VersionStore | None = None
        self.max_pending = max_pending
        self.delay = delay
        self._lost = lost or (lambda reason, count: None)
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()

    def attach(self, store: VersionStore) -> None:
        self.store = store
        if self._pending:
            self._schedule()

    def note(
        self, state_key: str, entity_type: str, entity_id: str, version_ns: int, deleted: bool
    ) -> None:
        """Remember one entity's version (called on the request path: no I/O here)."""
        pending = self._pending
        if len(pending) >= self.max_pending:
            self._lost("full", 1)
            return
        pending.append((state_key, entity_type, entity_id, version_ns, deleted))
        if self._task is None and self.store is not None:
            self._schedule()

    def _schedule(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(self.delay)
            await self.flush()
        finally:
            self._task = None
        if self._pending and self.store is not None:  # noted while the batch was written
            self._schedule()

    async def flush(self) -> None:
        """Write every version noted so far (a failed batch is counted, not retried)."""
        async with self._writing:
            store = self.store
            if store is None or not self._pending:
                return
            batch, self._pending = self._pending, []
            notes = merge_notes(
                [VersionNote(key, kind, ident, SeenVersion(ns, gone))
                 for key, kind, ident, ns, gone in batch]
            )  # fmt: skip
            try:
                await store.record_versions(notes)
            except Exception as exc:  # a store error must never reach a webhook
                self._lost("error", len(notes))
                log.warning("webhook versions not recorded", count=len(notes), error=str(exc))

    async def close(self) -> None:
        """Write what is pending, then let go of the store (at stop, before it closes)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
        self.store = None
