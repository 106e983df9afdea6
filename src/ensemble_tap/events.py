"""The normalized event and its CloudEvent envelope: NATS subject and type naming, dedup ids
(webhook and poll), the bounds on sender-controlled values, RFC 3339 times (formatted and
parsed as Go does) and the JSON encoding every event body goes through.

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
# Bounds on sender-controlled values that reach a NATS header, subject or id
# (docs/configuration.md, "Limits on what senders send"). Tenant keys
# (config.models.TENANT_KEY_RE) and request ids (request_ids.REQUEST_ID_RE) are bounded at 128
# characters where they are read.
# Delivery and event ids beyond this become ``sha256:<hex of the id>``: still unique and the
# same on every redelivery, so deduplication holds and the sender is not refused. (nats-server
# refuses a JetStream message whose headers exceed 64 KiB.)
MAX_ID_LENGTH = 256
# Entity type and action, each one NATS subject token and part of the CloudEvent type; and the
# sender's event type they come from. Beyond: 400. (A PUB line past 4 KiB closes the connection.)
MAX_NAME_LENGTH = 128
MAX_EVENT_TYPE_LENGTH = 2 * MAX_NAME_LENGTH
# The entity id: consumers look entities up by it, so it is refused (400), not digested.
MAX_ENTITY_ID_LENGTH = 256
# orjson writes at most 254 nested levels (``orjson.dumps`` raises at 255; loads takes 1,024),
# and a body sits two levels down in its CloudEvent (attributes → data → snapshot). Deeper
# bodies are refused when parsed (400), so every accepted one can be written with orjson.
ORJSON_MAX_DEPTH = 254
CLOUDEVENT_LEVELS = 2
MAX_JSON_DEPTH = ORJSON_MAX_DEPTH - CLOUDEVENT_LEVELS
ID_DIGEST_PREFIX = "sha256:"
_NON_TOKEN = re.compile(r"[^a-z0-9_]")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)


class NormalizeError(ValueError):
    """The event cannot become a valid CloudEvent."""


@dataclass(init=False)
class NormalizedEvent:
    provider: str
    entity_type: str
    entity_id: str
    action: str
    provider_time_ns: int
    provider_event_id: str
    tenant_id: str
    request_id: str
    changes: dict[str, Any] | None
    snapshot: dict[str, Any] | None
    source: str  # ``data.source``: "poll" for the poller's events, left out for webhooks

    # Written out (init=False): mypyc compiles this one, not dataclass's generated __init__.
    def __init__(
        self,
        provider: str,
        entity_type: str,
        entity_id: str,
        action: str,
        provider_time_ns: int,
        provider_event_id: str = "",
        tenant_id: str = "",
        request_id: str = "",
        changes: dict[str, Any] | None = None,
        snapshot: dict[str, Any] | None = None,
        source: str = "",
    ) -> None:
        self.provider = provider
        self.entity_type = entity_type
        self.entity_id = entity_id
        self.action = action
        self.provider_time_ns = provider_time_ns
        self.provider_event_id = provider_event_id
        self.tenant_id = tenant_id
        self.request_id = request_id
        self.changes = changes
        self.snapshot = snapshot
        self.source = source


@dataclass(init=False)
class Envelope:
    """A CloudEvent ready to publish: its serialized body, subject and the attributes that
    routing, metrics and dead letters read."""

    event_id: str
    type: str
    subject: str
    body: bytes
    provider: str
    entity_type: str
    action: str
    request_id: str

    # Written out (init=False): mypyc compiles this one, not dataclass's generated __init__.
    def __init__(
        self,
        event_id: str,
        type: str,
        subject: str,
        body: bytes,
        provider: str,
        entity_type: str,
        action: str,
        request_id: str,
    ) -> None:
        self.event_id = event_id
        self.type = type
        self.subject = subject
        self.body = body
        self.provider = provider
        self.entity_type = entity_type
        self.action = action
        self.request_id = request_id


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
    if frac:  # zero-padded to 9 digits without a format spec (parsed on every call)
        text += "." + str(frac + 1_000_000_000)[1:].rstrip("0")
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
    ``parse_json``) make it fail, so those values go through the standard library instead.

    Raises TypeError or ValueError, never RecursionError: a value nested deeper than the
    standard library can write (which only a poll API's data can be: webhook bodies are
    bounded by MAX_JSON_DEPTH) is a ValueError.
    """
    sort = orjson.OPT_SORT_KEYS if sort_keys else 0
    try:
        return orjson.dumps(value, option=sort)
    except TypeError:
        pass
    try:  # non-string keys: an option that halves orjson's speed, so only when needed
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | sort)
    except TypeError:
        try:
            text = json.dumps(
                value,
                ensure_ascii=False,
                separators=(",", ":"),
                allow_nan=False,
                sort_keys=sort_keys,
            )
        except RecursionError:
            raise ValueError("JSON value nested too deeply to be written") from None
        return text.encode()


