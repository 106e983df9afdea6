"""One poll cycle of one target: fetch → diff → events → publish → snapshot → checkpoint.

Streams are walked page by page. For each page the engine compares every record with its
stored snapshot, publishes one CloudEvent per created / updated / deleted record (concurrently;
each carries a deterministic id, so a re-published record is dropped by JetStream), and then
writes the page's snapshots and the stream's new checkpoint in one transaction.

Failure rules (the reference stopped the whole target on one bad record, forever):

* A record that cannot become a CloudEvent, or that the stream refuses (too large, …), is
  dead-lettered (``poll_normalize`` / ``poll_publish``), its snapshot is stored, and the
  cycle goes on: it is never retried automatically, and an operator can replay it.
* A publish that fails because NATS is unavailable stops the cycle; the page's earlier
  records are committed and the pass resumes at this page next time (no dead letter: the
  record is simply published again).
* A stream whose requests fail does not stop the others; the cycle reports the first error.
  Rate limits, auth failures and state-store errors stop the cycle at once.
* An exhausted budget ends the cycle early and is not a failure; the next cycle resumes the
  pass where it stopped, starting with the stream that was cut short (so no stream starves).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ensemble_tap.bus.contract import Publisher, PublishError
from ensemble_tap.bus.dlq import DeadLetter, DeadLetterWriter
from ensemble_tap.events import (
    Envelope,
    NormalizedEvent,
    NormalizeError,
    build_envelope,
    format_time_ns,
    json_bytes,
    poll_dedup_id,
)
from ensemble_tap.observability import Metrics
from ensemble_tap.poller.clock import Clock
from ensemble_tap.poller.diff import diff
from ensemble_tap.poller.errors import (
    AuthError,
    BudgetExhausted,
    PollError,
    PublishUnavailable,
    RateLimited,
)
from ensemble_tap.poller.http import FetchBudget, ProviderHTTP
from ensemble_tap.poller.targets import PollTarget
from ensemble_tap.providers.contract import Page, Position, Record, Stream, StreamState
from ensemble_tap.state.base import SnapshotWrite, StateError, StateStore, StoredSnapshot

MAX_CONCURRENT_PUBLISHES = 64


@dataclass(slots=True)
class CycleStats:
    fetched: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0  # no id/type, or a delete of a record this state never saw
    dead_lettered: int = 0
    duplicates: int = 0  # published before (JetStream dropped the copy)
    known: int = 0  # webhook+poll: changes a webhook announced already (not published)
    requests: int = 0
    pages: int = 0
    truncated: bool = False
    duration: float = 0.0

    @property
    def published(self) -> int:
        return self.created + self.updated + self.deleted

    def to_json(self) -> dict[str, Any]:
        return {
            "fetched": self.fetched,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "dead_lettered": self.dead_lettered,
            "duplicates": self.duplicates,
            "known": self.known,
            "requests": self.requests,
            "pages": self.pages,
            "truncated": self.truncated,
            "duration_ms": round(self.duration * 1000, 3),
        }


@dataclass(slots=True)
class _Planned:
    record: Record
    action: str
    write: SnapshotWrite
    envelope: Envelope | None = None
    dedup_id: str = ""
    payload: bytes = b""  # for a poll_normalize dead letter
    error: str = ""
    known: bool = False  # announced by a webhook already: snapshot stored, nothing published


@dataclass(slots=True)
class EventOutput:
    """Where events go: the shared publisher and dead-letter writer, and naming settings."""

    publisher: Publisher
    dlq: DeadLetterWriter
    metrics: Metrics
    subject_prefix: str
    tenant_scoped: bool
    # Shared by every engine of the service: bounds the publishes in flight at once.
    publish_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_PUBLISHES)
    )


def canonical(snapshot: dict[str, Any]) -> StoredSnapshot:
    """The snapshot as sorted-key JSON and its SHA-256 (equal digests: certainly unchanged)."""
    payload = json_bytes(snapshot, sort_keys=True)
    return StoredSnapshot(hashlib.sha256(payload).hexdigest(), payload)


class PollEngine:
    def __init__(
        self,
        target: PollTarget,
        *,
        streams: Sequence[Stream],
        http: ProviderHTTP,
        store: StateStore,
        output: EventOutput,
        clock: Clock,
        fence: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``fence``: called before every commit; raises when this replica may no longer
        commit the target (its lease is lost, poller/leases.py)."""
        self.target = target
        self.provider = target.provider
        self.tenant_id = target.tenant_id
        self.state_key = target.state_key
        self.streams = list(streams)
        self.http = http
        self.store = store
        self.output = output
        self.clock = clock
        self.fence = fence
        self.lookback_ns = int(target.lookback * 1e9)
        # webhook+poll: changes a webhook brought (state/versions.py) are not announced again.
        self.reconcile = target.settings.webhook_enabled
        self.cursors: dict[str, int | None] = {}  # stream → high-water mark (for status)
        # This engine is the only writer of its state key, so checkpoints are read once
        # (again after ``forget_state``: another replica may have polled the target).
        self._states: dict[str, StreamState] = {}
        self.last_stats = CycleStats()
        self._cycle = 0
        self._first_stream = 0

    def forget_state(self) -> None:
        """Read every checkpoint again at the next cycle (this replica took the target)."""
        self._states.clear()

    async def run_cycle(self) -> CycleStats:
        """Run one cycle; raise PollError (or StateError) when it failed. ``last_stats`` holds
        the counts either way."""
        started = self.clock.monotonic()
        stats = self.last_stats = CycleStats()
        budget = FetchBudget(self.target.max_pages, self.target.max_requests)
        self.http.new_cycle(budget)
        errors: list[PollError] = []
        count = len(self.streams)
        try:
            for offset in range(count):
                index = (self._first_stream + offset) % count
                stream = self.streams[index]
                state = self._states.get(stream.name)
                if state is None:
                    state = await self.store.load_stream(self.state_key, stream.name)
                    self._states[stream.name] = state
                self.cursors[stream.name] = state.cursor_ns
                if state.resume is None and self._cycle % max(1, stream.period) != 0:
                    continue
                try:
                    await self._run_stream(stream, state, stats)
                except BudgetExhausted:
                    stats.truncated = True
                    self._first_stream = index
                    break
                except (RateLimited, AuthError, PublishUnavailable):
                    raise
                except PollError as exc:
                    errors.append(exc)
            else:
                self._first_stream = 0
        finally:
            self._cycle += 1
            stats.requests = budget.requests
            stats.pages = budget.pages
            stats.duration = self.clock.monotonic() - started
        if errors:
            raise errors[0]
        return stats

    def start_position(self, state: StreamState) -> Position:
        """Resume the pass in progress; otherwise start a new one ``lookback`` before the
        checkpoint, to catch records sharing its timestamp or indexed late by the provider."""
        if state.resume is not None:
            return state.resume
        if state.cursor_ns is None:
            return Position()
        return Position(max(0, state.cursor_ns - self.lookback_ns))

    async def _run_stream(self, stream: Stream, state: StreamState, stats: CycleStats) -> None:
        budget = self.http.budget
        start = self.start_position(state)
        async with contextlib.aclosing(stream.pages(start, self.http)) as pages:
            async for page in pages:
                budget.page_done()
                await self._process_page(stream.name, state, page=page, stats=stats)

    async def _process_page(
        self, stream: str, state: StreamState, *, page: Page, stats: CycleStats
    ) -> None:
        stats.fetched += len(page.records)
        planned = await self._plan(page.records, stats)
        outcomes = await asyncio.gather(
            *(self._publish(item) for item in planned), return_exceptions=True
        )
        writes: list[SnapshotWrite] = []
        failure: BaseException | None = None
        before = (state.cursor_ns, state.resume)
        for item, outcome in zip(planned, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failure = outcome
                break
            if outcome == "dead":
                stats.dead_lettered += 1
            elif outcome == "known":
                stats.known += 1
            else:
                setattr(stats, item.action, getattr(stats, item.action) + 1)
                if outcome == "duplicate":
                    stats.duplicates += 1
            writes.append(item.write)
        if failure is None:
            if page.cursor_ns is not None:
                # Never ahead of our own clock: one record with a wrong future time must not
                # move every later pass past records that are yet to come.
                cursor = min(page.cursor_ns, self.clock.now_ns())
                state.cursor_ns = (
                    cursor if state.cursor_ns is None else max(state.cursor_ns, cursor)
                )
            state.resume = page.next
        else:
            state.resume = page.start
        if writes or (state.cursor_ns, state.resume) != before:  # else nothing to store
            try:
                if self.fence is not None:
                    await self.fence()
                await self.store.commit(self.state_key, stream, writes, state)
            except BaseException:
                self._states.pop(stream, None)  # unknown what was stored: read it again
                raise
        self.cursors[stream] = state.cursor_ns
        if failure is not None:
            raise failure

    async def _plan(self, records: Sequence[Record], stats: CycleStats) -> list[_Planned]:
        """Decide each record's action against the stored (or this page's) snapshot."""
        valid = [r for r in records if r.entity_type and r.entity_id]
        stats.skipped += len(records) - len(valid)
        keys = list(dict.fromkeys((r.entity_type, r.entity_id) for r in valid))
        stored = await self.store.get_snapshots(self.state_key, keys)
        latest: dict[tuple[str, str], StoredSnapshot | None] = dict(stored)
        planned: list[_Planned] = []
        for record in valid:
            key = (record.entity_type, record.entity_id)
            previous = latest.get(key)
            if record.deleted:
                if previous is None:
                    stats.skipped += 1
                    continue
                item = _Planned(record, "deleted", SnapshotWrite(*key, None))
                # Snapshots migrated from the reference's SQLite file have no digest yet:
                # their stored bytes are as stable an identity of the content.
                digest = previous.digest or hashlib.sha256(previous.payload).hexdigest()
                self._prepare(item, snapshot=previous.data(), changes=None, digest=digest)
            else:
                current = canonical(record.snapshot or {})
                if previous is not None and previous.digest == current.digest:
                    stats.unchanged += 1
                    continue
                before = previous.data() if previous is not None else None
                changes = diff(before, record.snapshot or {})
                if previous is not None and not changes:
                    stats.unchanged += 1  # equal values, different encoding (1 vs 1.0)
                    continue
                action = "updated" if previous is not None else "created"
                item = _Planned(record, action, SnapshotWrite(*key, current))
                self._prepare(
                    item, snapshot=record.snapshot or {}, changes=changes, digest=current.digest
                )
            latest[key] = item.write.snapshot
            planned.append(item)
        if self.reconcile and planned:
            await self._mark_known(planned)
        return planned

    async def _mark_known(self, planned: list[_Planned]) -> None:
        """webhook+poll: a change a webhook brought at this version (or a newer one) is
        not announced again; its snapshot is still stored, so later diffs start from it."""
        keys = list(dict.fromkeys((i.record.entity_type, i.record.entity_id) for i in planned))
        seen = await self.store.get_versions(self.state_key, keys)
        for item in planned:
            record = item.record
            found = seen.get((record.entity_type, record.entity_id))
            if found is not None and found.covers(record.version_ns, record.deleted):
                item.known = True

    def _prepare(
        self,
        item: _Planned,
        *,
        snapshot: dict[str, Any],
        changes: dict[str, Any] | None,
        digest: str,
    ) -> None:
        record = item.record
        try:
            version = format_time_ns(record.version_ns) if record.version_ns is not None else ""
            # The digest of the snapshot the engine stores and compares: the same content
            # read again gets the same id; another content never does, even at the same time.
            item.dedup_id = poll_dedup_id(
                self.provider,
                self.tenant_id,
                record.entity_type,
                record.entity_id,
                item.action,
                version,
                digest,
            )
            event_time = record.event_time_ns
            event = NormalizedEvent(
                provider=self.provider,
                entity_type=record.entity_type,
                entity_id=record.entity_id,
                action=item.action,
                provider_time_ns=self.clock.now_ns() if event_time is None else event_time,
                tenant_id=self.tenant_id,
                changes=changes or None,
                snapshot=snapshot,
                source="poll",
            )
            item.envelope = build_envelope(
                event,
                self.output.subject_prefix,
                self.output.tenant_scoped,
                event_id=item.dedup_id,
            )
        except (NormalizeError, ValueError) as exc:
            item.error = f"normalize poll event: {exc}"
            with contextlib.suppress(TypeError, ValueError):
                item.payload = json_bytes(
                    {"entity_type": record.entity_type, "entity_id": record.entity_id,
                     "snapshot": snapshot}
                )  # fmt: skip

    async def _publish(self, item: _Planned) -> str:
        """``ok``, ``duplicate``, ``dead`` (dead-lettered) or ``known`` (a webhook brought
        it: not published); raises PublishUnavailable."""
        output = self.output
        if item.known:
            return "known"
        if item.envelope is None:
            await output.dlq.write(
                DeadLetter(
                    stage="poll_normalize",
                    provider=self.provider,
                    reason=item.error,
                    tenant_id=self.tenant_id,
                    original_dedup_id=item.dedup_id,
                    original_payload=item.payload,
                )
            )
            return "dead"
        envelope = item.envelope
        async with output.publish_slots:
            try:
                result = await output.publisher.publish(
                    envelope.subject, envelope.body, item.dedup_id
                )
            except PublishError as exc:
                output.metrics.publish_failures.labels(self.provider).inc()
                if not exc.permanent:  # unavailable, or refused with a code that may clear
                    raise PublishUnavailable(f"publish poll event: {exc}") from None
                # Past max_payload the dead letter could not hold the event either: it keeps
                # the digest (as the webhook route's does).
                digest = hashlib.sha256(envelope.body).hexdigest() if exc.too_large else ""
                await output.dlq.write(
                    DeadLetter(
                        stage="poll_publish",
                        provider=self.provider,
                        reason=f"publish poll event: {exc or type(exc).__name__}",
                        tenant_id=self.tenant_id,
                        original_subject=envelope.subject,
                        original_dedup_id=item.dedup_id,
                        original_payload=b"" if exc.too_large else envelope.body,
                        payload_sha256=digest,
                    )
                )
                return "dead"
        output.metrics.events_published.labels(
            envelope.provider, envelope.entity_type, envelope.action
        ).inc()
        if result.duplicate:
            output.metrics.dedup_hits.labels(self.provider).inc()
            return "duplicate"
        if self.reconcile:  # a change no webhook brought: the poller filled the hole
            output.metrics.reconciled_events.labels(self.provider).inc()
        return "ok"


def describe_error(exc: BaseException) -> str:
    """Status text of a failed cycle (never a secret: messages are built from status codes,
    capped response snippets and exception types)."""
    if isinstance(exc, PollError | StateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


__all__ = [
    "CycleStats",
    "EventOutput",
    "PollEngine",
    "canonical",
    "describe_error",
]
