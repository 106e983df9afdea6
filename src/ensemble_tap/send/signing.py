"""The headers each provider sends with a delivery, signature included, exactly as it signs.

- Stripe: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``.
- GitHub: ``X-Hub-Signature-256: sha256=<hex>`` (and the SHA-1 ``X-Hub-Signature`` GitHub
  still sends), ``X-GitHub-Event``, ``X-GitHub-Delivery`` (a new GUID),
  ``X-GitHub-Hook-ID`` and the hook's installation target.
- HubSpot: ``X-HubSpot-Signature-v3``, the base64 HMAC-SHA256 of method + URI + body +
  ``X-HubSpot-Request-Timestamp`` (ms), where the URI is the URL called with the escapes
  HubSpot decodes decoded; and the v1 ``X-HubSpot-Signature`` (hex SHA-256 of secret + body)
  HubSpot sends beside it.
- Linear: ``Linear-Signature`` (hex HMAC-SHA256 of the body, which holds
  ``webhookTimestamp``), ``Linear-Delivery`` (a new UUID), ``Linear-Event`` (the type).
- Shopify: ``X-Shopify-Hmac-Sha256`` (base64), ``X-Shopify-Topic``, ``X-Shopify-Webhook-Id``
  and ``X-Shopify-Event-Id`` (new UUIDs), ``X-Shopify-Triggered-At``.
- Any other provider, generic HMAC: ``X-Signature: sha256=<hex>``, ``X-Event-Type``,
  ``X-Event-Id`` (a new id). The header and prefix are fixed in the service, not
  configurable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from typing import Any

from ensemble_tap.providers.hubspot import v3_signed_uri
from ensemble_tap.send.bodies import Kind, rfc3339

JSON = "application/json"
# The Shopify shop and Admin API version of Shopify's documented header example.
SHOPIFY_SHOP = "example.myshopify.com"
SHOPIFY_API_VERSION = "2025-07"


def provider_headers(
    kind: Kind, secret: str, body: bytes, event_type: str, url: str, now_ns: int
) -> dict[str, str]:
    """The provider's headers for ``body`` POSTed to ``url`` (the URL the service sees)."""
    if kind == "stripe":
        return stripe_headers(secret, body, now_ns // 1_000_000_000)
    if kind == "github":
        return github_headers(secret, body, event_type)
    if kind == "hubspot":
        return hubspot_headers(secret, "POST", url, body, now_ns // 1_000_000)
    if kind == "linear":
        return linear_headers(secret, body, event_type)
    if kind == "shopify":
        return shopify_headers(secret, body, event_type, now_ns)
    return generic_headers(secret, body, event_type)


def stripe_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    signature = _hmac_hex(secret, str(timestamp).encode() + b"." + body)
    return {
        "Content-Type": f"{JSON}; charset=utf-8",
        "Stripe-Signature": f"t={timestamp},v1={signature}",
    }


def github_headers(secret: str, body: bytes, event: str) -> dict[str, str]:
    headers = {
        "Content-Type": JSON,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": _github_hook_id(body),
        "X-Hub-Signature": "sha1=" + _hmac_hex(secret, body, "sha1"),
        "X-Hub-Signature-256": "sha256=" + _hmac_hex(secret, body),
    }
    target = _github_target(body)
    if target is not None:
        headers["X-GitHub-Hook-Installation-Target-Type"] = target[0]
        headers["X-GitHub-Hook-Installation-Target-ID"] = target[1]
    return headers


def hubspot_headers(
    secret: str, method: str, url: str, body: bytes, timestamp_ms: int
) -> dict[str, str]:
    signed = (method + v3_signed_uri(url)).encode() + body + str(timestamp_ms).encode()
    return {
        "Content-Type": JSON,
        "X-HubSpot-Request-Timestamp": str(timestamp_ms),
        "X-HubSpot-Signature-v3": _hmac_base64(secret, signed),
        "X-HubSpot-Signature": hashlib.sha256(secret.encode() + body).hexdigest(),
        "X-HubSpot-Signature-Version": "v1",
    }


def linear_headers(secret: str, body: bytes, event_type: str) -> dict[str, str]:
    return {
        "Content-Type": f"{JSON}; charset=utf-8",
        "Linear-Delivery": str(uuid.uuid4()),
        "Linear-Event": event_type.partition(".")[0],
        "Linear-Signature": _hmac_hex(secret, body),
    }


def shopify_headers(secret: str, body: bytes, topic: str, now_ns: int) -> dict[str, str]:
    return {
        "Content-Type": JSON,
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": _hmac_base64(secret, body),
        "X-Shopify-Shop-Domain": SHOPIFY_SHOP,
        "X-Shopify-API-Version": SHOPIFY_API_VERSION,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": rfc3339(now_ns, "microseconds"),
    }


def generic_headers(secret: str, body: bytes, event_type: str) -> dict[str, str]:
    return {
        "Content-Type": JSON,
        "X-Signature": "sha256=" + _hmac_hex(secret, body),
        "X-Event-Type": event_type,
        "X-Event-Id": f"evt_{uuid.uuid4().hex}",
    }


def _hmac_hex(secret: str, data: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(secret.encode(), data, algorithm).hexdigest()


def _hmac_base64(secret: str, data: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), data, "sha256").digest()).decode()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _github_hook_id(body: bytes) -> str:
    """The hook the payload names (a ``ping`` carries ``hook_id``), else a made-up one: GitHub
    sends the id of the hook that delivered it with every delivery."""
    hook_id = _json_object(body).get("hook_id")
    if isinstance(hook_id, int) and not isinstance(hook_id, bool):
        return str(hook_id)
    return str(100_000_000 + secrets.randbelow(900_000_000))


def _github_target(body: bytes) -> tuple[str, str] | None:
    """The hook's owner as GitHub names it: the repository, else the organization."""
    payload = _json_object(body)
    for key in ("repository", "organization"):
        owner = payload.get(key)
        if isinstance(owner, dict) and isinstance(owner.get("id"), int):
            return key, str(owner["id"])
    return None
