"""The spool's log: append-only segment files under one directory, group-committed appends,
a durable drain cursor, bounded by ``max_bytes``.

Appends queue up while the previous write is on its way to disk; one writer then writes
everything queued with one ``writev`` and one fsync (in a worker thread: the event loop never
waits for the disk), and every append's await returns once its record is durable. No timer:
the batch is whatever arrived during the previous fsync, so a lone append costs one fsync and
a burst of a thousand costs a handful.

The drainer reads records after the cursor, publishes them and commits: the cursor is then
replaced atomically (``files.write_cursor``) and segments drained to their end are deleted,
which is what frees space under ``max_bytes``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ensemble_tap.observability import Metrics, get_logger
from ensemble_tap.spool.errors import SpoolClosed, SpoolFull, SpoolWriteError
from ensemble_tap.spool.files import (
    Fsync,
    fsync_dir,
    lock_directory,
    segment_path,
    unlock_directory,
    write_cursor,
)
from ensemble_tap.spool.record import (
    Position,
    SpooledRecord,
    encode_header,
    encode_meta,
    record_size,
)
from ensemble_tap.spool.scan import Damage, Recovered, peek_spooled_at, read_records, recover

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
# One write batch takes at most this much (a larger single record goes alone), so a segment
# ends at most one batch past segment_bytes.
BATCH_BYTES = 8 * 1024 * 1024
_IOV_MAX = 1024  # buffers per writev (Linux's IOV_MAX)
_T = TypeVar("_T")
log = get_logger("ensemble_tap.spool")


@dataclass(slots=True)
class _Pending:
    meta: bytes
    payload: bytes
    size: int
    spooled_at: float
    done: asyncio.Future[None]


@dataclass(slots=True, frozen=True)
class _Written:
    segment: int
    size: int  # the segment's size after the batch


class _Broken(Exception):
    """A failed write could not be undone: the segment's end is unknown."""


