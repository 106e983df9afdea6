"""Reading segments back: the recovery scan at open and the drainer's batch reads. Blocking
calls: run them in a worker thread.

Damage policy (docs/reliability.md, "Local spool"): a record that fails its checks is
skipped up to the next record that passes them (found by its magic and CRC), so good records
after a damaged one are kept. Damage at the end of the newest segment is a torn tail (a
write cut short by a crash, never acknowledged): it is truncated away at open, so new
appends follow the last good record and nothing is read twice. Each damaged region is
logged and counted once, as one corrupt record.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

from ensemble_tap.spool.files import (
    CURSOR_NAME,
    Fsync,
    list_segments,
    read_cursor,
    segment_path,
)
from ensemble_tap.spool.record import (
    HEADER,
    MAGIC,
    MAX_LENGTH,
    META,
    Position,
    SpooledRecord,
    check,
    decode,
    next_valid,
    spooled_at,
)

READ_CHUNK = 256 * 1024


@dataclass(slots=True, frozen=True)
class Damage:
    """Bytes ``start``..``end`` of a segment that hold no valid record."""

    segment: int
    start: int
    end: int
    truncated: bool = False  # a torn tail, cut off the file


@dataclass(slots=True)
class Recovered:
    """The spool as found at open, after repairs."""

    cursor: Position
    segments: dict[int, int]  # number → size, in number order
    records: int = 0
    oldest: float | None = None
    damage: list[Damage] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)  # drained segments removed
    cursor_damaged: bool = False


def recover(directory: Path, fsync: Fsync) -> Recovered:
    """Check every undrained record, truncate a torn tail, remove drained segments."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / (CURSOR_NAME + ".tmp"))  # a cursor write cut short
    damaged_cursor = False
    try:
        cursor = read_cursor(directory) or Position(0, 0)
    except ValueError:
        # Cannot happen short of disk damage (the cursor is replaced by rename). Start over:
        # what is re-published is dropped by JetStream's dedup window.
        cursor, damaged_cursor = Position(0, 0), True
    found = list_segments(directory)
    result = Recovered(cursor, {}, cursor_damaged=damaged_cursor)
    numbers = sorted(found)
    for number in numbers:
        if number < cursor.segment:  # drained; its removal was cut short
            segment_path(directory, number).unlink()
            result.deleted.append(number)
    live = [n for n in numbers if n >= cursor.segment]
    for index, number in enumerate(live):
        newest = index == len(live) - 1
        start = cursor.offset if number == cursor.segment else 0
        size = found[number]
        if start >= size:  # drained to its end (or empty); appends go to a new segment
            segment_path(directory, number).unlink()
            result.deleted.append(number)
            continue
        size = _scan_segment(directory, number, start, size, newest, fsync, result)
        result.segments[number] = size
    return result


def _scan_segment(
    directory: Path,
    number: int,
    start: int,
    size: int,
    newest: bool,
    fsync: Fsync,
    result: Recovered,
) -> int:
    """Count and check the records of one segment from ``start``; the segment's size after
    repair (a torn tail of the newest segment is truncated)."""
    if start >= size:
        return size
    path = segment_path(directory, number)
    tail: int | None = None
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        position = start
        while position < size:
            end = check(data, position, size)
            if end is not None:
                if result.oldest is None:
                    result.oldest = spooled_at(data, position)
                result.records += 1
                position = end
                continue
            resume = next_valid(data, position + 1, size)
            if resume is None:
                tail = position
                break
            result.damage.append(Damage(number, position, resume))
            position = resume
    if tail is None:
        return size
    if not newest:  # an older segment's tail: skipped when drained, removed with it
        result.damage.append(Damage(number, tail, size))
        return size
    with open(path, "r+b") as writable:
        writable.truncate(tail)
        fsync(writable.fileno())
    result.damage.append(Damage(number, tail, size, truncated=True))
    return tail


@dataclass(slots=True, frozen=True)
class ReadResult:
    """Records in spool order, or (when the read starts at damage) the damage to skip."""

    records: list[SpooledRecord]
    damage: Damage | None = None


def read_records(
    directory: Path, plan: list[tuple[int, int, int]], max_records: int, max_bytes: int
) -> ReadResult:
    """Read records along ``plan`` (segment, from offset, durable end) until ``max_records``
    or ``max_bytes`` (at least one record). Damage ends the read before it; at the start of
    the read it is returned instead, with where the next valid record starts."""
    records: list[SpooledRecord] = []
    taken = 0
    for number, start, stop in plan:
        fd = os.open(segment_path(directory, number), os.O_RDONLY)
        try:
            reader = _SegmentReader(fd, number, stop)
            position = start
            while position < stop and len(records) < max_records and taken < max_bytes:
                record = reader.record_at(position)
                if record is None:
                    if records:
                        return ReadResult(records)
                    return ReadResult([], Damage(number, position, _resume(fd, position, stop)))
                records.append(record)
                taken += record.size
                position = record.end.offset
        finally:
            os.close(fd)
        if len(records) >= max_records or taken >= max_bytes:
            break
    return ReadResult(records)


class _SegmentReader:
    """Records of one open segment, read in chunks (one pread for many small records)."""

    def __init__(self, fd: int, segment: int, stop: int) -> None:
        self.fd = fd
        self.segment = segment
        self.stop = stop
        self.chunk = b""
        self.chunk_at = 0

    def _bytes(self, at: int, length: int) -> tuple[bytes, int]:
        """A buffer holding ``length`` bytes at ``at`` and the index of ``at`` in it."""
        if at < self.chunk_at or at + length > self.chunk_at + len(self.chunk):
            self.chunk = os.pread(self.fd, min(max(length, READ_CHUNK), self.stop - at), at)
            self.chunk_at = at
        return self.chunk, at - self.chunk_at

    def record_at(self, position: int) -> SpooledRecord | None:
        if position + HEADER.size + META.size > self.stop:
            return None
        buffer, index = self._bytes(position, HEADER.size)
        magic, _, length = HEADER.unpack(buffer[index : index + HEADER.size])
        if magic != MAGIC or length > MAX_LENGTH or position + HEADER.size + length > self.stop:
            return None
        buffer, index = self._bytes(position, HEADER.size + length)
        end = check(buffer, index, len(buffer))
        if end is None:
            return None
        return decode(buffer, index, end, self.segment, self.chunk_at)


def _resume(fd: int, position: int, stop: int) -> int:
    """Where the next valid record after damage at ``position`` starts (``stop``: none)."""
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data:
        found = next_valid(data, position + 1, min(stop, len(data)))
    return stop if found is None else found


def peek_spooled_at(directory: Path, position: Position) -> float | None:
    """The spool time of the record at ``position`` (header only: the age gauge's source),
    None when it does not look like a record."""
    size = HEADER.size + META.size
    fd = os.open(segment_path(directory, position.segment), os.O_RDONLY)
    try:
        data = os.pread(fd, size, position.offset)
    finally:
        os.close(fd)
    if len(data) < size or data[:4] != MAGIC:
        return None
    return spooled_at(data, 0)
