"""The official CloudEvents SDK as the oracle for what the service publishes."""

from __future__ import annotations

from typing import Any

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


def parse_cloudevent(body: bytes) -> CloudEvent:
    """Parse a structured-mode JSON CloudEvent; the SDK validates required attributes."""
    event = JSONFormat().read(CloudEvent, body)
    assert isinstance(event, CloudEvent)
    return event


def data_of(event: CloudEvent) -> dict[str, Any]:
    """The event's ``data`` object (every Tap CloudEvent has one)."""
    data = event.get_data()
    assert isinstance(data, dict)
    return data
