"""A JetStream message (a structured CloudEvent) → one row of the events table.

A message that can never become a row is *poison* (``PoisonMessage``): it is not JSON, not a
CloudEvent, or its ``data`` is not the Tap data object. Everything the rows carry is checked
here, so ClickHouse never rejects a batch because of one message.

Rows are encoded as ``JSONCompactEachRow`` lines. ``changes`` and ``snapshot`` keep the
original JSON text of the message (the reference re-encoded them through float64, losing
large integers). The event time is passed as the CloudEvent's RFC 3339 text and parsed by
ClickHouse (``date_time_input_format = 'best_effort'``), so its offset is honoured whatever
the column's time zone.

Two paths, one result. ``fast_row`` decodes straight into typed structs (msgspec: no
dict per object, ``changes``/``snapshot`` as their exact original bytes) and handles the
messages this service publishes; on anything unusual — a type, time or id it would have to
think about — it steps aside and ``checked_row`` (orjson, every rule spelled out) decides,
including every poison verdict. tests/unit/test_sink_rows.py checks that both agree. The
one difference: a number beyond a double's range (``1e400``) inside ``data`` is kept as
text by the fast path, where orjson calls the whole message "not JSON".
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from datetime import date
from typing import Any, NamedTuple

import msgspec
import orjson

from ensemble_tap.events import format_time_ns

# DateTime64(3) holds 1900-01-01 … 2299-12-31.
MIN_YEAR, MAX_YEAR = 1900, 2299
# RFC 3339 as Go parses it (upper-case T and Z); the date is checked separately.
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
_BAD_DATE, _OUT_OF_RANGE = 1, 2
_ATTRIBUTES = ("id", "type", "source", "subject")
_STRING_OR_NONE = frozenset({str, type(None)})
_SPEC_VERSIONS = frozenset({"1.0", "0.3"})
_DATA_STRINGS = (
    "provider",
    "entity_type",
    "entity_id",
    "action",
    "provider_event_id",
    "provider_timestamp",
    "tenant_id",
    "request_id",
)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class PoisonMessage(ValueError):
    """The message can never become a row. ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.fields = fields or {}

    def field(self, *path: str) -> str:
        """A string field of the message when it could be parsed (for the DLQ record)."""
        value: Any = self.fields
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str) else ""


class Row(NamedTuple):
    """One encoded row; ``key`` is the event's identity (provider, tenant, id). A named
    tuple: built once per event, and a frozen dataclass costs several times more."""

    key: tuple[str, str, str]
    line: bytes


# Row(...) runs a Python-level __new__; this builds the same tuple 0.3 µs faster per event.
_new_row = tuple.__new__


def convert(raw: bytes, stream_time: Callable[[], int]) -> Row:
    """Build the row for message body ``raw``; ``stream_time()`` (when the message was
    stored in JetStream, in ns) stands in for a missing event time, so redeliveries get the
    same row. Raises ``PoisonMessage`` for a message that can never become a row."""
    return fast_row(raw) or checked_row(raw, stream_time)


_NULL, _ABSENT = msgspec.Raw(b"null"), msgspec.Raw(b"")


class _Data(msgspec.Struct, gc=False):
    """The Tap data object as the fast path reads it (unknown members are skipped). Not
    tracked by the garbage collector: these hold no cycles, and 50,000 a second would
    otherwise trigger collections."""

    provider: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    action: str | None = None
    changes: msgspec.Raw = _NULL
    snapshot: msgspec.Raw = _NULL
    provider_event_id: str | None = None
    provider_timestamp: str | None = None
    tenant_id: str | None = None
    request_id: str | None = None


class _Event(msgspec.Struct, gc=False):
    specversion: str | None = None
    id: str | None = None
    type: str | None = None
    source: str | None = None
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = None
    data: _Data | None = None
    data_base64: msgspec.Raw = _ABSENT  # present at all (even null) means poison
    taprequestid: str | None = None


_EVENT = msgspec.json.Decoder(_Event)
_CHANGES = msgspec.json.Decoder(dict[str, dict[str, msgspec.Raw] | None])
_NO_DATA = _Data()


