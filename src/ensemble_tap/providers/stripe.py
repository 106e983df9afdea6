"""Stripe webhooks, verified as Stripe's own libraries do (``Stripe-Signature: t=…,v1=…``).

Differences from the reference: no API-version pin (a valid signature is enough), timestamps
more than the tolerance in the future are rejected too, and the entity keeps every segment but
the last (``customer.subscription.updated`` → ``customer.subscription``).

Two payloads arrive with the same signature scheme: snapshot events (``"object": "event"``, the
object in ``data.object``, ``created`` in Unix seconds) and thin events from event destinations
(``"object": "v2.core.event"``: only a reference in ``related_object``, ``created`` in RFC 3339).
"""

from __future__ import annotations

import re
from typing import Any

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import parse_rfc3339_ns
from ensemble_tap.providers.base import BadPayload, Extraction, VerificationFailed, WebhookRequest
from ensemble_tap.providers.common import (
    digest,
    extract_entity_id,
    parse_json_object,
    require_secrets,
    to_string,
)
from ensemble_tap.providers.contract import Provider
from ensemble_tap.providers.hmac_verifier import matches

TOLERANCE_SECONDS = 300
_SIGNED_INT = re.compile(r"[+-]?\d{1,18}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
THIN_EVENT_OBJECT = "v2.core.event"
# ``v2.core.account[requirements].updated``: the bracket names a part of the object, not a segment.
_TYPE_QUALIFIER = re.compile(r"\[[^\]]*\]")


class StripeProvider:
    secret_keys = ("secret",)
    signature_versions = None

    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        secrets = require_secrets(settings.secret, provider)
        timestamp, signatures = parse_signature_header(request.header("stripe-signature"))
        now = request.received_ns // 1_000_000_000
        if now - timestamp > TOLERANCE_SECONDS or timestamp - now > TOLERANCE_SECONDS:
            raise VerificationFailed("timestamp wasn't within tolerance")
        signed = f"{timestamp}.".encode() + request.body
        if not any(matches(secrets, signed, signature=signature) for signature in signatures):
            raise VerificationFailed("webhook had no valid signature")

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        event = parse_json_object(request.body)
        if event.get("object") == THIN_EVENT_OBJECT:
            return [thin_extraction(event, request.body)]
        data = event.get("data")
        if data is not None and not isinstance(data, dict):
            raise BadPayload("stripe event data must be an object")
        obj = data.get("object") if isinstance(data, dict) else None
        if obj is not None and not isinstance(obj, dict):
            raise BadPayload("stripe event data.object must be an object")
        entity, action = split_type(event.get("type"))
        created = event.get("created")
        event_id = to_string(event.get("id"))
        return [
            Extraction(
                entity_type=entity,
                entity_id=extract_entity_id(obj),
                action=action,
                provider_event_id=event_id,
                dedup_key=event_id,
                payload_digest=digest(request.body),
                provider_time_ns=created * 1_000_000_000
                if isinstance(created, int) and not isinstance(created, bool) and created > 0
                else None,
                snapshot=obj or None,
            )
        ]


def thin_extraction(event: dict[str, Any], body: bytes) -> Extraction:
    """A thin event: the entity is named as the snapshot events name it, from ``type`` (which
    is the related object's tag behind an API-version prefix), its id is ``related_object.id``,
    and the whole event is the snapshot (it holds what a consumer needs to fetch the object)."""
    related = event.get("related_object")
    if related is None:
        related = {}  # nullable: e.g. no meter for ``v1.billing.meter.no_meter_found``
    if not isinstance(related, dict):
        raise BadPayload("stripe thin event related_object must be an object")
    entity, action = split_type(thin_type(event.get("type")))
    created = event.get("created")
    event_id = to_string(event.get("id"))
    return Extraction(
        entity_type=entity,
        entity_id=to_string(related.get("id")) or "unknown",
        action=action,
        provider_event_id=event_id,
        dedup_key=event_id,
        payload_digest=digest(body),
        provider_time_ns=parse_rfc3339_ns(created.strip()) if isinstance(created, str) else None,
        snapshot=event,
    )


def thin_type(value: object) -> object:
    """``v1.billing.meter.error_report_triggered`` → ``billing.meter.error_report_triggered``
    (the v1 object's snapshot name); ``v2.…`` types keep their prefix, which is part of the
    v2 object's tag (``v2.billing.metered_item``); bracketed qualifiers are dropped."""
    if not isinstance(value, str):
        return value
    text = _TYPE_QUALIFIER.sub("", value.strip().lower())
    return text.removeprefix("v1.")


def parse_signature_header(header: str) -> tuple[int, list[bytes]]:
    """``t=<unix>,v1=<hex>[,v1=<hex>…]`` → (t, signatures); other schemes are ignored."""
    if not header:
        raise VerificationFailed("webhook has no Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[bytes] = []
    for piece in header.split(","):
        parts = piece.split("=")
        if len(parts) != 2:
            raise VerificationFailed("webhook has invalid Stripe-Signature header")
        key, value = parts
        if key == "t":
            if not _SIGNED_INT.fullmatch(value):
                raise VerificationFailed("webhook has invalid Stripe-Signature header")
            timestamp = int(value)
        elif key == "v1" and _HEX.fullmatch(value):
            signatures.append(bytes.fromhex(value))
    if not signatures:
        raise VerificationFailed("webhook had no valid signature")
    if timestamp is None:
        raise VerificationFailed("timestamp wasn't within tolerance")
    return timestamp, signatures


def split_type(value: object) -> tuple[str, str]:
    text = value.strip().lower() if isinstance(value, str) else ""
    parts = [part.strip() for part in text.split(".") if part.strip()]
    if len(parts) >= 2:
        return ".".join(parts[:-1]), parts[-1]
    return (parts[0] if parts else "event"), "updated"


PROVIDER = Provider("stripe", webhook=StripeProvider())
