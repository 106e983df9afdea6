"""The consume loop: pull → convert → batch → insert → ack.

* A batch is flushed when it holds ``batch_size`` rows or its oldest row is
  ``flush_interval`` old; pulls never wait past that moment.
* One insert runs in a worker thread while the next batch is pulled and converted; acks are
  sent only after its insert succeeded.
* A failed insert NAKs its messages with a growing delay and pauses pulling until ClickHouse
  answers again (the reference NAKed at once and pulled on in a tight loop).
* Poison messages go to the dead-letter stream (stage ``sink``) and are terminated; the rest
  of their batch is unaffected.
* On stop, pulling ends, and the last batch is inserted with a fresh deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ensemble_tap.bus.client import TapClient
from ensemble_tap.bus.dlq import DeadLetter, DeadLetterWriter
from ensemble_tap.config.models import ClickHouseConfig
from ensemble_tap.observability import Metrics, get_logger
from ensemble_tap.sink.backends import Backend
from ensemble_tap.sink.jetstream import (
    Delivery,
    FetchError,
    Puller,
    nak_payload,
    respond,
)
from ensemble_tap.sink.rows import PoisonMessage, checked_row, fast_row
from ensemble_tap.sink.schema import TableRef, insert_sql
from ensemble_tap.sink.status import SinkStatus

NAK_BASE, NAK_MAX = 1.0, 30.0  # redelivery delay after a failed insert, by delivery count
PROBE_BASE, PROBE_MAX = 0.5, 5.0  # between health probes while ClickHouse is down (cheap)
FETCH_ERROR_BASE, FETCH_ERROR_MAX = 0.1, 5.0
MIN_FETCH_WAIT = 0.01
ACK_MARGIN = 1.0
ACK, NAK, PROGRESS, TERM = b"+ACK", b"-NAK", b"+WPI", b"+TERM"
log = get_logger("ensemble_tap.sink")


@dataclass(slots=True)
class Batch:
    """Messages of one insert and their rows (in-batch duplicates have no row)."""

    deliveries: list[Delivery] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    keys: dict[tuple[str, str, str], None] = field(default_factory=dict)
    started: float = 0.0  # monotonic time of the first delivery
    oldest_stored_ns: int = 0

    def __len__(self) -> int:
        return len(self.deliveries)


class SinkConsumer:
    def __init__(
        self,
        config: ClickHouseConfig,
        *,
        nc: TapClient,
        puller: Puller,
        backend: Backend,
        table: TableRef,
        dlq: DeadLetterWriter,
        metrics: Metrics,
        status: SinkStatus,
        ensure_consumer: Callable[[], Awaitable[object]],
    ) -> None:
        self.config = config
        self.nc = nc
        self.puller = puller
        self.backend = backend
        self.table = table
        self.dlq = dlq
        self.metrics = metrics
        self.status = status
        self.ensure_consumer = ensure_consumer
        self.stopping = asyncio.Event()
        self._batch = Batch()
        self._insert: asyncio.Task[bool] | None = None
        self._paused = False
        self._fetch_errors = 0

    async def run(self) -> None:
        self._healthy()
        while not self.stopping.is_set():
            if self._paused:
                await self._wait_for_clickhouse()
                continue
            batch = self._batch
            if batch and time.monotonic() - batch.started >= self.config.flush_interval:
                await self._flush()
                continue
            try:
                deliveries = await self.puller.fetch(self._fetch_size(), self._fetch_wait())
            except FetchError as exc:
                await self._fetch_failed(exc)
                continue
            if self._fetch_errors:
                self._fetch_errors = 0
                self._healthy()
            await self._take(deliveries)
            if len(self._batch) >= self.config.batch_size:
                await self._flush()
        await self._finish()

    # ------------------------------------------------------------------ pulling

    def _fetch_size(self) -> int:
        room = self.config.batch_size - len(self._batch)
        return max(1, min(self.config.consumer_fetch_batch_size, room))

    def _fetch_wait(self) -> float:
        """At most ``consumer_fetch_max_wait``, and never past the current batch's flush."""
        wait = self.config.consumer_fetch_max_wait
        if self._batch:
            due = self._batch.started + self.config.flush_interval - time.monotonic()
            wait = min(wait, due)
        return max(wait, MIN_FETCH_WAIT)

    async def _fetch_failed(self, exc: FetchError) -> None:
        self._fetch_errors += 1
        self.metrics.clickhouse_fetch_errors.inc()
        delay = min(FETCH_ERROR_BASE * 2 ** (self._fetch_errors - 1), FETCH_ERROR_MAX)
        log.warning("clickhouse sink pull failed", error=str(exc), retry_in=delay)
        self.status.set("degraded", str(exc))
        await self._sleep(delay)
        if exc.consumer_gone or self._fetch_errors % 5 == 0:
            await self._recreate_consumer()

    async def _recreate_consumer(self) -> None:
        """The consumer was deleted (or pulls keep failing): create it again (W-CH-8)."""
        try:
            await self.ensure_consumer()
        except Exception as exc:
            log.error("clickhouse sink consumer could not be recreated", error=str(exc))
            return
        log.info("clickhouse sink consumer ensured again")

    async def _take(self, deliveries: list[Delivery]) -> None:
        """Convert and buffer; the per-message path is kept lean (it runs ~50,000 times/s):
        ack-subject metadata is parsed only where it is needed."""
        if not deliveries:
            return
        batch = self._batch
        if not batch:
            batch.started = time.monotonic()
            batch.oldest_stored_ns = deliveries[0].metadata()[2]
        append_delivery, append_line, keys = batch.deliveries.append, batch.lines.append, batch.keys
        first_delivery = self.puller.first_delivery
        room = self.config.batch_size - len(batch)
        skipped = redelivered = 0
        for delivery in deliveries:
            data = delivery.data
            try:  # (convert's two steps inline: one call less per event)
                key, line = fast_row(data) or checked_row(data, delivery.stored_ns)
            except PoisonMessage as poison:
                await self._dead_letter(delivery, poison)
                continue
            if room <= 0:  # a prefetched pull overfills the batch
                await self._flush()
                batch = self._batch
                batch.started = time.monotonic()
                batch.oldest_stored_ns = delivery.stored_ns()
                append_delivery, append_line = batch.deliveries.append, batch.lines.append
                keys = batch.keys
                room = self.config.batch_size
            room -= 1
            append_delivery(delivery)
            if not delivery.reply.startswith(first_delivery) and delivery.redelivered:
                redelivered += 1
            if key in keys:
                skipped += 1
                continue
            keys[key] = None
            append_line(line)
        if skipped:
            self.metrics.clickhouse_dedup_skipped.inc(skipped)
        if redelivered:
            self.metrics.clickhouse_redeliveries.inc(redelivered)
        pending = deliveries[-1].metadata()[3]  # the consumer's count as of the last one
        self.status.pending = pending
        self.metrics.clickhouse_consumer_pending.set(pending)

    async def _dead_letter(self, delivery: Delivery, poison: PoisonMessage) -> None:
        _, sequence, _, _ = delivery.metadata()
        self.metrics.clickhouse_poison.labels(poison.reason).inc()
        log.warning(
            "clickhouse sink: message is not a storable event",
            reason=poison.detail,
            stream_sequence=sequence,
            subject=delivery.subject.decode("utf-8", "replace"),
        )
        letter = DeadLetter(
            stage="sink",
            provider=poison.field("data", "provider") or "unknown",
            reason=f"{poison.reason}: {poison.detail}",
            tenant_id=poison.field("data", "tenant_id"),
            request_id=poison.field("data", "request_id") or delivery.header("X-Request-ID"),
            original_subject=delivery.subject.decode("utf-8", "replace"),
            original_dedup_id=delivery.header("Nats-Msg-Id"),
            original_payload=delivery.data,
        )
        if await self.dlq.write(letter):
            await respond(self.nc, [delivery], TERM)
        else:  # not recorded anywhere yet: keep it in the stream and try again later
            await respond(self.nc, [delivery], nak_payload(NAK_MAX))

    # ------------------------------------------------------------------ inserting

    async def _flush(self) -> None:
        """Hand the current batch to the inserter (after the previous insert finished)."""
        if not await self._insert_finished():
            return  # that insert failed: we are paused and this batch was NAKed
        batch, self._batch = self._batch, Batch()
        if batch:
            self._insert = asyncio.create_task(self._store(batch))

    async def _insert_finished(self) -> bool:
        """Wait for the running insert; when it failed, NAK the batch being collected too."""
        task, self._insert = self._insert, None
        ok = True if task is None else await task
        if not ok and self._batch:
            await self._nak(self._batch)
            self._batch = Batch()
        return ok

    async def _store(self, batch: Batch, final: bool = False) -> bool:
        """Insert ``batch`` and ack it. On failure NAK it (with a growing delay, or at once
        when stopping so another replica takes over) and pause pulling."""
        started = time.monotonic()
        if started - batch.started + self.config.insert_timeout + ACK_MARGIN >= (
            self.config.effective_ack_wait
        ):
            await respond(self.nc, batch.deliveries, PROGRESS)  # restart their ack timers
        try:
            if batch.lines:
                await asyncio.wait_for(self._insert_rows(batch), self.config.insert_timeout)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            self.metrics.clickhouse_insert_failures.inc()
            log.error("clickhouse insert failed", error=error, messages=len(batch), final=final)
            if final:
                await respond(self.nc, batch.deliveries, NAK)
                return False
            self.status.set("degraded", f"insert failed: {error}")
            self.metrics.clickhouse_healthy.set(0)
            self._paused = True
            await self._nak(batch)
            return False
        await respond(self.nc, batch.deliveries, ACK)
        self._stored(batch, time.monotonic() - started)
        return True

    def _stored(self, batch: Batch, elapsed: float) -> None:
        rows = len(batch.lines)
        self.metrics.clickhouse_rows_inserted.inc(rows)
        self.metrics.clickhouse_batch_size.observe(rows)
        self.metrics.clickhouse_flush_duration.observe(elapsed)
        if batch.oldest_stored_ns:
            lag = max(0.0, time.time() - batch.oldest_stored_ns / 1e9)
            self.metrics.clickhouse_consumer_lag.set(lag)
        self.status.rows_inserted += rows
        self.status.last_insert_at = time.time()
        if self.status.state != "running":
            self._healthy()

    def _healthy(self) -> None:
        self.status.set("running")
        self.metrics.clickhouse_healthy.set(1)

    async def _insert_rows(self, batch: Batch) -> None:
        keys = "\n".join(map("\x1f".join, batch.keys))
        token = hashlib.sha256(keys.encode()).hexdigest()
        await self.backend.insert(insert_sql(self.table, token), b"\n".join(batch.lines))

    async def _nak(self, batch: Batch) -> None:
        by_delay: dict[float, list[Delivery]] = {}
        for delivery in batch.deliveries:
            by_delay.setdefault(self._nak_delay(delivery.metadata()[0]), []).append(delivery)
        for delay, deliveries in by_delay.items():
            await respond(self.nc, deliveries, nak_payload(delay))

    def _nak_delay(self, delivered: int) -> float:
        steps = self.config.consumer_backoff
        if steps:
            return steps[min(delivered, len(steps)) - 1]
        return float(min(NAK_BASE * 2 ** (max(delivered, 1) - 1), NAK_MAX))

    # ------------------------------------------------------------------ outage, stop

    async def _wait_for_clickhouse(self) -> None:
        """Pulling is paused: NAK what is buffered, then probe with growing pauses."""
        await self._insert_finished()
        if self._batch:
            await self._nak(self._batch)
            self._batch = Batch()
        delay = PROBE_BASE
        while not self.stopping.is_set():
            # Jitter for waits, not a secret: the standard generator is right here.
            await self._sleep(delay * random.uniform(0.8, 1.2))  # nosec B311
            if self.stopping.is_set():
                return
            try:
                await asyncio.wait_for(self.backend.ping(), self.config.dial_timeout + 1)
            except Exception as exc:
                self.status.set("degraded", f"clickhouse unavailable: {exc}")
                delay = min(delay * 2, PROBE_MAX)
                continue
            log.info("clickhouse reachable again; the sink resumes")
            self._healthy()
            self._paused = False
            return

    async def _finish(self) -> None:
        """Stop: wait for the running insert, then store the last batch with a fresh
        deadline (the reference's final flush always failed on a cancelled context)."""
        if await self._insert_finished() and self._batch:
            batch, self._batch = self._batch, Batch()
            await self._store(batch, final=True)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