def fast_row(raw: bytes) -> Row | None:
    """The row of an ordinary message, or None to let ``checked_row`` decide. Never accepts
    what ``checked_row`` would refuse, and builds the same row (runs ~50,000 times/s)."""
    if not raw.isascii():
        try:
            raw.decode()  # msgspec does not check the UTF-8 of members it skips
        except UnicodeDecodeError:
            return None
    try:
        event = _EVENT.decode(raw)
    except msgspec.DecodeError:  # also a member of an unexpected type
        return None
    time_text = event.time
    content_type = event.datacontenttype
    if (
        event.specversion not in _SPEC_VERSIONS
        or event.data_base64 is not _ABSENT
        or not time_text
        or (content_type is not None and content_type != "application/json")
    ):
        return None
    match = _RFC3339.fullmatch(time_text)
    if match is None or _date_verdict(match.group(1)):
        return None
    data = event.data or _NO_DATA
    # Text straight from the raw spans (no bytes copy in between); UTF-8 is checked above.
    snapshot = str(data.snapshot, "utf-8")
    if snapshot[:1] != "{" and snapshot != "null":
        return None
    changes = str(data.changes, "utf-8")
    if changes != "null":
        try:
            _CHANGES.decode(data.changes)
        except msgspec.DecodeError:
            return None
    provider_event_id = data.provider_event_id or ""
    event_id = (event.id or "").strip() or provider_event_id.strip()
    if not event_id:
        return None
    provider, tenant = data.provider or "", data.tenant_id or ""
    line = orjson.dumps(
        [
            event_id,
            event.type or "",
            event.source or "",
            event.subject or "",
            time_text,
            provider,
            data.entity_type or "",
            data.entity_id or "",
            data.action or "",
            changes,
            snapshot,
            provider_event_id,
            tenant or None,
            data.request_id or event.taprequestid or "",
        ]
    )
    return _new_row(Row, ((provider, tenant, event_id), line))


def checked_row(raw: bytes, stream_time: Callable[[], int]) -> Row:
    """``convert`` with every rule spelled out on the parsed message: the reference for the
    fast path, and the path of anything unusual."""
    try:
        # Integers beyond 64 bits become floats here; no column takes a number from this
        # parse, and changes/snapshot are cut from the raw text (_original_text): exact.
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise PoisonMessage("json", "not JSON") from None
    if type(event) is not dict:
        raise PoisonMessage("cloudevent", "not a CloudEvent: the body is not a JSON object")
    get = event.get
    spec_version = get("specversion")
    if type(spec_version) is not str or spec_version not in _SPEC_VERSIONS:
        raise PoisonMessage("cloudevent", "not a CloudEvent: specversion must be 1.0", event)
    ok = _STRING_OR_NONE  # (plain lookups and comparisons: the cheapest check in CPython)
    ce_id, ce_type, source, subject = get("id"), get("type"), get("source"), get("subject")
    if not (
        type(ce_id) in ok and type(ce_type) in ok and type(source) in ok and type(subject) in ok
    ):
        values = [ce_id, ce_type, source, subject]
        raise _not_a_string(
            event,
            values=values,
            names=_ATTRIBUTES,
            message="not a CloudEvent: {} must be a string",
        )
    time_text = _event_time(get("time"), stream_time, event)
    data = _data(event)
    dget = data.get
    strings = [
        dget("provider"),
        dget("entity_type"),
        dget("entity_id"),
        dget("action"),
        dget("provider_event_id"),
        dget("provider_timestamp"),
        dget("tenant_id"),
        dget("request_id"),
    ]
    if not ok.issuperset(map(type, strings)):
        raise _not_a_string(
            event, values=strings, names=_DATA_STRINGS, message="data.{} must be a string"
        )
    provider, entity_type, entity_id, action, provider_event_id, _, tenant, request_id = [
        value or "" for value in strings
    ]
    changes, snapshot = _changes(data, event), dget("snapshot")
    if snapshot is not None and type(snapshot) is not dict:
        raise PoisonMessage("data", "data.snapshot must be an object", event)
    event_id = (
        (ce_id or "").strip()
        or provider_event_id.strip()
        or "evt_" + hashlib.sha256(raw).hexdigest()
    )
    line = orjson.dumps(
        [
            event_id,
            ce_type or "",
            source or "",
            subject or "",
            time_text,
            provider,
            entity_type,
            entity_id,
            action,
            _original_text(raw, "changes", changes),
            _original_text(raw, "snapshot", snapshot),
            provider_event_id,
            tenant or None,
            request_id or _request_id_attribute(event),
        ]
    )
    return Row((provider, tenant, event_id), line)