class SpoolLog:
    """The durable queue of spooled events. One process owns a directory (flock)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        metrics: Metrics | None = None,
        fsync: Fsync = os.fsync,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.metrics = metrics
        self._fsync = fsync
        self._clock = clock
        # Two threads: the writer's batch and the drainer's read or commit run side by side.
        self._executor: ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None
        self._open = False
        self._broken = False
        self._segments: dict[int, int] = {}  # number → durable size
        self._cursor = Position(0, 0)
        self._depth = 0
        self._disk_bytes = 0  # sum of segment sizes (durable)
        self._reserved = 0  # queued or being written
        self._oldest: float | None = None
        self._known_damage: set[tuple[int, int]] = set()
        self._last_read: list[SpooledRecord] = []
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._file_lock = asyncio.Lock()  # the active segment: writing vs deleting it
        self._commit_lock = asyncio.Lock()
        self._readable = asyncio.Event()
        # The segment appends go to (touched by the writer thread under _file_lock only).
        self._active_fd: int | None = None
        self._active = 0
        self._active_size = 0
        self._next_segment = 1

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> Recovered:
        """Take the directory's lock, check every undrained record (repairing a torn tail)
        and get ready to append. Raises SpoolLocked when another process owns it."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # events: private
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tap-spool")
        try:
            self._lock_fd = await self._run(lock_directory, self.directory)
            found = await self._run(recover, self.directory, self._fsync)
        except BaseException:
            await self._release()
            raise
        self._segments = dict(found.segments)
        self._cursor = found.cursor
        self._depth = found.records
        self._oldest = found.oldest
        self._disk_bytes = sum(self._segments.values())
        self._known_damage = {(d.segment, d.start) for d in found.damage if not d.truncated}
        # Appends go to a new segment: never after bytes this process did not write.
        self._next_segment = max([*self._segments, self._cursor.segment]) + 1
        self._report_recovery(found)
        self._open = True
        self._update_gauges()
        if self.metrics is not None:
            self.metrics.spool_oldest_age.set_function(self.oldest_age)
        if self._read_start() is not None:
            self._readable.set()
        return found

    async def close(self) -> None:
        """Stop taking appends, finish the ones queued, release the directory."""
        if not self._open:
            return
        self._open = False
        writer = self._writer
        if writer is not None:
            await asyncio.gather(writer, return_exceptions=True)
        async with self._file_lock:
            if self._active_fd is not None:
                os.close(self._active_fd)
                self._active_fd = None
        if self.metrics is not None:
            self.metrics.spool_oldest_age.set_function(lambda: 0.0)
        await self._release()

    async def _release(self) -> None:
        if self._lock_fd is not None:
            unlock_directory(self._lock_fd)
            self._lock_fd = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- state -----------------------------------------------------------------------------

    @property
    def depth_events(self) -> int:
        """Spooled events not drained yet."""
        return self._depth

    @property
    def disk_bytes(self) -> int:
        """Bytes of the segment files (what ``max_bytes`` bounds)."""
        return self._disk_bytes

    @property
    def cursor(self) -> Position:
        return self._cursor

    def oldest_age(self) -> float:
        """Seconds since the oldest undrained event was spooled; 0 when there is none."""
        if self._oldest is None or self._depth == 0:
            return 0.0
        return max(0.0, self._clock() - self._oldest)

    # -- appending -------------------------------------------------------------------------

    async def append(self, subject: str, payload: bytes, msg_id: str, request_id: str = "") -> None:
        """Spool one event; return once it is durable (written and fsync'd). Raises
        SpoolFull past ``max_bytes``, SpoolWriteError when the disk failed, SpoolClosed."""
        if not self._open or self._broken:
            raise SpoolClosed("spool is not open" if not self._broken else "spool is broken")
        now = self._clock()
        meta = encode_meta(subject, msg_id, request_id, now)
        size = record_size(meta, payload)
        used = self._disk_bytes + self._reserved
        if used + size > self.max_bytes:
            if self.metrics is not None:
                self.metrics.spool_rejected.inc()
            raise SpoolFull(size, used, self.max_bytes)
        self._reserved += size
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(meta, payload, size, now, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        await done

    async def _write_loop(self) -> None:
        while self._pending:
            batch = self._take_batch()
            total = sum(item.size for item in batch)
            try:
                async with self._file_lock:
                    written = await self._run(self._write_batch, batch)
            except BaseException as exc:
                self._reserved -= total
                self._fail(batch, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self._reserved -= total
            self._disk_bytes += total
            self._segments[written.segment] = written.size
            if self._depth == 0 or self._oldest is None:
                self._oldest = batch[0].spooled_at
            self._depth += len(batch)
            if self.metrics is not None:
                self.metrics.spool_spooled.inc(len(batch))
            self._update_gauges()
            self._readable.set()
            for item in batch:
                if not item.done.done():  # the appender may have been cancelled
                    item.done.set_result(None)

    def _take_batch(self) -> list[_Pending]:
        taken = 0
        count = 0
        for item in self._pending:
            if count and taken + item.size > BATCH_BYTES:
                break
            taken += item.size
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    def _fail(self, batch: list[_Pending], exc: BaseException) -> None:
        if isinstance(exc, _Broken):
            self._broken = True
            log.error("spool write failed and could not be undone; spool disabled", error=str(exc))
        else:
            log.error("spool write failed", error=str(exc) or type(exc).__name__)
        error = SpoolWriteError(f"spool write failed: {exc}")
        for item in batch:
            if not item.done.done():
                item.done.set_exception(error)

    def _write_batch(self, batch: list[_Pending]) -> _Written:
        """Worker thread: write and fsync ``batch`` at the end of the active segment (a new
        one when it is full or there is none). On failure the segment is cut back to where
        the batch started, so no half-written batch stays in front of later appends."""
        if self._active_fd is None or self._active_size >= self.segment_bytes:
            self._start_segment()
        fd = self._active_fd
        assert fd is not None
        start = self._active_size
        buffers: list[bytes] = []
        for item in batch:
            buffers += (encode_header(item.meta, item.payload), item.meta, item.payload)
        try:
            _write_all(fd, buffers, start)
            self._fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
                self._fsync(fd)
            except OSError as undo:
                raise _Broken(f"{exc}; undoing it failed: {undo}") from exc
            raise
        self._active_size = start + sum(item.size for item in batch)
        return _Written(self._active, self._active_size)

    def _start_segment(self) -> None:
        """Worker thread: close the active segment (already fsync'd) and create the next."""
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        number = self._next_segment
        path = segment_path(self.directory, number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fsync_dir(self.directory, self._fsync)  # the new name is durable before its data
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._active_fd = fd
        self._active = number
        self._active_size = 0
        self._next_segment = number + 1

    # -- draining --------------------------------------------------------------------------

    async def wait_for_records(self) -> None:
        """Return once there is something to read after the cursor."""
        while self._read_start() is None:
            self._readable.clear()
            await self._readable.wait()

    async def read_batch(
        self, max_records: int = 256, max_bytes: int = 4 * 1024 * 1024
    ) -> list[SpooledRecord]:
        """The oldest undrained records, in spool order (at least one when there are any).
        Damage in their way is logged, counted and skipped (the cursor moves past it)."""
        while True:
            start = self._read_start()
            if start is None:
                return []
            plan = [
                (number, start.offset if number == start.segment else 0, size)
                for number, size in sorted(self._segments.items())
                if number >= start.segment
            ]
            result = await self._run(read_records, self.directory, plan, max_records, max_bytes)
            if result.damage is None:
                self._last_read = result.records
                if result.records:
                    self._oldest = result.records[0].spooled_at
                return result.records
            self._report_damage(result.damage)
            await self._advance(Position(result.damage.segment, result.damage.end), 0)

    async def commit(self, drained: Sequence[SpooledRecord]) -> None:
        """Mark ``drained`` (a prefix of the last read, in order) as published: the cursor
        moves past the last one durably, and segments drained to their end are deleted."""
        if drained:
            await self._advance(drained[-1].end, len(drained))

    async def _advance(self, position: Position, records: int) -> None:
        async with self._commit_lock:
            await self._run(write_cursor, self.directory, position, self._fsync)
            self._cursor = position
            self._depth = max(0, self._depth - records)
            await self._delete_drained()
            if self._depth == 0:
                self._oldest = None
            else:
                following = [r for r in self._last_read if r.position >= position]
                start = self._read_start()
                if following:
                    self._oldest = following[0].spooled_at
                elif start is not None:
                    self._oldest = await self._run(peek_spooled_at, self.directory, start)
            self._update_gauges()

    async def _delete_drained(self) -> None:
        """Delete segments the cursor has passed; the active one too when it is drained to
        its end (the next append starts a new segment), so draining frees the space."""
        cursor = self._cursor
        done = [
            number
            for number, size in self._segments.items()
            if number < cursor.segment or (number == cursor.segment and cursor.offset >= size)
        ]
        for number in sorted(done):
            async with self._file_lock:
                # Re-checked under the lock: an append may have grown the active segment.
                size = self._segments.get(number)
                if size is None or (number == cursor.segment and cursor.offset < size):
                    continue
                await self._run(self._delete_segment, number)
                del self._segments[number]
                self._disk_bytes -= size

    def _delete_segment(self, number: int) -> None:
        """Worker thread, under _file_lock. No directory fsync: a deleted segment that
        reappears after a crash is behind the durable cursor and is deleted again."""
        if number == self._active and self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        segment_path(self.directory, number).unlink(missing_ok=True)

    def _read_start(self) -> Position | None:
        """Where the next undrained byte is (None: nothing durable after the cursor)."""
        cursor = self._cursor
        for number in sorted(self._segments):
            if number < cursor.segment:
                continue
            offset = cursor.offset if number == cursor.segment else 0
            if offset < self._segments[number]:
                return Position(number, offset)
        return None

    # -- reporting -------------------------------------------------------------------------

    def _report_recovery(self, found: Recovered) -> None:
        if found.cursor_damaged:
            log.error(
                "spool cursor damaged; draining from the oldest segment", dir=str(self.directory)
            )
        for damage in found.damage:
            self._report_damage(damage, counted=False)
        if self.metrics is not None and found.damage:
            self.metrics.spool_corrupt_records.inc(len(found.damage))
        if found.records:
            log.info(
                "spool opened with undrained events",
                dir=str(self.directory),
                events=found.records,
                bytes=self._disk_bytes,
            )

    def _report_damage(self, damage: Damage, counted: bool = True) -> None:
        key = (damage.segment, damage.start)
        if counted:
            if key in self._known_damage:  # found at open: logged and counted then
                self._known_damage.discard(key)
                return
            if self.metrics is not None:
                self.metrics.spool_corrupt_records.inc()
        log.error(
            "spool torn tail truncated" if damage.truncated else "spool damaged record skipped",
            dir=str(self.directory),
            segment=damage.segment,
            offset=damage.start,
            bytes=damage.end - damage.start,
        )

    def _update_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.spool_depth_events.set(self._depth)
            self.metrics.spool_depth_bytes.set(self._disk_bytes)

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            raise SpoolClosed("spool is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _write_all(fd: int, buffers: list[bytes], offset: int) -> None:
    """pwritev every buffer at ``offset``, resuming after short writes."""
    views = [memoryview(buffer) for buffer in buffers if buffer]
    while views:
        written = os.pwritev(fd, views[:_IOV_MAX], offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]
