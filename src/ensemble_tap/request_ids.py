"""Request ids: the caller's ``X-Request-ID`` (or ``X-Correlation-ID``) when short and safe,
else a new time-ordered one. Shared by the webhook route and the admin API."""

from __future__ import annotations

import os
import re
import time

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def new_request_id(prefix: str = "ing") -> str:
    """``<prefix>-<32 hex>``: 48 bits of milliseconds then 80 random bits, so ids sort by
    time (like a ULID) and are unique across replicas."""
    return f"{prefix}-{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def resolve_request_id(headers: dict[str, str], prefix: str = "ing") -> str:
    """The caller's X-Request-ID (or X-Correlation-ID) when short and safe, else a new one."""
    for name in ("x-request-id", "x-correlation-id"):
        value = headers.get(name, "").strip()
        if value:
            return value if REQUEST_ID_RE.match(value) else new_request_id(prefix)
    return new_request_id(prefix)
