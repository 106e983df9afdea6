"""The official CloudEvents SDK as the oracle for what the service publishes."""

from __future__ import annotations

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


def parse_cloudevent(body: bytes) -> CloudEvent:
    """Parse a structured-mode JSON CloudEvent; the SDK validates required attributes."""
    event = JSONFormat().read(CloudEvent, body)
    assert isinstance(event, CloudEvent)
    return event