def _not_a_string(
    event: dict[str, Any], *, values: list[Any], names: tuple[str, ...], message: str
) -> PoisonMessage:
    name = next(n for n, v in zip(names, values, strict=True) if not isinstance(v, str | None))
    reason = "data" if message.startswith("data.") else "cloudevent"
    return PoisonMessage(reason, message.format(name), event)


def _request_id_attribute(event: dict[str, Any]) -> str:
    value = event.get("taprequestid")
    return value if isinstance(value, str) else ""


def _event_time(value: Any, stream_time: Callable[[], int], event: dict[str, Any]) -> str:
    if value is None or value == "":
        return format_time_ns(stream_time())
    match = _RFC3339.fullmatch(value) if type(value) is str else None
    if match is None:
        raise PoisonMessage("cloudevent", "not a CloudEvent: time is not RFC 3339", event)
    verdict = _date_verdict(match.group(1))
    if verdict:
        if verdict == _BAD_DATE:
            raise PoisonMessage("cloudevent", "not a CloudEvent: time is not a valid date", event)
        raise PoisonMessage("time_range", f"time {value} is outside 1901…2298", event)
    return str(value)


@functools.lru_cache(maxsize=4096)
def _date_verdict(text: str) -> int:
    """0 for a valid date in range; events of one day share it, hence the cache."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return _BAD_DATE
    # Offsets can move the instant across a year boundary; stay clear of the range's edges.
    return 0 if MIN_YEAR < day.year < MAX_YEAR else _OUT_OF_RANGE


def _data(event: dict[str, Any]) -> dict[str, Any]:
    content_type = event.get("datacontenttype")
    if content_type not in (None, "application/json") and not _is_json_type(content_type):
        raise PoisonMessage("data", "data is not JSON (datacontenttype)", event)
    if "data_base64" in event:
        raise PoisonMessage("data", "data_base64 is not a Tap data object", event)
    data = event.get("data")
    if data is None:
        return {}
    if type(data) is not dict:
        raise PoisonMessage("data", "data must be a JSON object", event)
    return data


def _is_json_type(content_type: Any) -> bool:
    if not isinstance(content_type, str):
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _changes(data: dict[str, Any], event: dict[str, Any]) -> Any:
    changes = data.get("changes")
    if changes is None:
        return None
    if not isinstance(changes, dict) or not all(
        entry is None or isinstance(entry, dict) for entry in changes.values()
    ):
        raise PoisonMessage("data", "data.changes must map fields to objects", event)
    return changes


def _original_text(raw: bytes, name: str, value: Any) -> str:
    """The original JSON text of ``data.<name>`` in the message ``raw``.

    Fast path: re-encode the parsed value with orjson; when that text occurs in the body it
    *is* the original (bodies published by this service are orjson output). Otherwise (other
    producers, other spacing or escapes, huge integers) the value's span is cut out of the
    body with the standard library's scanner.
    """
    if value is None:
        return "null"
    try:
        candidate = orjson.dumps(value)
    except orjson.JSONEncodeError:
        candidate = b""
    if candidate and candidate in raw:
        return candidate.decode()
    try:
        span = _data_members(raw.decode("utf-8")).get(name, "")
    except (ValueError, IndexError):
        span = ""
    return span or candidate.decode() or json.dumps(value)


def _data_members(text: str) -> dict[str, str]:
    """Raw text of every member of the top-level ``data`` object."""
    top = _members(text, _WHITESPACE.match(text, 0).end())  # type: ignore[union-attr]
    start_end = top.get("data")
    if start_end is None or text[start_end[0]] != "{":
        return {}
    return {key: text[a:b] for key, (a, b) in _members(text, start_end[0]).items()}


def _members(text: str, start: int) -> dict[str, tuple[int, int]]:
    """Spans of the members of the JSON object starting at ``text[start] == '{'``; a repeated
    key keeps its last value, as JSON parsers do."""
    if text[start] != "{":
        raise ValueError("not an object")
    spans: dict[str, tuple[int, int]] = {}
    index = _skip(text, start + 1)
    if text[index] == "}":
        return spans
    while True:
        key, index = _DECODER.raw_decode(text, index)
        index = _skip(text, index)
        if text[index] != ":":
            raise ValueError("expected ':'")
        index = _skip(text, index + 1)
        _, end = _DECODER.raw_decode(text, index)
        spans[str(key)] = (index, end)
        index = _skip(text, end)
        if text[index] == ",":
            index = _skip(text, index + 1)
            continue
        if text[index] != "}":
            raise ValueError("expected '}'")
        return spans


def _skip(text: str, index: int) -> int:
    return _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
