"""A provider that exists only for tests: everything adding a provider takes, in one module.

Registered with one line (``REGISTRY.register(PROVIDER)``, in a fixture), it gets the webhook
route, config validation and polling without a change anywhere else.

Webhooks: ``X-Example-Signature`` is the hex HMAC-SHA256 of the body, which is one event
``{"id": …, "type": "<entity>.<action>", "time": RFC3339, "object": {"id": …, …}}``.

Polling: ``GET {base_url}/v1/items?object=<name>&limit=<n>[&since=RFC3339][&cursor=<c>]``
with ``Example-Version: <api_version>`` answers ``{"items": [{"id", "updated_at", …}],
"next_cursor": <c> | null}``, items in ascending ``updated_at``. The bearer token is
``access_token``, else ``api_key``; every target needs an ``api_version`` like ``2026-03``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import format_time_ns
from ensemble_tap.providers import hmac_verifier
from ensemble_tap.providers.base import Extraction, WebhookRequest
from ensemble_tap.providers.common import (
    derive_entity_action,
    digest,
    extract_entity_id,
    parse_json_object,
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
)

NAME = "example"
EXAMPLE_OBJECTS = ("widgets",)
EXAMPLE_PAGE_SIZE = 20
EXAMPLE_MAX_PAGE_SIZE = 50
_API_VERSION = re.compile(r"^\d{4}-\d{2}$")


class ExampleWebhooks:
    secret_keys = ("secret",)
    signature_versions = None

    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        hmac_verifier.verify(
            require_secrets(settings.secret, provider),
            request.body,
            header_value=request.header("x-example-signature"),
            header_name="X-Example-Signature",
            encoding="hex",
        )

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        event = parse_json_object(request.body)
        entity, action = derive_entity_action(to_string(event.get("type")))
        event_id = to_string(event.get("id"))
        snapshot = event.get("object")
        return [
            Extraction(
                entity_type=entity,
                entity_id=extract_entity_id(snapshot),
                action=action,
                provider_event_id=event_id,
                dedup_key=event_id,
                payload_digest=digest(request.body),
                provider_time_ns=time_value_ns(event.get("time")),
                snapshot=snapshot if isinstance(snapshot, dict) else None,
            )
        ]


class ExamplePoller:
    headers: Mapping[str, str] = {"Accept": "application/json"}
    basic_token_auth = False
    token_key = "api_key"
    max_page_size = EXAMPLE_MAX_PAGE_SIZE
    required_keys = ("api_version",)
    object_name = re.compile(r"^[a-z_]{1,40}$")
    reads_fields = False

    def target_problems(self, settings: ProviderConfig) -> Iterator[str]:
        version = settings.api_version.strip()
        if version and not _API_VERSION.match(version):
            yield "api_version must look like 2026-03"

    def settings_warnings(self, settings: ProviderConfig) -> Iterator[tuple[str, str]]:
        if settings.realm_id.strip():
            yield "realm_id", "has no effect for example"

    def streams(self, settings: ProviderConfig, context: StreamContext) -> list[Stream]:
        page_size = settings.query_per_page or EXAMPLE_PAGE_SIZE
        version = settings.api_version.strip()
        return [
            ExampleItems(base_url(settings), name, version, page_size)
            for name in objects_of(settings, EXAMPLE_OBJECTS)
        ]

    def rate_limit_hint(self, response: Response) -> float | None:
        return None


class ExampleItems:
    period = 1

    def __init__(self, base: str, object_name: str, version: str, page_size: int) -> None:
        self.name = object_name
        self.url = f"{base}/v1/items"
        self.entity_type = object_name.removesuffix("s")
        self.version = version
        self.page_size = page_size

    async def pages(self, start: Position, http: PollHTTP) -> AsyncGenerator[Page, None]:
        position = start
        while True:
            params = {"object": self.name, "limit": str(self.page_size)}
            if position.since_ns is not None:
                params["since"] = format_time_ns(position.since_ns)
            cursor = to_string(dig(position.token, "cursor"))
            if cursor:
                params["cursor"] = cursor
            reply = await http.request(
                "GET", self.url, params=params, headers={"Example-Version": self.version}
            )
            data = reply.json_object(NAME)
            items = data.get("items")
            records = [self.record(item) for item in (items if isinstance(items, list) else [])]
            newest = max((r.version_ns for r in records if r.version_ns is not None), default=None)
            following = to_string(data.get("next_cursor"))
            after = Position(position.since_ns, {"cursor": following}) if following else None
            yield Page(records, position, after, newest)
            if after is None:
                return
            position = after

    def record(self, item: Any) -> Record:
        snapshot = dict(item) if isinstance(item, dict) else {}
        version = provider_time_ns(snapshot.get("updated_at"))
        return Record(self.entity_type, to_string(snapshot.get("id")), snapshot, version)


PROVIDER = Provider(NAME, webhook=ExampleWebhooks(), poller=ExamplePoller())
