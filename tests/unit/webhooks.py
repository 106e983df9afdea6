"""Builders shared by the provider unit tests: requests, settings and signatures.

Times are frozen: every request carries an explicit ``received_ns`` ("now" for timestamp
windows), so no test depends on the wall clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.providers.base import WebhookRequest

NS = 1_000_000_000
# 2024-03-04T14:22:00Z: when the reference's Stripe, HubSpot and Linear vectors were signed.
VECTOR_TIME = 1_709_562_120
VECTOR_NS = VECTOR_TIME * NS


def make_request(
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "POST",
    scheme: str = "http",
    host: str = "tap.example.com",
    raw_path: str = "/webhooks/acme",
    query_string: str = "",
    received_ns: int = VECTOR_NS,
) -> WebhookRequest:
    """A delivery as the ingress hands it to a provider (header names lower-cased)."""
    return WebhookRequest(
        method=method,
        scheme=scheme,
        host=host,
        raw_path=raw_path,
        query_string=query_string,
        headers={name.lower(): value for name, value in (headers or {}).items()},
        body=body,
        received_ns=received_ns,
    )


def settings(**values: Any) -> ProviderConfig:
    """Provider settings exactly as the YAML loader would validate them."""
    return ProviderConfig.model_validate(values)


def hmac_hex(secret: str, data: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(secret.encode(), data, getattr(hashlib, algorithm)).hexdigest()


def hmac_b64(secret: str, data: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), data, hashlib.sha256).digest()).decode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
