"""HubSpot webhooks: signature v3 (HMAC-SHA256, base64) over method + URL + body + timestamp.

A delivery is a JSON array of up to 100 events; each becomes its own CloudEvent. Signature
v1 and v2 (plain SHA-256 with the client secret) are accepted only when listed in
``signature_versions``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import json_bytes
from ensemble_tap.providers.base import BadPayload, Extraction, VerificationFailed, WebhookRequest
from ensemble_tap.providers.common import (
    digest,
    parse_json,
    require_secrets,
    time_value_ns,
    to_string,
)
from ensemble_tap.providers.hmac_verifier import check_timestamp, decode_signature, matches

MAX_AGE_SECONDS = 300
MAX_BATCH = 100
DEFAULT_VERSIONS = ("v3",)
# HubSpot signs the URI with these escapes decoded (its v3 validation guide).
_DECODED_ESCAPES = {
    "3a": ":", "2f": "/", "3f": "?", "40": "@", "21": "!", "24": "$",
    "27": "'", "28": "(", "29": ")", "2a": "*", "2c": ",", "3b": ";",
}  # fmt: skip
_ESCAPE = re.compile(r"%(3[aAfFbB]|2[fFaAcC1478]|40|29)")
_ACTIONS = {"creation": "created", "deletion": "deleted"}


class HubSpotProvider:
    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        secrets = (
            [settings.client_secret.strip()]
            if settings.client_secret.strip()
            else list(require_secrets(settings.secret, provider))
        )
        versions = tuple(settings.signature_versions or DEFAULT_VERSIONS)
        verify_signature(request, secrets, versions)

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        return [extract(element) for element in events_of(request.body)]


def signed_url(request: WebhookRequest) -> str:
    """The URL HubSpot called: forwarded scheme/host when a proxy set them, else https+Host."""
    scheme = request.header("x-forwarded-proto") or "https"
    host = request.header("x-forwarded-host") or request.host
    url = f"{scheme}://{host}{request.raw_path}"
    if request.query_string:
        url += "?" + request.query_string
    return _ESCAPE.sub(lambda m: _DECODED_ESCAPES[m.group(1).lower()], url)


def verify_signature(
    request: WebhookRequest, secrets: list[str], versions: tuple[str, ...]
) -> None:
    v3 = request.header("x-hubspot-signature-v3")
    if v3 and "v3" in versions:
        timestamp = request.header("x-hubspot-request-timestamp")
        check_timestamp(
            timestamp, "X-HubSpot-Request-Timestamp", MAX_AGE_SECONDS, request.received_ns
        )
        signed = (request.method + signed_url(request)).encode() + request.body + timestamp.encode()
        if not matches(secrets, signed, decode_signature(v3, "base64")):
            raise VerificationFailed("signature mismatch")
        return
    legacy = request.header("x-hubspot-signature")
    version = request.header("x-hubspot-signature-version").lower() or "v1"
    if legacy and version in ("v1", "v2") and version in versions:
        prefix = request.method + signed_url(request) if version == "v2" else ""
        signature = decode_signature(legacy, "hex")
        for secret in secrets:
            expected = hashlib.sha256(secret.encode() + prefix.encode() + request.body).digest()
            if hmac.compare_digest(expected, signature):
                return
        raise VerificationFailed(f"{version} signature mismatch")
    raise VerificationFailed('missing signature header "X-HubSpot-Signature-v3"')


def events_of(body: bytes) -> list[dict[str, Any]]:
    value = parse_json(body)
    elements = value if isinstance(value, list) else [value]
    if not elements:
        raise BadPayload("hubspot delivery holds no events")
    if len(elements) > MAX_BATCH:
        raise BadPayload(f"hubspot delivery holds more than {MAX_BATCH} events")
    if not all(isinstance(element, dict) for element in elements):
        raise BadPayload("hubspot events must be JSON objects")
    return elements


def extract(element: dict[str, Any]) -> Extraction:
    subscription = to_string(element.get("subscriptionType")).lower()
    prefix, _, kind = subscription.partition(".")
    entity = to_string(element.get("objectType")).lower() or prefix or "object"
    event_id = to_string(element.get("eventId"))
    dedup = ""
    if event_id:
        # HubSpot documents eventId as not guaranteed unique on its own.
        dedup = ":".join(
            to_string(element.get(key))
            for key in ("eventId", "portalId", "subscriptionId", "occurredAt")
        )
    property_name = to_string(element.get("propertyName"))
    changes = (
        {property_name: {"from": None, "to": element.get("propertyValue")}}
        if property_name
        else None
    )
    return Extraction(
        entity_type=entity,
        entity_id=to_string(element.get("objectId")) or "unknown",
        action=_ACTIONS.get(kind, "updated"),
        provider_event_id=event_id,
        dedup_key=dedup,
        payload_digest=digest(json_bytes(element, sort_keys=True)),
        provider_time_ns=time_value_ns(element.get("occurredAt")),
        changes=changes,
        snapshot=element,
    )
