"""The normalized event, its CloudEvent envelope, NATS subject and type naming, dedup ids.

The hot path builds the CloudEvent as a plain dict (attribute order as the Go SDK writes it)
and serializes it with orjson; the ``cloudevents`` SDK is used as an oracle in the tests.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson

SPEC_VERSION = "1.0"
TYPE_PREFIX = "ensemble.tap"
TAP_VERSION = "v1"
_NON_TOKEN = re.compile(r"[^a-z0-9_]")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)


class NormalizeError(ValueError):
    """The event cannot become a valid CloudEvent."""


@dataclass(slots=True)
class NormalizedEvent:
    provider: str
    entity_type: str
    entity_id: str
    action: str
    provider_time_ns: int
    provider_event_id: str = ""
    tenant_id: str = ""
    request_id: str = ""
    changes: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None


@dataclass(slots=True)
class Envelope:
    """A CloudEvent ready to publish: its attributes dict, serialized body and routing."""

    event_id: str
    type: str
    subject: str
    body: bytes
    provider: str
    entity_type: str
    action: str
    request_id: str


@functools.lru_cache(maxsize=4096)
def subject_token(value: str) -> str:
    """One NATS subject token: only ``[a-z0-9_]``, so input can add no tokens or wildcards."""
    token = _NON_TOKEN.sub("_", value.strip().lower())
    return token or "unknown"


@functools.lru_cache(maxsize=4096)
def event_type(provider: str, entity_type: str, action: str) -> str:
    return (
        f"{TYPE_PREFIX}.{subject_token(provider)}.{subject_token(entity_type)}"
        f".{subject_token(action)}"
    )


@functools.lru_cache(maxsize=4096)
def nats_subject(
    prefix: str, provider: str, entity_type: str, action: str, tenant_id: str = ""
) -> str:
    tokens = [prefix]
    if tenant_id.strip():
        tokens.append(subject_token(tenant_id))
    tokens += [subject_token(provider), subject_token(entity_type), subject_token(action)]
    return ".".join(tokens)


def format_time_ns(ns: int) -> str:
    """RFC3339Nano in UTC: fraction without trailing zeros, left out when zero.

    Raises ValueError for instants outside the years 0001-9999, which RFC3339 cannot express.
    """
    seconds, frac = divmod(ns, 1_000_000_000)
    text = _second_text(seconds)
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


@functools.lru_cache(maxsize=256)
def _second_text(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a Unix second; cached, as events cluster in time."""
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"time {seconds} s is out of range") from None
    # strftime("%Y") does not zero-pad years below 1000 on every platform.
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"


def parse_rfc3339_ns(value: str) -> int | None:
    """Go's RFC3339 parse (upper-case T/Z, offset required) to epoch nanoseconds, else None."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    stamp = _epoch_second(value[:19])  # the pattern fixes the shape of the first 19 characters
    if stamp is None:
        return None
    frac, zone = match.group(7, 8)
    offset = 0
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    nanos = int(frac[:9].ljust(9, "0")) if frac else 0
    return (stamp - offset) * 1_000_000_000 + nanos


@functools.lru_cache(maxsize=1024)
def _epoch_second(text: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS`` as Unix seconds, None when not a real date and time; cached,
    as events cluster in time."""
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    try:
        date(year, month, day)  # validates the calendar date; timegm does not
    except ValueError:
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def json_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON. orjson is the fast path; integers beyond 64 bits (kept exact by
    ``parse_json``) make it fail, so those values go through the standard library instead."""
    try:
        option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_SORT_KEYS if sort_keys else 0)
        return orjson.dumps(value, option=option)
    except TypeError:
        text = json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=sort_keys
        )
        return text.encode()


def now_ns() -> int:
    return time.time_ns()


def new_event_id() -> str:
    return "evt_" + os.urandom(8).hex()


def dedup_id(provider: str, tenant_id: str, key: str) -> str:
    """JetStream ``Nats-Msg-Id``: provider and tenant are part of it, so equal ids from two
    providers or tenants are two events, while a redelivery of one delivery is one."""
    return f"{provider}:{tenant_id.strip()}:{key}"


def fallback_dedup_key(event: NormalizedEvent, payload_digest: str) -> str:
    """A stable key for deliveries without an id: the same content always hashes the same."""
    text = "|".join(
        (
            event.provider,
            event.tenant_id,
            event.entity_type,
            event.entity_id,
            event.action,
            payload_digest,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def poll_dedup_id(
    provider: str, tenant_id: str, entity_type: str, entity_id: str, action: str, version: str
) -> str:
    """The ``Nats-Msg-Id`` (and CloudEvent id) of a poll event: one record version is one
    event, however often it is read or published. ``version`` is the provider's modification
    time in RFC3339Nano (or a content hash when the record has none)."""
    text = "|".join((provider, tenant_id, entity_type, entity_id, action, version))
    return "poll_" + hashlib.sha256(text.encode()).hexdigest()


def build_envelope(
    event: NormalizedEvent, subject_prefix: str, tenant_scoped: bool, event_id: str = ""
) -> Envelope:
    """Validate ``event`` and wrap it in a CloudEvent; raise NormalizeError when invalid.

    ``event_id`` sets a deterministic CloudEvent id (poll events); by default it is the
    provider's event id, else a random one.
    """
    for name in ("provider", "entity_type", "entity_id", "action"):
        if not getattr(event, name).strip():
            raise NormalizeError(f"{name} is required")
    event_id = event_id or event.provider_event_id.strip() or new_event_id()
    tenant = event.tenant_id.strip()
    type_ = event_type(event.provider, event.entity_type, event.action)
    try:
        time_text = format_time_ns(event.provider_time_ns)
    except ValueError as exc:
        raise NormalizeError(f"provider time cannot be expressed in RFC3339: {exc}") from None
    data: dict[str, Any] = {
        "provider": event.provider,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "action": event.action,
    }
    if event.changes:
        data["changes"] = event.changes
    if event.snapshot:
        data["snapshot"] = event.snapshot
    if event.provider_event_id:
        data["provider_event_id"] = event.provider_event_id
    data["provider_timestamp"] = time_text
    if tenant:
        data["tenant_id"] = event.tenant_id
    request_id = event.request_id.strip()
    if request_id:
        data["request_id"] = request_id
    attributes: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": f"tap/{event.provider}/{tenant or 'default'}",
        "type": type_,
        "subject": f"{event.entity_type}/{event.entity_id}".strip(),
        "datacontenttype": "application/json",
        "time": time_text,
        "data": data,
    }
    if request_id:
        attributes["taprequestid"] = request_id
    attributes["tapversion"] = TAP_VERSION
    try:
        body = json_bytes(attributes)
    except (TypeError, ValueError) as exc:
        raise NormalizeError(f"encode cloudevent: {exc}") from None
    subject = nats_subject(
        subject_prefix,
        event.provider,
        event.entity_type,
        event.action,
        tenant if tenant_scoped else "",
    )
    return Envelope(
        event_id=event_id,
        type=type_,
        subject=subject,
        body=body,
        provider=event.provider,
        entity_type=event.entity_type,
        action=event.action,
        request_id=request_id,
    )