def now_ns() -> int:
    return time.time_ns()


def new_event_id() -> str:
    return "evt_" + os.urandom(8).hex()


def bounded_id(value: str) -> str:
    """A sender's delivery or event id as it goes into ``Nats-Msg-Id`` and the CloudEvent
    id: itself, or beyond MAX_ID_LENGTH characters ``sha256:<hex>`` of it, which stays
    unique and is the same for every redelivery."""
    if len(value) <= MAX_ID_LENGTH:
        return value
    return ID_DIGEST_PREFIX + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def dedup_id(provider: str, tenant_id: str, key: str) -> str:
    """JetStream ``Nats-Msg-Id``: provider and tenant are part of it, so equal ids from two
    providers or tenants are two events, while a redelivery of one delivery is one."""
    if len(key) > MAX_ID_LENGTH:
        key = bounded_id(key)
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
    provider: str,
    tenant_id: str,
    entity_type: str,
    entity_id: str,
    action: str,
    version: str,
    content_digest: str,
) -> str:
    """The ``Nats-Msg-Id`` (and CloudEvent id) of a poll event: one record content at one
    version is one event, however often it is read or published.

    ``version`` is the provider's modification time in RFC3339Nano ("" when the record has
    none); ``content_digest`` the hex SHA-256 of the record's canonical snapshot. The time
    alone (the reference's id, which an empty digest still gives) is too coarse: two edits
    within one QuickBooks/Salesforce second or one Notion minute would share an id, and
    JetStream would drop the second.
    """
    text = "|".join((provider, tenant_id, entity_type, entity_id, action, version))
    if content_digest:
        text += "|sha256:" + content_digest
    return "poll_" + hashlib.sha256(text.encode()).hexdigest()


def _too_long(event: NormalizedEvent) -> str:
    for name, limit in (
        ("entity_type", MAX_NAME_LENGTH),
        ("action", MAX_NAME_LENGTH),
        ("entity_id", MAX_ENTITY_ID_LENGTH),
    ):
        if len(getattr(event, name)) > limit:
            return f"{name} is longer than {limit} characters"
    return "a value is too long"


def build_envelope(
    event: NormalizedEvent, subject_prefix: str, tenant_scoped: bool, event_id: str = ""
) -> Envelope:
    """Validate ``event`` and wrap it in a CloudEvent; raise NormalizeError when invalid
    (a required value blank, entity type, action or entity id over its bound, a time RFC3339
    cannot express).

    ``event_id`` sets a deterministic CloudEvent id (poll events); by default it is the
    provider's event id (``bounded_id``), else a random one.
    """
    for name in ("provider", "entity_type", "entity_id", "action"):
        if not getattr(event, name).strip():
            raise NormalizeError(f"{name} is required")
    if (
        len(event.entity_type) > MAX_NAME_LENGTH
        or len(event.action) > MAX_NAME_LENGTH
        or len(event.entity_id) > MAX_ENTITY_ID_LENGTH
    ):
        raise NormalizeError(_too_long(event))
    event_id = event_id or event.provider_event_id.strip() or new_event_id()
    if len(event_id) > MAX_ID_LENGTH:
        event_id = bounded_id(event_id)
    tenant = event.tenant_id.strip()
    type_ = event_type(event.provider, event.entity_type, event.action)
    try:
        time_text = format_time_ns(event.provider_time_ns)
    except ValueError as unexpressible:  # one name per clause: mypyc types it once
        raise NormalizeError(
            f"provider time cannot be expressed in RFC3339: {unexpressible}"
        ) from None
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
    if event.source:
        data["source"] = event.source
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
