"""Sign deliveries the way each provider does."""

from __future__ import annotations

import base64
import hashlib
import hmac


def hex_hmac(secret: str, body: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()


def b64_hmac(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def generic_headers(
    secret: str, body: bytes, event_type: str, event_id: str = ""
) -> dict[str, str]:
    headers = {"X-Signature": "sha256=" + hex_hmac(secret, body), "X-Event-Type": event_type}
    if event_id:
        headers["X-Event-Id"] = event_id
    return headers


def stripe_header(secret: str, body: bytes, timestamp: int) -> str:
    return f"t={timestamp},v1={hex_hmac(secret, str(timestamp).encode() + b'.' + body)}"


def hubspot_v3(secret: str, method: str, url: str, body: bytes, timestamp_ms: int) -> str:
    signed = method.encode() + url.encode() + body + str(timestamp_ms).encode()
    return b64_hmac(secret, signed)
