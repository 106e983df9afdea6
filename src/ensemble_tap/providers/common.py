"""Helpers shared by provider modules (webhooks and, later, pollers)."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any

import orjson

from ensemble_tap.events import MAX_JSON_DEPTH, parse_rfc3339_ns
from ensemble_tap.providers.base import BadPayload, SecretNotConfigured

# Every digit becomes "0": a run of 19 zeros then marks an integer orjson may not keep exact.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]")  # mypyc: no surrogate literals
_ENTITY_ID_KEYS = ("id", "uuid", "event_id", "object_id", "resource_id")
_TIMESTAMP_KEYS = ("created", "created_at", "updated_at", "timestamp", "occurred_at", "time")
_TYPE_SEPARATORS = re.compile(r"[./:]")
MAX_EPOCH_DIGITS = 19
_TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
# Nesting deeper than MAX_JSON_DEPTH takes at least this many bytes: shorter bodies skip the check.
_DEEP_ENOUGH = 2 * (MAX_JSON_DEPTH + 1)


def parse_json(body: bytes) -> Any:
    """Parse a JSON body exactly: integers keep every digit, invalid UTF-8 becomes U+FFFD.

    orjson is the fast path; it turns integers beyond 64 bits into floats, so bodies with such
    long digit runs go through the standard library, which keeps them exact. As in Go, an
    unpaired surrogate escape (``\\ud800``) becomes U+FFFD, and NaN, Infinity and numbers too
    large for a float are rejected. So is nesting deeper than MAX_JSON_DEPTH levels, which the
    event could not be written with.
    """
    try:
        if _LONG_RUN not in body.translate(_DIGITS_TO_ZERO):
            value = orjson.loads(body)
            if len(body) >= _DEEP_ENOUGH and _too_deep(value):
                raise BadPayload(_TOO_DEEP)
            return value
    except orjson.JSONDecodeError:
        pass  # also nesting past orjson's 1,024 levels: the standard library says which
    try:
        value = json.loads(
            body.decode("utf-8", errors="replace"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise BadPayload(_TOO_DEEP) from None
    except ValueError:
        raise BadPayload("body is not valid JSON") from None
    if len(body) >= _DEEP_ENOUGH and _too_deep(value):
        raise BadPayload(_TOO_DEEP)
    if _SURROGATE_ESCAPE.search(body) is not None:
        value = _replace_lone_surrogates(value)
    return value


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests deeper than MAX_JSON_DEPTH. orjson writes at most
    ORJSON_MAX_DEPTH levels, so it writes ``value`` inside CLOUDEVENT_LEVELS lists exactly when
    ``value`` is shallow enough (about 0.35 µs per KB); only when it fails (too deep, or an
    integer beyond 64 bits) do the levels get counted in Python."""
    try:
        orjson.dumps([[value]])
    except TypeError:
        return _nested_deeper_than(value, MAX_JSON_DEPTH)
    return False


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Levels counted without recursion (a parsed value may nest up to 1,024 of them)."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _replace_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {
            _replace_lone_surrogates(key): _replace_lone_surrogates(item)
            for key, item in value.items()
        }
    return value


def parse_json_object(body: bytes) -> dict[str, Any]:
    value = parse_json(body)
    if not isinstance(value, dict):
        raise BadPayload("body must be a JSON object")
    return value


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_string(value: Any) -> str:
    """A scalar as text: strings trimmed, integers exact, floats without a trailing ``.0``."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return ""


def extract_entity_id(obj: Any) -> str:
    """First non-empty of id, uuid, event_id, object_id, resource_id; then data.id/object_id."""
    if not isinstance(obj, dict):
        return "unknown"
    for key in _ENTITY_ID_KEYS:
        text = to_string(obj.get(key))
        if text:
            return text
    data = obj.get("data")
    if isinstance(data, dict):
        for key in ("id", "object_id"):
            text = to_string(data.get(key))
            if text:
                return text
    return "unknown"


def extract_timestamp_ns(obj: Any) -> int | None:
    """First RFC3339 value among created, created_at, updated_at, timestamp, occurred_at, time."""
    if not isinstance(obj, dict):
        return None
    for key in _TIMESTAMP_KEYS:
        text = to_string(obj.get(key))
        if text:
            parsed = parse_rfc3339_ns(text)
            if parsed is not None:
                return parsed
    return None


@functools.lru_cache(maxsize=4096)
def derive_entity_action(event_type: str, action_hint: str = "") -> tuple[str, str]:
    """``invoice.paid`` → (invoice, paid); the entity keeps every segment but the last.

    Unlike the reference, ``_`` is not a separator (``invoice_item.created`` keeps its
    entity) and multi-segment names keep their middle (``customer.subscription.updated``).
    """
    tokens = [
        token.strip() for token in _TYPE_SEPARATORS.split(event_type.lower()) if token.strip()
    ]
    action = action_hint.strip().lower() or (tokens[-1] if tokens else "updated")
    if len(tokens) >= 2:
        entity = ".".join(tokens[:-1])
    elif tokens:
        entity = tokens[0]
    else:
        entity = "event"
    return entity, action


def parse_epoch_or_rfc3339_ns(value: str) -> int | None:
    """RFC3339, or all-digit epoch: 13+ digits are milliseconds, fewer are seconds."""
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        if len(text) > MAX_EPOCH_DIGITS:
            return None
        number = int(text)
        return number * 1_000_000 if len(text) >= 13 else number * 1_000_000_000
    return parse_rfc3339_ns(text)


def epoch_number_ns(value: Any) -> int | None:
    """A JSON number of epoch time: above 1e12 it is milliseconds, else seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and not 0 <= value <= 10**17:  # a huge int overflows a float
        return None
    if not math.isfinite(value) or value < 0 or value > 1e17:
        return None
    if value >= 1e12:
        return int(value * 1_000_000)
    return int(value * 1_000_000_000)


def require_secrets(secrets: Sequence[str], provider: str) -> Sequence[str]:
    """The configured signing secrets; none at all is a configuration error, not a 401."""
    if not secrets:
        raise SecretNotConfigured(f"provider {provider} secret is empty")
    return secrets


def time_value_ns(value: Any) -> int | None:
    """A JSON time value: RFC3339 or all-digit string, or an epoch number (ms above 1e12)."""
    if isinstance(value, str):
        return parse_epoch_or_rfc3339_ns(value)
    return epoch_number_ns(value)


def provider_time_ns(value: Any) -> int | None:
    """A poll API's time value: RFC3339 (also Salesforce's ``+0000`` offsets), epoch digits
    (13+ digits are milliseconds) or an epoch number."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit() and text[-3] != ":":
            text = f"{text[:-2]}:{text[-2:]}"
        return parse_epoch_or_rfc3339_ns(text)
    return epoch_number_ns(value)
