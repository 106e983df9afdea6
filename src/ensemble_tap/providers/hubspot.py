"""HubSpot webhooks: signature v3 (HMAC-SHA256, base64) over method + URL + body + timestamp.

A delivery is a JSON array of up to 100 events; each becomes its own CloudEvent. Signature
v1 and v2 (plain SHA-256 with the client secret) are accepted only when listed in
``signature_versions``.

HubSpot documents ``eventId`` as "not guaranteed to be unique", so an event is identified by
``eventId:portalId:subscriptionId:occurredAt``: its dedup key and its CloudEvent id (the
ClickHouse sink keys rows by that id). ``data.provider_event_id`` keeps the bare ``eventId``.

The module also holds HubSpot's poller (``HubSpotPoller``, at the end).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.config.provider_rules import SignatureVersions
from ensemble_tap.events import json_bytes
from ensemble_tap.providers.base import BadPayload, Extraction, VerificationFailed, WebhookRequest
from ensemble_tap.providers.common import (
    digest,
    parse_json,
    provider_time_ns,
    require_secrets,
    time_value_ns,
    to_string,
)
from ensemble_tap.providers.contract import (
    Page,
    PollHTTP,
    Position,
    Provider,
    Record,
    Response,
    Stream,
    StreamContext,
    base_url,
    dig,
    objects_of,
    scan_period,
)
from ensemble_tap.providers.hmac_verifier import check_timestamp, decode_signature, matches

MAX_AGE_SECONDS = 300
MAX_BATCH = 100
# HubSpot signs the URI with these escapes decoded (its v3 validation guide).
_DECODED_ESCAPES = {
    "3a": ":", "2f": "/", "3f": "?", "40": "@", "21": "!", "24": "$",
    "27": "'", "28": "(", "29": ")", "2a": "*", "2c": ",", "3b": ";",
}  # fmt: skip
_ESCAPE = re.compile(r"%(3[aAfFbB]|2[fFaAcC1478]|40|29)")
_ACTIONS = {"creation": "created", "deletion": "deleted"}


class HubSpotProvider:
    # An app's client secret signs its deliveries; ``secret`` serves private apps.
    secret_keys = ("secret", "client_secret")
    signature_versions = SignatureVersions(frozenset({"v1", "v2", "v3"}), ("v3",))

    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        secrets = (
            [settings.client_secret.strip()]
            if settings.client_secret.strip()
            else list(require_secrets(settings.secret, provider))
        )
        versions = tuple(settings.signature_versions or self.signature_versions.default)
        verify_signature(request, secrets, versions)

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        return [extract(element) for element in events_of(request.body)]


def request_url(request: WebhookRequest) -> str:
    """The URL HubSpot called, as received: forwarded scheme/host when a proxy set them, else
    https+Host. Signature v2 signs exactly this ("must exactly match the original request")."""
    scheme = request.header("x-forwarded-proto") or "https"
    host = request.header("x-forwarded-host") or request.host
    url = f"{scheme}://{host}{request.raw_path}"
    if request.query_string:
        url += "?" + request.query_string
    return url


def signed_url(request: WebhookRequest) -> str:
    """The URL signature v3 signs: ``request_url`` with the escapes v3 decodes."""
    return v3_signed_uri(request_url(request))


def v3_signed_uri(url: str) -> str:
    """``url`` with the escapes HubSpot decodes before signing v3 (also ``ensemble-tap send``)."""
    return _ESCAPE.sub(lambda m: _DECODED_ESCAPES[m.group(1).lower()], url)


def verify_signature(
    request: WebhookRequest, secrets: list[str], versions: tuple[str, ...]
) -> None:
    v3 = request.header("x-hubspot-signature-v3")
    if v3 and "v3" in versions:
        timestamp = request.header("x-hubspot-request-timestamp")
        check_timestamp(
            timestamp,
            header_name="X-HubSpot-Request-Timestamp",
            max_age=MAX_AGE_SECONDS,
            now_ns=request.received_ns,
        )
        signed = (request.method + signed_url(request)).encode() + request.body + timestamp.encode()
        if not matches(secrets, signed, signature=decode_signature(v3, "base64")):
            raise VerificationFailed("signature mismatch")
        return
    legacy = request.header("x-hubspot-signature")
    version = request.header("x-hubspot-signature-version").lower() or "v1"
    if legacy and version in ("v1", "v2") and version in versions:
        prefix = request.method + request_url(request) if version == "v2" else ""
        signature = decode_signature(legacy, "hex")
        for secret in secrets:
            expected = hashlib.sha256(secret.encode() + prefix.encode() + request.body).digest()
            if hmac.compare_digest(expected, signature):
                return
        raise VerificationFailed(f"{version} signature mismatch")
    raise VerificationFailed('missing signature header "X-HubSpot-Signature-v3"')


def events_of(body: bytes) -> list[dict[str, Any]]:
    value = parse_json(body)
    elements = value if isinstance(value, list) else [value]
    if not elements:
        raise BadPayload("hubspot delivery holds no events")
    if len(elements) > MAX_BATCH:
        raise BadPayload(f"hubspot delivery holds more than {MAX_BATCH} events")
    if not all(isinstance(element, dict) for element in elements):
        raise BadPayload("hubspot events must be JSON objects")
    return elements


def extract(element: dict[str, Any]) -> Extraction:
    # HubSpot's webhooks guide names the field ``eventType`` in its sample payload and field
    # table, its newer pages ``subscriptionType``: either is read.
    subscription = to_string(element.get("subscriptionType") or element.get("eventType")).lower()
    prefix, _, kind = subscription.partition(".")
    entity = (
        to_string(element.get("objectType")).lower()
        or object_type_entity(to_string(element.get("objectTypeId")))
        or prefix
        or "object"
    )
    event_id = to_string(element.get("eventId"))
    identity = ""
    if event_id:
        # HubSpot documents eventId as not guaranteed unique on its own.
        identity = ":".join(
            to_string(element.get(name))
            for name in ("eventId", "portalId", "subscriptionId", "occurredAt")
        )
    property_name = to_string(element.get("propertyName"))
    changes = (
        {property_name: {"from": None, "to": element.get("propertyValue")}}
        if property_name
        else None
    )
    return Extraction(
        entity_type=entity,
        entity_id=to_string(element.get("objectId")) or "unknown",
        action=_ACTIONS.get(kind, "updated"),
        provider_event_id=event_id,
        dedup_key=identity,
        payload_digest=digest(json_bytes(element, sort_keys=True)),
        provider_time_ns=time_value_ns(element.get("occurredAt")),
        changes=changes,
        snapshot=element,
        event_id=identity,
    )


def object_type_entity(object_type_id: str) -> str:
    """The entity of an ``objectTypeId`` (generic ``object.*`` subscriptions): the name the
    poller gives the same object, so both paths publish one subject per record. Objects not in
    ``OBJECT_NAMES``, custom objects (``2-…``) among them, keep their id, as the poller does
    when ``objects`` lists them by id. Empty for no id."""
    type_id = object_type_id.lower()
    return poll_entity_type(OBJECT_NAMES.get(type_id, type_id)) if type_id else ""


# ------------------------------------------------------------------------------ polling
#
# CRM search (``POST /crm/v3/objects/{object}/search``) filtered on the object's modification
# time (``GTE`` the stream position) and sorted ascending by it. Each next page is a new search
# from the newest time seen (``after`` only pages through records sharing one time), which
# keeps far below HubSpot's 10,000-result search window. Deletes: the archived list
# ``GET /crm/v3/objects/{object}?archived=true``.

HUBSPOT_OBJECTS = ("deals", "contacts", "companies", "tickets")
HUBSPOT_PAGE_SIZE = 100
HUBSPOT_MAX_PAGE_SIZE = 200  # the search endpoint's maximum
HUBSPOT_LIST_PAGE_SIZE = 100  # the list endpoint's maximum
SEARCH_WINDOW = 10_000
# Contacts carry ``lastmodifieddate``; every other standard object ``hs_lastmodifieddate``.
_CURSOR_PROPERTY = {"contacts": "lastmodifieddate"}
# The names HubSpot webhooks use, so one record has one subject whichever path saw it.
_ENTITY_TYPES = {
    "deals": "deal",
    "contacts": "contact",
    "companies": "company",
    "tickets": "ticket",
    "line_items": "line_item",
    "products": "product",
    "quotes": "quote",
    "calls": "call",
    "emails": "email",
    "meetings": "meeting",
    "notes": "note",
    "tasks": "task",
}


# HubSpot's standard objects: objectTypeId (HubSpot's "Understanding the CRM" object type
# table) → the object's name in ``/crm/v3/objects/{name}``. Objects HubSpot's guides address
# by id (courses ``/crm/v3/objects/0-410``; appointments 0-421, listings 0-420, services
# 0-162, projects 0-970, marketing events 0-54) are not listed: they keep their id.
OBJECT_NAMES = {
    "0-1": "contacts",
    "0-2": "companies",
    "0-3": "deals",
    "0-5": "tickets",
    "0-7": "products",
    "0-8": "line_items",
    "0-14": "quotes",
    "0-18": "communications",
    "0-19": "feedback_submissions",
    "0-27": "tasks",
    "0-46": "notes",
    "0-47": "meetings",
    "0-48": "calls",
    "0-49": "emails",
    "0-53": "invoices",
    "0-69": "subscriptions",
    "0-74": "goal_targets",
    "0-84": "discounts",
    "0-85": "fees",
    "0-86": "taxes",
    "0-101": "commerce_payments",
    "0-115": "users",
    "0-116": "postal_mail",
    "0-123": "orders",
    "0-136": "leads",
    "0-142": "carts",
}


def poll_entity_type(object_name: str) -> str:
    name = object_name.strip().lower()
    return _ENTITY_TYPES.get(name, name)


class HubSpotPoller:
    headers: Mapping[str, str] = {}
    basic_token_auth = False
    token_key = "api_key"  # the config key of a private app's token  # nosec B105
    max_page_size = HUBSPOT_MAX_PAGE_SIZE
    required_keys = ()
    # Names or objectTypeIds (``0-3``, custom ``2-…``), spliced into URL paths.
    object_name = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
    reads_fields = True  # HubSpot properties
    search_window = SEARCH_WINDOW

    def target_problems(self, settings: ProviderConfig) -> Iterator[str]:
        return iter(())

    def settings_warnings(self, settings: ProviderConfig) -> Iterator[tuple[str, str]]:
        return iter(())

    def streams(self, settings: ProviderConfig, context: StreamContext) -> list[Stream]:
        base = base_url(settings)
        page_size = settings.query_per_page or HUBSPOT_PAGE_SIZE
        fields = tuple(name.strip() for name in (settings.fields or []) if name.strip())
        streams: list[Stream] = []
        for name in objects_of(settings, HUBSPOT_OBJECTS):
            streams.append(HubSpotSearch(base, name, page_size, fields, self.search_window))
            streams.append(
                HubSpotArchived(
                    base,
                    name,
                    min(page_size, HUBSPOT_LIST_PAGE_SIZE),
                    scan_period(context.interval, context.delete_interval),
                )
            )
        return streams

    def rate_limit_hint(self, response: Response) -> float | None:
        return None


class HubSpotSearch:
    period = 1

    def __init__(
        self, base: str, object_name: str, page_size: int, fields: tuple[str, ...], window: int
    ) -> None:
        self.name = object_name
        self.url = f"{base}/crm/v3/objects/{object_name}/search"
        self.entity_type = poll_entity_type(object_name)
        self.cursor_property = _CURSOR_PROPERTY.get(object_name.lower(), "hs_lastmodifieddate")
        self.page_size = page_size
        # Without ``properties`` HubSpot returns its default set (which has the cursor
        # property); with them, only those, so the cursor property is always added.
        self.properties = list(dict.fromkeys((*fields, self.cursor_property))) if fields else None
        self.window = window

    def body(self, since_ns: int | None, after: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "limit": self.page_size,
            "sorts": [{"propertyName": self.cursor_property, "direction": "ASCENDING"}],
        }
        if since_ns is not None:
            body["filterGroups"] = [
                {
                    "filters": [
                        {
                            "propertyName": self.cursor_property,
                            "operator": "GTE",
                            "value": str(since_ns // 1_000_000),
                        }
                    ]
                }
            ]
        if self.properties is not None:
            body["properties"] = self.properties
        if after:
            body["after"] = after
        return body

    async def pages(self, start: Position, http: PollHTTP) -> AsyncGenerator[Page, None]:
        position = start
        while True:
            since = position.since_ns
            after = to_string(dig(position.token, "after"))
            reply = await http.request("POST", self.url, json=self.body(since, after))
            data = reply.json_object("hubspot")
            results = data.get("results")
            records = [
                record
                for item in (results if isinstance(results, list) else [])
                if (record := self.record(item)) is not None
            ]
            newest = max((r.version_ns for r in records if r.version_ns is not None), default=None)
            following = to_string(dig(data, "paging", "next", "after"))
            after_next: Position | None
            if not following or following == after:
                after_next = None
            elif newest is not None and (since is None or newest > since):
                # Keyset paging: search again from the newest time seen, inclusive. ``after``
                # is an offset, and a record updated mid-pass moves to the end of the order,
                # so offsets would skip one; records sharing that time are read again instead
                # (and found unchanged). It also keeps every search far from HubSpot's
                # 10,000-result window.
                after_next = Position(newest, None)
            elif following.isdigit() and int(following) >= self.window:
                # A whole search window shares one millisecond: step over it.
                after_next = Position((since or 0) + 1_000_000, None)
            else:  # the page shares one time: page through it by offset
                after_next = Position(since, {"after": following})
            yield Page(records, position, after_next, newest)
            if after_next is None:
                return
            position = after_next

    def record(self, item: Any) -> Record | None:
        if not isinstance(item, dict):
            return None
        entity_id = to_string(item.get("id"))
        properties = item.get("properties")
        snapshot = dict(properties) if isinstance(properties, dict) else {}
        snapshot["id"] = entity_id
        version = provider_time_ns(snapshot.get(self.cursor_property))
        if version is None:
            version = provider_time_ns(item.get("updatedAt"))
        return Record(self.entity_type, entity_id, snapshot, version)


class HubSpotArchived:
    """Archived (deleted) records; a full listing, so it runs as a periodic delete scan."""

    def __init__(self, base: str, object_name: str, page_size: int, period: int) -> None:
        self.name = f"{object_name}#archived"
        self.url = f"{base}/crm/v3/objects/{object_name}"
        self.entity_type = poll_entity_type(object_name)
        self.page_size = page_size
        self.period = period

    async def pages(self, start: Position, http: PollHTTP) -> AsyncGenerator[Page, None]:
        position = start
        while True:
            after = to_string(dig(position.token, "after"))
            params = {"archived": "true", "limit": str(self.page_size)}
            if after:
                params["after"] = after
            reply = await http.request("GET", self.url, params=params)
            data = reply.json_object("hubspot")
            results = data.get("results")
            records = [
                Record(
                    self.entity_type,
                    to_string(item.get("id")),
                    None,
                    provider_time_ns(item.get("archivedAt")),
                    deleted=True,
                )
                for item in (results if isinstance(results, list) else [])
                if isinstance(item, dict) and item.get("archived", True) is not False
            ]
            following = to_string(dig(data, "paging", "next", "after"))
            done = not following or following == after
            after_next = None if done else Position(None, {"after": following})
            yield Page(records, position, after_next)
            if after_next is None:
                return
            position = after_next


PROVIDER = Provider("hubspot", webhook=HubSpotProvider(), poller=HubSpotPoller())
