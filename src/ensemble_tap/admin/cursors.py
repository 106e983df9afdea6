"""The page cursors of the admin API: opaque to callers, unpadded base64url.

* replay jobs: ``<created_ns>|<job_id>`` (the last job of the page);
* dead letters: ``seq|<stream sequence>`` (the sequence to continue below).

A cursor that was not handed out is an ``InvalidCursor`` whose message is the API's 400 error.
The strict checks match the reference's decoder: Python's lenient one would skip characters
outside the alphabet and accept padding.
"""

from __future__ import annotations

import base64
import binascii
import re

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_INT64 = re.compile(r"[+-]?[0-9]+")
_DIGITS = re.compile(r"[0-9]+")


class InvalidCursor(ValueError):
    pass


def encode_job_cursor(created_ns: int, job_id: str) -> str:
    return _encode(f"{created_ns}|{job_id}")


def decode_job_cursor(cursor: str) -> tuple[int, str]:
    """``(created_ns, job_id)`` of a cursor from ``encode_job_cursor``."""
    stamp, sep, job_id = _decode(cursor).partition("|")
    if not sep:
        raise InvalidCursor("invalid cursor: malformed payload")
    # An int64, as strconv.ParseInt reads it (int() alone would also take "1_0" or "²").
    if not _INT64.fullmatch(stamp) or not -(2**63) <= int(stamp) < 2**63:
        raise InvalidCursor("invalid cursor: bad timestamp")
    if not job_id.strip():
        raise InvalidCursor("invalid cursor: missing job id")
    return int(stamp), job_id


def encode_sequence_cursor(sequence: int) -> str:
    return _encode(f"seq|{sequence}")


def decode_sequence_cursor(cursor: str) -> int:
    """The stream sequence of a cursor from ``encode_sequence_cursor``."""
    prefix, _, number = _decode(cursor).partition("|")
    if prefix != "seq" or not _DIGITS.fullmatch(number) or int(number) <= 0:
        raise InvalidCursor("invalid cursor: malformed payload")
    return int(number)


def _encode(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    if not _BASE64URL.fullmatch(cursor):
        raise InvalidCursor("invalid cursor: malformed encoding")
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("invalid cursor: malformed encoding") from None
