"""The spool directory: segment files, the drain cursor, the lock. Blocking calls: run them
in a worker thread.

Layout of ``<dir>``::

    lock                        flock'd by the one process that owns the spool
    cursor                      "drained up to" (segment, offset), replaced atomically
    0000000000000001.seg ...    segments, appended in number order
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from ensemble_tap.spool.errors import SpoolLocked
from ensemble_tap.spool.record import Position

Fsync = Callable[[int], None]
SEGMENT_SUFFIX = ".seg"
CURSOR_NAME = "cursor"
LOCK_NAME = "lock"
_CURSOR = struct.Struct("<4sQQ")  # magic, segment, offset; a CRC32 of these follows
_CURSOR_MAGIC = b"\xf5TSC"


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:016d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> dict[int, int]:
    """Segment number → size in bytes, for every segment file in ``directory``."""
    found: dict[int, int] = {}
    for entry in os.scandir(directory):
        stem, suffix = os.path.splitext(entry.name)
        if suffix == SEGMENT_SUFFIX and stem.isdigit() and entry.is_file():
            found[int(stem)] = entry.stat().st_size
    return found


def fsync_dir(directory: Path, fsync: Fsync) -> None:
    """Make created, renamed and removed names in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def write_cursor(directory: Path, position: Position, fsync: Fsync) -> None:
    """Replace the cursor atomically: temp file, fsync, rename, directory fsync. A crash
    leaves either the old cursor or the new one, never a mix."""
    data = _CURSOR.pack(_CURSOR_MAGIC, position.segment, position.offset)
    data += zlib.crc32(data).to_bytes(4, "little")
    temp = directory / (CURSOR_NAME + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, directory / CURSOR_NAME)
    fsync_dir(directory, fsync)


def read_cursor(directory: Path) -> Position | None:
    """The stored cursor; None when there is none. ValueError when it is damaged."""
    try:
        data = (directory / CURSOR_NAME).read_bytes()
    except FileNotFoundError:
        return None
    body, crc = data[: _CURSOR.size], data[_CURSOR.size :]
    if len(data) != _CURSOR.size + 4 or zlib.crc32(body).to_bytes(4, "little") != crc:
        raise ValueError("spool cursor file is damaged")
    magic, segment, offset = _CURSOR.unpack(body)
    if magic != _CURSOR_MAGIC:
        raise ValueError("spool cursor file is damaged")
    return Position(segment, offset)


def lock_directory(directory: Path) -> int:
    """Take the spool's lock (held until the returned descriptor is closed, or the process
    dies): two processes appending to one spool would interleave their records."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolLocked(f"spool directory {directory} is in use by another process") from None
    return fd


def unlock_directory(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
