"""The spool's record framing: binary, length-prefixed and checksummed.

One record on disk::

    magic (4) | crc32 (4) | length (4) | spooled_at (8, float) |
    len(subject) (2) | len(msg_id) (2) | len(request_id) (2) |
    subject | msg_id | request_id | payload

``length`` counts everything after it; the CRC covers ``length`` and everything after it, so a
torn write, a zero-filled tail or a flipped bit all fail the check. The payload (the CloudEvent
body, 1 MiB or more) is stored as is: no escaping, no copy into a text format.

The magic starts with 0xF5, a byte that never occurs in UTF-8: CloudEvent bodies, subjects and
ids are UTF-8, so after a damaged record the scanner can look for the next magic and trust a
hit only when its CRC checks out too.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"\xf5TSR"
HEADER = struct.Struct("<4sII")  # magic, crc32, length
META = struct.Struct("<dHHH")  # spooled_at, len(subject), len(msg_id), len(request_id)
# A larger length is damage, not a record: bodies are at most 64 MiB (server.max_body_size).
MAX_LENGTH = 256 * 1024 * 1024
MAX_FIELD = 0xFFFF


Buffer = bytes | mmap.mmap  # what the checks read from: a read chunk or a mapped segment


@dataclass(slots=True, frozen=True, order=True)
class Position:
    """A place in the spool: segment number and byte offset inside it."""

    segment: int
    offset: int


@dataclass(slots=True, frozen=True)
class SpooledRecord:
    """One spooled event, as read back for draining."""

    subject: str
    payload: bytes
    msg_id: str
    request_id: str
    spooled_at: float  # unix seconds
    position: Position
    end: Position  # just after this record: the drain cursor once it is published

    @property
    def size(self) -> int:
        return self.end.offset - self.position.offset


def encode_meta(subject: str, msg_id: str, request_id: str, spooled_at: float) -> bytes:
    """Everything of a record but its header and payload (cheap: runs on the event loop)."""
    fields = (subject.encode(), msg_id.encode(), request_id.encode())
    if any(len(field) > MAX_FIELD for field in fields):
        raise ValueError("subject, msg_id and request_id must each be at most 65535 bytes")
    return META.pack(spooled_at, *(len(field) for field in fields)) + b"".join(fields)


def record_size(meta: bytes, payload: bytes) -> int:
    return HEADER.size + len(meta) + len(payload)


def encode_header(meta: bytes, payload: bytes) -> bytes:
    """The header of ``meta + payload`` (the CRC is the costly part: run it off the loop)."""
    length = len(meta) + len(payload)
    if length > MAX_LENGTH:
        raise ValueError(f"record of {length} bytes exceeds the spool's limit of {MAX_LENGTH}")
    length_bytes = length.to_bytes(4, "little")
    crc = zlib.crc32(payload, zlib.crc32(meta, zlib.crc32(length_bytes)))
    return MAGIC + crc.to_bytes(4, "little") + length_bytes


def check(buffer: Buffer, offset: int, limit: int) -> int | None:
    """The end of the valid record at ``offset`` (before ``limit``), or None when there is
    none: bad magic, a length past ``limit``, a bad CRC or inconsistent field lengths."""
    if offset + HEADER.size + META.size > limit:
        return None
    magic, crc, length = HEADER.unpack(buffer[offset : offset + HEADER.size])
    end: int = offset + HEADER.size + length
    if magic != MAGIC or length < META.size or length > MAX_LENGTH or end > limit:
        return None
    if zlib.crc32(buffer[offset + 8 : end]) != crc:
        return None
    _, subject_len, msg_id_len, request_id_len = META.unpack(
        buffer[offset + HEADER.size : offset + HEADER.size + META.size]
    )
    if META.size + subject_len + msg_id_len + request_id_len > length:
        return None
    return end


def spooled_at(buffer: Buffer, offset: int) -> float:
    """The spool time of the (checked) record at ``offset``."""
    start = offset + HEADER.size
    return float(META.unpack(buffer[start : start + META.size])[0])


def decode(buffer: Buffer, offset: int, end: int, segment: int, base: int = 0) -> SpooledRecord:
    """The (checked) record at ``offset`` of ``buffer``; ``base`` is the buffer's offset in
    its segment file."""
    start = offset + HEADER.size
    at, subject_len, msg_id_len, request_id_len = META.unpack(buffer[start : start + META.size])
    cut = start + META.size
    subject = buffer[cut : cut + subject_len].decode()
    cut += subject_len
    msg_id = buffer[cut : cut + msg_id_len].decode()
    cut += msg_id_len
    request_id = buffer[cut : cut + request_id_len].decode()
    cut += request_id_len
    return SpooledRecord(
        subject=subject,
        payload=buffer[cut:end],
        msg_id=msg_id,
        request_id=request_id,
        spooled_at=float(at),
        position=Position(segment, base + offset),
        end=Position(segment, base + end),
    )


def next_valid(buffer: Buffer, start: int, limit: int) -> int | None:
    """The offset of the first valid record at or after ``start``, or None."""
    while True:
        found = buffer.find(MAGIC, start, limit)
        if found < 0:
            return None
        if check(buffer, found, limit) is not None:
            return found
        start = found + 1
