"""GitHub webhooks: ``X-Hub-Signature-256`` over the raw body, JSON or form-encoded payloads.

SHA-1 (``X-Hub-Signature``) and SHA-512 are refused unless listed in the provider's
``signature_versions``; GitHub always sends the SHA-256 header.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.providers.base import BadPayload, Extraction, VerificationFailed, WebhookRequest
from ensemble_tap.providers.common import (
    digest,
    extract_entity_id,
    parse_json,
    require_secrets,
)
from ensemble_tap.providers.hmac_verifier import decode_signature, matches

DEFAULT_ALGORITHMS = ("sha256",)


class GitHubProvider:
    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        secrets = require_secrets(settings.secret, provider)
        allowed = tuple(settings.signature_versions or DEFAULT_ALGORITHMS)
        verify_signature(request, secrets, allowed)

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        event = request.header("x-github-event").lower()
        if not event:
            raise BadPayload("missing X-GitHub-Event header")
        payload = decode_payload(request)
        action = payload.get("action")
        if event == "push":
            action_text = "created"
        elif isinstance(action, str) and action.strip():
            action_text = action.strip().lower()
        else:
            action_text = "updated"
        delivery = request.header("x-github-delivery")
        return [
            Extraction(
                entity_type=event,
                entity_id=entity_id(event, payload),
                action=action_text,
                provider_event_id=delivery,
                dedup_key=delivery,
                payload_digest=digest(request.body),
                snapshot=payload,
            )
        ]


def verify_signature(
    request: WebhookRequest, secrets: Sequence[str], allowed: tuple[str, ...]
) -> None:
    header = request.header("x-hub-signature-256")
    if not header and "sha1" in allowed:
        header = request.header("x-hub-signature")
    if not header:
        raise VerificationFailed("missing signature")
    algorithm, sep, value = header.partition("=")
    if not sep:
        raise VerificationFailed("error parsing signature")
    if algorithm not in ("sha1", "sha256", "sha512"):
        raise VerificationFailed(f'unknown hash type prefix: "{algorithm}"')
    if algorithm not in allowed:
        raise VerificationFailed(f"{algorithm} signatures are not enabled (signature_versions)")
    signature = decode_signature(value, "hex")
    if not matches(secrets, request.body, signature, algorithm):
        raise VerificationFailed("payload signature check failed")


def decode_payload(request: WebhookRequest) -> dict[str, Any]:
    media_type = request.header("content-type").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        value = parse_json(request.body)
    elif media_type == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(
                request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True
            )
        except (ValueError, UnicodeDecodeError):
            raise BadPayload("form body is not valid") from None
        value = parse_json(form.get("payload", [""])[0].encode())
    elif not media_type:
        raise BadPayload("missing Content-Type header")
    else:
        raise BadPayload(f'webhook request has unsupported Content-Type "{media_type}"')
    if not isinstance(value, dict):
        raise BadPayload("github payload must be a JSON object")
    return value


def entity_id(event: str, payload: dict[str, Any]) -> str:
    """The id of the event's main object: top level, then ``payload[<event>]`` (singular too),
    then ``pull_request``; a push is identified by its head commit (``after``)."""
    found = extract_entity_id(payload)
    if found != "unknown":
        return found
    for key in (event, event.removesuffix("s"), "pull_request"):
        found = extract_entity_id(payload.get(key))
        if found != "unknown":
            return found
    after = payload.get("after")
    return after.strip() if isinstance(after, str) and after.strip() else "unknown"
