"""Generic HMAC webhooks: any configured provider name without a dedicated module.

``X-Signature`` carries the hex HMAC-SHA256 of the raw body (optional ``sha256=`` prefix);
``X-Event-Type`` names the event, ``X-Event-Action`` may override the action and
``X-Event-Id`` is the delivery id used for de-duplication.
"""

from __future__ import annotations

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import MAX_EVENT_TYPE_LENGTH, MAX_NAME_LENGTH
from ensemble_tap.providers import hmac_verifier
from ensemble_tap.providers.base import BadPayload, Extraction, WebhookRequest
from ensemble_tap.providers.common import (
    derive_entity_action,
    digest,
    extract_entity_id,
    extract_timestamp_ns,
    parse_json_object,
    require_secrets,
)


class GenericProvider:
    secret_keys = ("secret",)
    signature_versions = None

    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        hmac_verifier.verify(
            require_secrets(settings.secret, provider),
            request.body,
            header_value=request.header("x-signature"),
            header_name="X-Signature",
            encoding="hex",
            prefix="sha256=",
        )

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        body = parse_json_object(request.body)
        type_header = request.header("x-event-type")
        action_header = request.header("x-event-action")
        # Bounded before the split, whose cache keeps sender values as keys.
        if len(type_header) > MAX_EVENT_TYPE_LENGTH:
            raise BadPayload(f"X-Event-Type is longer than {MAX_EVENT_TYPE_LENGTH} characters")
        if len(action_header) > MAX_NAME_LENGTH:
            raise BadPayload(f"X-Event-Action is longer than {MAX_NAME_LENGTH} characters")
        entity, action = derive_entity_action(type_header, action_header)
        event_id = request.header("x-event-id")
        return [
            Extraction(
                entity_type=entity,
                entity_id=extract_entity_id(body),
                action=action,
                provider_event_id=event_id,
                dedup_key=event_id,
                # Read only without a delivery id (the fallback dedup key): not hashed twice.
                payload_digest="" if event_id else digest(request.body),
                provider_time_ns=extract_timestamp_ns(body),
                snapshot=body,
            )
        ]
