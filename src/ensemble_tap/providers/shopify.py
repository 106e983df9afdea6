"""Shopify webhooks: ``X-Shopify-Hmac-SHA256`` is the base64 HMAC-SHA256 of the raw body.

The topic (``orders/paid``) gives entity and action; ``X-Shopify-Webhook-Id`` identifies the
delivery (retries keep it), so it is the dedup key.
"""

from __future__ import annotations

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import parse_rfc3339_ns
from ensemble_tap.providers import hmac_verifier
from ensemble_tap.providers.base import BadPayload, Extraction, WebhookRequest
from ensemble_tap.providers.common import (
    digest,
    extract_entity_id,
    parse_json_object,
    require_secrets,
    to_string,
)


class ShopifyProvider:
    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        hmac_verifier.verify(
            require_secrets(settings.secret, provider),
            request.body,
            request.header("x-shopify-hmac-sha256"),
            "X-Shopify-Hmac-SHA256",
            "base64",
        )

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        body = parse_json_object(request.body)
        topic = [
            part.strip()
            for part in request.header("x-shopify-topic").lower().split("/")
            if part.strip()
        ]
        if not topic:
            raise BadPayload("missing X-Shopify-Topic header")
        entity = ".".join(topic[:-1]) if len(topic) > 1 else topic[0]
        action = topic[-1] if len(topic) > 1 else "updated"
        entity_id = extract_entity_id(body)
        if entity_id == "unknown":
            entity_id = to_string(body.get("admin_graphql_api_id")) or "unknown"
        event_id = request.header("x-shopify-event-id")
        return [
            Extraction(
                entity_type=entity,
                entity_id=entity_id,
                action=action,
                provider_event_id=event_id,
                dedup_key=request.header("x-shopify-webhook-id") or event_id,
                payload_digest=digest(request.body),
                provider_time_ns=parse_rfc3339_ns(request.header("x-shopify-triggered-at")),
                snapshot=body,
            )
        ]
