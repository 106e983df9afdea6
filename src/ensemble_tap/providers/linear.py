"""Linear webhooks: ``Linear-Signature`` is the hex HMAC-SHA256 of the raw body.

Entity and action come from the body (``type``, ``action``); ``webhookTimestamp`` is epoch
milliseconds and must be within 60 seconds of now. The event's time is the body ``createdAt``
("the date and time that the action took place"), not ``webhookTimestamp`` ("when the webhook
was sent"): a retry, sent a minute to hours later, carries a new one to pass that window.
"""

from __future__ import annotations

from typing import Any

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import parse_rfc3339_ns
from ensemble_tap.providers import hmac_verifier
from ensemble_tap.providers.base import BadPayload, Extraction, VerificationFailed, WebhookRequest
from ensemble_tap.providers.common import (
    digest,
    extract_entity_id,
    parse_json_object,
    require_secrets,
    time_value_ns,
    to_string,
)
from ensemble_tap.providers.contract import Provider

REPLAY_WINDOW_SECONDS = 60
_ACTIONS = {"create": "created", "update": "updated", "remove": "deleted"}


class LinearProvider:
    secret_keys = ("secret",)
    signature_versions = None

    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        hmac_verifier.verify(
            require_secrets(settings.secret, provider),
            request.body,
            header_value=request.header("linear-signature"),
            header_name="Linear-Signature",
            encoding="hex",
        )
        body = parse_json_object(request.body)
        try:
            timestamp = webhook_timestamp_ns(body.get("webhookTimestamp"))
        except BadPayload:
            # The replay window cannot be checked: an authentication failure (401).
            raise VerificationFailed("webhookTimestamp is not a valid time") from None
        if timestamp is not None:
            try:
                hmac_verifier.check_window(timestamp, REPLAY_WINDOW_SECONDS, request.received_ns)
            except VerificationFailed:
                raise VerificationFailed("linear webhook timestamp outside replay window") from None

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        body = parse_json_object(request.body)
        timestamp = webhook_timestamp_ns(body.get("webhookTimestamp"))
        data = body.get("data")
        entity_id = extract_entity_id(data)
        if entity_id == "unknown":
            entity_id = extract_entity_id(body)
        delivery = request.header("linear-delivery")
        created_at = body.get("createdAt")
        if isinstance(created_at, str):
            timestamp = parse_rfc3339_ns(created_at.strip()) or timestamp
        return [
            Extraction(
                entity_type=to_string(body.get("type")).lower() or "event",
                entity_id=entity_id,
                action=action_of(body, request.header("linear-event")),
                provider_event_id=delivery,
                dedup_key=delivery,
                payload_digest=digest(request.body),
                provider_time_ns=timestamp,
                snapshot=body,
            )
        ]


def webhook_timestamp_ns(value: Any) -> int | None:
    """Milliseconds (Linear's format) or seconds; RFC3339 strings are accepted too.

    An unusable value raises BadPayload, so ``extract`` keeps its contract (BadPayload only);
    ``verify`` turns it into VerificationFailed.
    """
    if value is None:
        return None
    parsed = time_value_ns(value)
    if parsed is None:
        raise BadPayload("webhookTimestamp is not a valid time")
    return parsed


def action_of(body: dict[str, Any], event_header: str) -> str:
    action = to_string(body.get("action")).lower()
    if action:
        return _ACTIONS.get(action, action)
    _, _, header_action = event_header.lower().partition(".")
    return _ACTIONS.get(header_action, header_action) or "updated"


PROVIDER = Provider("linear", webhook=LinearProvider())
