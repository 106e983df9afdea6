"""Shopify webhooks: ``X-Shopify-Hmac-SHA256`` is the base64 HMAC-SHA256 of the raw body.

The topic (``orders/paid``) gives entity and action; ``X-Shopify-Webhook-Id`` identifies the
delivery (retries keep it), so it is the dedup key and the CloudEvent id. ``X-Shopify-Event-Id``
is "shared across all deliveries from the same merchant action" (one per subscribed topic): it
stays the provider event id, but cannot be the CloudEvent id.
"""

from __future__ import annotations

from typing import Any

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
from ensemble_tap.providers.contract import Provider


class ShopifyProvider:
    secret_keys = ("secret",)
    signature_versions = None

    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        hmac_verifier.verify(
            require_secrets(settings.secret, provider),
            request.body,
            header_value=request.header("x-shopify-hmac-sha256"),
            header_name="X-Shopify-Hmac-SHA256",
            encoding="base64",
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
        entity_id = record_id(body)
        if entity_id == "unknown" and len(body) == 1:
            # Some topics wrap the record: ``{"app_subscription": {"admin_graphql_api_id": …}}``.
            [inner] = body.values()
            entity_id = record_id(inner)
        event_id = request.header("x-shopify-event-id")
        webhook_id = request.header("x-shopify-webhook-id")
        return [
            Extraction(
                entity_type=entity,
                entity_id=entity_id,
                action=action,
                provider_event_id=event_id,
                dedup_key=webhook_id or event_id,
                payload_digest=digest(request.body),
                provider_time_ns=parse_rfc3339_ns(request.header("x-shopify-triggered-at")),
                snapshot=body,
                event_id=webhook_id,
            )
        ]


def record_id(record: Any) -> str:
    """The REST ``id``, else the GraphQL ``admin_graphql_api_id``, else ``unknown``."""
    entity_id = extract_entity_id(record)
    if entity_id == "unknown" and isinstance(record, dict):
        entity_id = to_string(record.get("admin_graphql_api_id")) or "unknown"
    return entity_id


PROVIDER = Provider("shopify", webhook=ShopifyProvider())
