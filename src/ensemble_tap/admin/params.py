"""Query and header values of the admin routes, read as the reference reads them.

Handlers take every value as text so that a bad one is answered with the reference's exact
400 message (naming the value); each parser returns the value or raises that 400.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson

from ensemble_tap.admin.calls import AdminFailure
from ensemble_tap.admin.cursors import InvalidCursor, decode_sequence_cursor
from ensemble_tap.config.models import ServerConfig
from ensemble_tap.events import parse_rfc3339_ns

INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Go's strconv.ParseBool, and "" (absent) as false.
BOOLEANS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False", ""), False),
}


def rejected(error: str, log_msg: str) -> AdminFailure:
    return AdminFailure(400, error, log_msg)


def quoted(raw: str) -> str:
    return orjson.dumps(raw).decode()


def positive_int(raw: str | None, name: str, log_msg: str) -> int:
    """0 when absent; else a positive integer or a 400 naming the value."""
    text = (raw or "").strip()
    if not text:
        return 0
    # Go's strconv.Atoi: ASCII digits with an optional sign, within int64 (Python's int()
    # would also take "1_000", non-ASCII digits and numbers too large to serialise).
    value = int(text) if _INTEGER.fullmatch(text) else None
    if value is None or not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise rejected(f"invalid {name} {quoted(text)}: must be a positive integer", log_msg)
    if value <= 0:
        raise rejected(f"invalid {name} {quoted(text)}: must be greater than 0", log_msg)
    return value


def boolean(raw: str | None, log_msg: str) -> bool:
    """False when absent; else a boolean or a 400 naming the value."""
    text = (raw or "").strip()
    if text not in BOOLEANS:
        raise rejected(f"invalid boolean {quoted(text)}", log_msg)
    return BOOLEANS[text]


def reason(raw: str | None, server: ServerConfig, log_msg: str) -> str:
    """The X-Admin-Reason: required when configured; when given, at least the minimum length
    (in characters)."""
    text = utf8((raw or "").strip())
    if not text:
        if server.admin_replay_require_reason:
            raise rejected("X-Admin-Reason header is required", log_msg)
        return ""
    minimum = server.admin_replay_reason_min_length
    if len(text) < minimum:
        raise rejected(f"X-Admin-Reason must be at least {minimum} characters", log_msg)
    return text


def utf8(header: str) -> str:
    """A header value as the client wrote it: ASGI servers decode header bytes as Latin-1,
    but clients send UTF-8 text (curl -H 'X-Admin-Reason: réparation')."""
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return header


def blank_to_none(raw: str | None) -> str | None:
    text = (raw or "").strip()
    return text or None


def instant(raw: str | None, name: str, log_msg: str) -> datetime | None:
    """An RFC 3339 time (offset required) as an aware datetime, or a 400 naming it."""
    text = (raw or "").strip()
    if not text:
        return None
    ns = parse_rfc3339_ns(text)
    if ns is None:
        raise rejected(
            f"invalid {name} {quoted(text)}: must be an RFC 3339 time such as 2026-11-28T10:00:00Z",
            log_msg,
        )
    return datetime.fromtimestamp(ns / 1e9, UTC)


def job_id(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise AdminFailure(400, "job_id is required", "admin replay dlq rejected")
    return text


def sequence_cursor(raw: str | None, log_msg: str) -> int | None:
    """The dead-letter page cursor: None when absent, else a stream sequence or a 400."""
    cursor = (raw or "").strip()
    if not cursor:
        return None
    try:
        return decode_sequence_cursor(cursor)
    except InvalidCursor as exc:
        raise rejected(str(exc), log_msg) from None
