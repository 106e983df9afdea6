"""The drainer: republishes spooled events to JetStream in spool order, with their original
subject, ``Nats-Msg-Id`` and request id, and commits the cursor after their acks.

A batch is published as a pipelined window (publishes sent in order on the one connection,
acks awaited together); the cursor moves only over the contiguous acknowledged prefix. After
a failure (and at start) the first publish of a batch goes alone: a window is only sent once
the broker has acknowledged something, so a broker that is coming back (JetStream not ready
yet, a stream leader being elected) cannot store a later event before an earlier one.

A re-publish (the cursor lags the acks after a crash, or a window's later publishes succeeded
before an earlier one failed) is dropped by JetStream: same ``Nats-Msg-Id``, inside the
stream's dedup window (docs/reliability.md states the precise guarantee).

An event the broker refuses for good (``PublishError.unavailable`` false: too large, stream
full with discard new, ...) goes to ``on_rejected`` (the dead-letter writer) and the drainer
moves on; the spool never stalls behind one poison event.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Protocol

from ensemble_tap.bus.contract import PublishError
from ensemble_tap.observability import Metrics, get_logger
from ensemble_tap.spool.log import SpoolLog
from ensemble_tap.spool.record import Position, SpooledRecord

log = get_logger("ensemble_tap.spool")


class SpoolPublisher(Protocol):
    """What the drainer needs of a ``bus.contract.Publisher``."""

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        request_id: str = "",
        timeout: float | None = None,
    ) -> object: ...


# Called with an event the broker refused for good; True when it is recorded elsewhere (the
# dead-letter stream). False (or an exception) makes the drainer try again later.
RejectHandler = Callable[[SpooledRecord, PublishError], Awaitable[bool]]


class Drainer:
    """A background task draining ``spool`` through ``publisher`` while it has events."""

    def __init__(
        self,
        spool: SpoolLog,
        publisher: SpoolPublisher,
        *,
        on_rejected: RejectHandler | None = None,
        metrics: Metrics | None = None,
        window: int = 256,
        batch_bytes: int = 4 * 1024 * 1024,
        publish_timeout: float | None = None,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        reject_attempts: int = 5,
    ) -> None:
        self.spool = spool
        self.publisher = publisher
        self.on_rejected = on_rejected
        self.metrics = metrics
        self.window = window
        self.batch_bytes = batch_bytes
        self.publish_timeout = publish_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.reject_attempts = reject_attempts
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._probing = True  # publish one event alone before opening the window
        self._failures = 0
        self._refusals: dict[Position, int] = {}

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="spool-drainer")

    async def stop(self) -> None:
        """Cancel the drainer. Publishes in flight are not committed: they are published
        again at the next start (and dropped by JetStream's dedup)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Cut a backoff short (e.g. the broker connection is back)."""
        self._wake.set()

    @property
    def waiting_for_broker(self) -> bool:
        """True while the last attempt failed and the drainer is backing off."""
        return self._failures > 0

    async def run(self) -> None:
        while True:
            try:
                await self.spool.wait_for_records()
                failed = await self.drain_batch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a disk error or a bug: never end the task
                log.error("spool drain failed", error=str(exc) or type(exc).__name__)
                failed = True
            if failed:
                self._failures += 1
                await self._backoff()
            elif self._failures:
                self._failures = 0
                log.info("spool drain resumed", depth=self.spool.depth_events)

    async def drain_batch(self) -> bool:
        """Read, publish and commit one batch; True when it stopped on a failure."""
        batch = await self.spool.read_batch(self.window, self.batch_bytes)
        if not batch:
            return False
        done, published, failed = await self._deliver(batch)
        await self.spool.commit(batch[:done])
        if self.metrics is not None and published:
            self.metrics.spool_drained.inc(published)
        return failed

    async def _deliver(self, batch: list[SpooledRecord]) -> tuple[int, int, bool]:
        """Publish ``batch``: how many events from its start are settled (acknowledged or
        handed to ``on_rejected``), how many of those were acknowledged, and whether it
        stopped on a failure."""
        results: list[BaseException | None] = []
        rest = batch
        if self._probing:
            results.append(await self._publish(batch[0]))
            rest = batch[1:] if results[0] is None else []
        if rest:
            results += await asyncio.gather(*(self._publish(record) for record in rest))
        published = 0
        for index, (record, error) in enumerate(zip(batch, results, strict=False)):
            if error is None:
                self._probing = False
                published += 1
                continue
            if isinstance(error, PublishError) and not error.unavailable:
                if await self._refused(record, error):
                    continue
            else:
                self._probing = True
                if not self._failures:  # once per outage, not once per attempt
                    log.warning(
                        "spool drain waiting for the broker",
                        error=str(error) or type(error).__name__,
                        depth=self.spool.depth_events,
                    )
            return index, published, True
        return len(results), published, False

    async def _publish(self, record: SpooledRecord) -> BaseException | None:
        try:
            await self.publisher.publish(
                record.subject,
                record.payload,
                record.msg_id,
                record.request_id,
                self.publish_timeout,
            )
        except Exception as exc:
            return exc
        return None

    async def _refused(self, record: SpooledRecord, error: PublishError) -> bool:
        """Hand a refused event to ``on_rejected``; True when the drainer may move on."""
        attempts = self._refusals.get(record.position, 0) + 1
        fields = {
            "subject": record.subject,
            "msg_id": record.msg_id,
            "request_id": record.request_id,
            "error": str(error),
        }
        recorded = False
        if self.on_rejected is not None:
            try:
                recorded = await self.on_rejected(record, error)
            except Exception as exc:
                log.error("spool rejection handler failed", **fields, handler_error=str(exc))
        if recorded:
            log.warning("spooled event refused by the broker; dead-lettered", **fields)
        elif self.on_rejected is None or attempts >= self.reject_attempts:
            log.error("spooled event refused by the broker and dropped", **fields)
            if self.metrics is not None:
                self.metrics.spool_dropped.inc()
        else:
            self._refusals[record.position] = attempts
            return False
        self._refusals.pop(record.position, None)
        return True

    async def _backoff(self) -> None:
        delay = min(self.max_backoff, self.min_backoff * 2 ** min(self._failures - 1, 30))
        with contextlib.suppress(TimeoutError):
            # Jitter for waits, not a secret: the standard generator is right here.
            await asyncio.wait_for(self._wake.wait(), delay * (0.5 + random.random() / 2))  # nosec B311
        self._wake.clear()
