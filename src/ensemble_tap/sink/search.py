"""Find stored events ("where is my webhook?"): filters, newest first, cursor pagination.

Every filter value is a bound query parameter (never pasted into SQL). ``FINAL`` makes each
event appear once even before ClickHouse has merged away its redelivered copies. The cursor
is the sort key of the last row of a page, so pages stay stable while new events arrive.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ensemble_tap.sink.backends import Backend, BackendError
from ensemble_tap.sink.schema import TableRef

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_FILTER_COLUMNS = {
    "id": "id",
    "request_id": "request_id",
    "provider": "provider",
    "tenant": "ifNull(tenant_id, '')",
    "type": "type",
    "entity_id": "entity_id",
}
_SELECT = (
    "id, type, source, subject, time, provider, entity_type, entity_id, action, changes, "
    "snapshot, provider_event_id, tenant_id, request_id, received_at, "
    "toString(toUnixTimestamp64Milli(time)) AS cursor_time, "
    "ifNull(tenant_id, '') AS cursor_tenant"
)
_ORDER = "time DESC, provider DESC, ifNull(tenant_id, '') DESC, id DESC"
_NOT_CREATED_YET = ("UNKNOWN_DATABASE", "UNKNOWN_TABLE")
_CURSOR_KEY = "(toUnixTimestamp64Milli(time), provider, ifNull(tenant_id, ''), id)"


class InvalidSearch(ValueError):
    """A filter, limit or cursor the caller must fix (an HTTP 400)."""


@dataclass(frozen=True, slots=True)
class EventFilters:
    """Exact-match filters (None: any) and an event-time window ``since <= time < until``."""

    id: str | None = None
    request_id: str | None = None
    provider: str | None = None
    tenant: str | None = None
    type: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def search_events(
    backend: Backend,
    *,
    table: TableRef,
    filters: EventFilters,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of events, newest first, and the cursor of the next page (None at the end).

    Each event has the table's columns; ``time`` and ``received_at`` are RFC 3339 (UTC,
    milliseconds); ``changes`` and ``snapshot`` are parsed JSON (their stored text when it is
    not parseable). No table yet is an empty page. Raises InvalidSearch for a bad limit or
    cursor, BackendError when ClickHouse fails.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidSearch(f"limit must be between 1 and {MAX_LIMIT}")
    conditions, params = _conditions(filters)
    if cursor is not None:
        cursor_time, provider, tenant, event_id = decode_cursor(cursor)
        conditions.append(
            f"{_CURSOR_KEY} < ({{c_time:Int64}}, {{c_provider:String}}, "
            "{c_tenant:String}, {c_id:String})"
        )
        params.update(c_time=str(cursor_time), c_provider=provider, c_tenant=tenant, c_id=event_id)
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    sql = (
        # Identifiers validated and backquoted (TableRef); every value is a bound parameter.
        f"SELECT {_SELECT} FROM {table.qualified} FINAL {where}ORDER BY {_ORDER} LIMIT {limit + 1}"  # nosec B608
    )
    try:
        rows = await backend.query(sql, params)
    except BackendError as exc:
        if any(code in str(exc) for code in _NOT_CREATED_YET):
            return [], None  # nothing stored yet: the sink creates the table on first start
        raise
    page, more = rows[:limit], len(rows) > limit
    next_cursor = None
    if more and page:
        last = page[-1]
        next_cursor = encode_cursor(
            int(last["cursor_time"]),
            provider=last["provider"],
            tenant=last["cursor_tenant"],
            event_id=last["id"],
        )
    return [_event(row) for row in page], next_cursor


def _conditions(filters: EventFilters) -> tuple[list[str], dict[str, str]]:
    conditions: list[str] = []
    params: dict[str, str] = {}
    for name, column in _FILTER_COLUMNS.items():
        value = getattr(filters, name)
        if value is not None:
            conditions.append(f"{column} = {{{name}:String}}")
            params[name] = value
    for name, operator in (("since", ">="), ("until", "<")):
        moment = getattr(filters, name)
        if moment is not None:
            conditions.append(f"time {operator} fromUnixTimestamp64Milli({{{name}:Int64}})")
            params[name] = str(_epoch_ms(moment))
    return conditions, params


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times are UTC, as everywhere in Tap
    return int(moment.timestamp() * 1000)


def _event(row: dict[str, Any]) -> dict[str, Any]:
    event = {key: value for key, value in row.items() if not key.startswith("cursor_")}
    for key in ("time", "received_at"):
        # DateTime64(3, 'UTC') is written as "2026-01-02 03:04:05.678".
        event[key] = str(event[key]).replace(" ", "T", 1) + "Z"
    for key in ("changes", "snapshot"):
        text = event.get(key)
        if isinstance(text, str):
            # An unparseable text (e.g. integers beyond 64 bits) is returned as stored.
            with contextlib.suppress(orjson.JSONDecodeError):
                event[key] = orjson.loads(text)
    return event


def encode_cursor(time_ms: int, *, provider: str, tenant: str, event_id: str) -> str:
    raw = orjson.dumps([time_ms, provider, tenant, event_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        time_ms, provider, tenant, event_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidSearch("invalid cursor") from None
    if not isinstance(time_ms, int) or not all(
        isinstance(part, str) for part in (provider, tenant, event_id)
    ):
        raise InvalidSearch("invalid cursor")
    return time_ms, provider, tenant, event_id
