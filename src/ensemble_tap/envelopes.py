"""One extracted event as it is published: its CloudEvent and its ``Nats-Msg-Id``.

Shared by the webhook route and dead-letter replay (which extracts a stored delivery again).
It sits above ``providers`` (it reads an ``Extraction``) and ``events``, which is why it is
not part of ``events.py``.
"""

from __future__ import annotations

from ensemble_tap.events import (
    Envelope,
    NormalizedEvent,
    build_envelope,
    dedup_id,
    fallback_dedup_key,
)
from ensemble_tap.providers import Extraction


def envelope_for(
    found: Extraction,
    provider: str,
    tenant_id: str,
    request_id: str,
    received_ns: int,
    subject_prefix: str,
    tenant_scoped: bool,
) -> tuple[Envelope, str]:
    """The CloudEvent and the ``Nats-Msg-Id`` of one extracted event."""
    event = NormalizedEvent(
        provider=provider,
        entity_type=found.entity_type,
        entity_id=found.entity_id,
        action=found.action,
        provider_time_ns=received_ns if found.provider_time_ns is None else found.provider_time_ns,
        provider_event_id=found.provider_event_id,
        tenant_id=tenant_id,
        request_id=request_id,
        changes=found.changes,
        snapshot=found.snapshot,
    )
    envelope = build_envelope(event, subject_prefix, tenant_scoped, found.event_id)
    key = found.dedup_key or fallback_dedup_key(event, found.payload_digest)
    return envelope, dedup_id(provider, tenant_id, key)
