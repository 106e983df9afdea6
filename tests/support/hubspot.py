"""HubSpot deliveries as its webhooks guide documents them (unit and integration tests)."""

from __future__ import annotations

from typing import Any


def contact_creation(portal: int, object_id: int, attempt: int = 0) -> dict[str, Any]:
    """A ``contact.creation`` event as HubSpot's webhooks guide documents its fields."""
    return {
        "eventId": 777001,
        "subscriptionId": 4001,
        "portalId": portal,
        "appId": 54321,
        "occurredAt": 1709562120000,
        "subscriptionType": "contact.creation",
        "attemptNumber": attempt,
        "objectId": object_id,
        "changeSource": "CRM",
        "changeFlag": "NEW",
    }
