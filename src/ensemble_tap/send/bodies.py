"""The body of a test delivery: a provider's documented sample with fresh ids, or a file.

The samples (``samples/<kind>.json``) are documented payloads, the same as the test suite's
fixtures: Stripe's Event object example (``setup_intent.created``,
https://docs.stripe.com/api/events/object), GitHub's ``ping`` (its "Webhook events and
payloads" page), HubSpot's v1 request-validation example (``contact.creation``), Linear's
data change event envelope around an Issue (https://linear.app/developers/webhooks),
Shopify's ``products/update`` example (its "delivery structure" page), and for any other
provider the generic deal of the README.

The body carries what the provider puts in it at send time: a sample gets a new event id
and the current time where the provider puts them (Stripe ``id``/``created``, HubSpot
``eventId``/``occurredAt``, Linear ``createdAt``, generic ``timestamp``), so each send is a
new event. Linear signs ``webhookTimestamp`` (now, in ms) inside the body on every attempt,
so it is set in a file too; otherwise a file is sent byte for byte unless ``--event-type``
must be written into it (Stripe ``type``, HubSpot ``subscriptionType``, Linear
``type``/``action``).
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ensemble_tap.send.errors import SendError

Kind = Literal["stripe", "github", "hubspot", "linear", "shopify", "generic"]
# The providers with a dedicated verifier (providers/__init__.py); any other name is generic.
DEDICATED: tuple[Kind, ...] = ("stripe", "github", "hubspot", "linear", "shopify")
# The event type of each sample, as ``--event-type`` names it for that provider.
SAMPLE_EVENT_TYPES: dict[Kind, str] = {
    "stripe": "setup_intent.created",
    "github": "ping",
    "hubspot": "contact.creation",
    "linear": "Issue.create",
    "shopify": "products/update",
    "generic": "deal.updated",
}
_STRIPE_ID_ALPHABET = string.ascii_letters + string.digits


class BodyError(SendError):
    """The body cannot be built (a missing or unreadable file, not JSON)."""


@dataclass(slots=True, frozen=True)
class Body:
    content: bytes
    event_type: str  # as --event-type names it; "" when the body does not say


def kind_of(provider: str) -> Kind:
    for kind in DEDICATED:
        if provider == kind:
            return kind
    return "generic"


def sample_body(kind: Kind, event_type: str | None, now_ns: int) -> Body:
    text = resources.files("ensemble_tap.send").joinpath("samples", f"{kind}.json").read_text()
    document = json.loads(text)
    _freshen(kind, document, now_ns)
    chosen = event_type or SAMPLE_EVENT_TYPES[kind]
    _write_event_type(kind, document, chosen)
    _stamp(kind, document, now_ns)
    return Body(_dumps(document), chosen)


def file_body(path: Path, kind: Kind, event_type: str | None, now_ns: int) -> Body:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BodyError(f"cannot read --file {path}: {exc.strerror or exc}") from None
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(f"--file {path} is not JSON: {exc}") from None
    changed = False
    if event_type and kind in ("stripe", "hubspot", "linear"):
        _write_event_type(kind, document, event_type)
        changed = True
    if kind == "linear":
        changed |= _stamp(kind, document, now_ns)
    content = _dumps(document) if changed else raw
    return Body(content, event_type or _event_type_in(kind, document))


def _freshen(kind: Kind, document: Any, now_ns: int) -> None:
    """A new event id and the current time where the provider's own sample carries them."""
    if kind == "stripe":
        document["id"] = "evt_" + "".join(secrets.choice(_STRIPE_ID_ALPHABET) for _ in range(24))
        document["created"] = now_ns // 1_000_000_000
    elif kind == "hubspot":
        for element in document:
            element["eventId"] = 1_000_000_000 + secrets.randbelow(9_000_000_000)
            element["occurredAt"] = now_ns // 1_000_000
    elif kind == "linear":
        document["createdAt"] = _rfc3339_ms(now_ns)
    elif kind == "generic":
        document["timestamp"] = _rfc3339_ms(now_ns)


def _write_event_type(kind: Kind, document: Any, event_type: str) -> None:
    """The event type where the provider puts it in the body; header-typed providers (GitHub,
    Shopify, generic) leave the body alone."""
    if kind == "stripe":
        _object(document, "a Stripe event")["type"] = event_type
    elif kind == "hubspot":
        elements = document if isinstance(document, list) else [document]
        for element in elements:
            _object(element, "a HubSpot event")["subscriptionType"] = event_type
            if "eventType" in element:  # the older documented name of the same field
                element["eventType"] = event_type
    elif kind == "linear":
        entity, _, action = event_type.partition(".")
        linear = _object(document, "a Linear event")
        linear["type"] = entity
        if action:
            linear["action"] = action


def _stamp(kind: Kind, document: Any, now_ns: int) -> bool:
    """Linear's signed send time; True when the body changed."""
    if kind != "linear":
        return False
    _object(document, "a Linear event")["webhookTimestamp"] = now_ns // 1_000_000
    return True


def _event_type_in(kind: Kind, document: Any) -> str:
    """The event type a file already names (for the summary line); "" when it does not."""
    first = document[0] if isinstance(document, list) and document else document
    if not isinstance(first, dict):
        return ""
    if kind == "stripe":
        return str(first.get("type") or "")
    if kind == "hubspot":
        return str(first.get("subscriptionType") or first.get("eventType") or "")
    if kind == "linear":
        entity, action = first.get("type"), first.get("action")
        return f"{entity}.{action}" if entity and action else str(entity or "")
    return ""


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BodyError(f"the body must be {what}, a JSON object, to set its event type")
    return value


def _rfc3339_ms(now_ns: int) -> str:
    return rfc3339(now_ns, "milliseconds")


def rfc3339(now_ns: int, timespec: str) -> str:
    """UTC with a ``Z``, truncated (not rounded: no float) to ``timespec``."""
    moment = datetime.fromtimestamp(now_ns // 1_000_000_000, UTC) + timedelta(
        microseconds=now_ns // 1_000 % 1_000_000
    )
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def _dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
