"""Notion polling (search API).

This module holds only the poller: Notion webhooks go through the generic HMAC handler, like
any provider without a dedicated verifier.

``POST /v1/search`` is the only way to list what an integration can see. Its only filter is on
``object`` (no time filter, despite what the reference sent), so passes read the results
sorted by ``last_edited_time`` *descending* and stop at the stream's lower bound: the newest
edits come first and an incremental pass reads little more than what changed. About every five
minutes (and on the first pass after start-up) a pass reads everything instead: search never
returns trashed pages, so a page known from a snapshot that a complete scan no longer finds,
and that ``GET /v1/pages/{id}`` (``/v1/databases/{id}``) reports ``in_trash`` or 404, is
``deleted``. Requests carry ``Notion-Version: 2022-06-28``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.providers.common import provider_time_ns, to_string
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
    scan_period,
)

NOTION_VERSION = "2022-06-28"
NOTION_PAGE_SIZE = 100  # the API's maximum
ENTITY_TYPES = ("page", "database")


class NotionPoller:
    headers: Mapping[str, str] = {"Notion-Version": NOTION_VERSION}
    basic_token_auth = False
    token_key = "secret"  # the name of the config key with the token  # nosec B105
    max_page_size = NOTION_PAGE_SIZE
    required_keys = ()
    object_name = None  # ``objects`` is not read
    reads_fields = False

    def target_problems(self, settings: ProviderConfig) -> Iterator[str]:
        return iter(())

    def settings_warnings(self, settings: ProviderConfig) -> Iterator[tuple[str, str]]:
        if settings.objects:
            yield "objects", "has no effect for notion (search covers pages and databases)"

    def streams(self, settings: ProviderConfig, context: StreamContext) -> list[Stream]:
        page_size = min(settings.query_per_page or NOTION_PAGE_SIZE, self.max_page_size)
        return [NotionSearch(base_url(settings), page_size, context)]

    def rate_limit_hint(self, response: Response) -> float | None:
        return None


def _trashed(item: Mapping[str, Any]) -> bool:
    return item.get("in_trash") is True or item.get("archived") is True


class NotionSearch:
    name = "search"
    period = 1

    def __init__(self, base: str, page_size: int, context: StreamContext) -> None:
        self.base = base
        self.page_size = page_size
        self.context = context
        self.full_every = scan_period(context.interval, context.delete_interval)
        self._passes = 0  # passes started by this process; the first one is a full scan
        # A full scan started by this process: its id and the entities it has seen so far.
        self._scan_id = ""
        self._seen: set[tuple[str, str]] = set()

    async def pages(self, start: Position, http: PollHTTP) -> AsyncGenerator[Page, None]:
        token = dict(start.token or {})
        if not token:  # a new pass
            full = self._passes % self.full_every == 0
            self._passes += 1
            token = {"full": full}
            if full:
                self._scan_id = os.urandom(8).hex()
                self._seen = set()
                token["scan"] = self._scan_id
        full = token.get("full") is True
        boundary = None if full else start.since_ns
        # Delete detection needs every result of this scan, seen by this process.
        complete_view = full and token.get("scan") == self._scan_id and bool(self._scan_id)
        highest = token.get("high") if isinstance(token.get("high"), int) else None
        position = Position(start.since_ns, token or None)
        while True:
            body: dict[str, Any] = {
                "page_size": self.page_size,
                "sort": {"direction": "descending", "timestamp": "last_edited_time"},
            }
            if token.get("cursor"):
                body["start_cursor"] = token["cursor"]
            reply = await http.request("POST", f"{self.base}/v1/search", json=body)
            data = reply.json_object("notion")
            results = data.get("results")
            records: list[Record] = []
            reached_boundary = False
            for item in results if isinstance(results, list) else []:
                record = self.record(item)
                if record is None:
                    continue
                version = record.version_ns
                if boundary is not None and version is not None and version < boundary:
                    reached_boundary = True
                    break
                if version is not None:
                    highest = version if highest is None else max(highest, version)
                if complete_view:
                    self._seen.add((record.entity_type, record.entity_id))
                records.append(record)
            following = to_string(data.get("next_cursor"))
            more = data.get("has_more") is True and bool(following) and not reached_boundary
            if more:
                token = {**token, "cursor": following, "high": highest}
                after_next = Position(start.since_ns, token)
                yield Page(records, position, after_next)
                position = after_next
                continue
            # The pass is complete: the high-water mark is the newest edit it saw.
            yield Page(records, position, None, highest)
            break
        if complete_view:
            self._scan_id = ""
            async for page in self._deletions(http):
                yield page

    async def _deletions(self, http: PollHTTP) -> AsyncGenerator[Page, None]:
        known = await self.context.known_entities(ENTITY_TYPES)
        for entity_type, entity_id in sorted(known - self._seen):
            kind = "databases" if entity_type == "database" else "pages"
            reply = await http.request(
                "GET", f"{self.base}/v1/{kind}/{entity_id}", allow_status=(404,)
            )
            if reply.status == 404:
                yield Page([Record(entity_type, entity_id, None, None, deleted=True)], None, None)
                continue
            item = reply.json_object("notion")
            if _trashed(item):
                version = provider_time_ns(item.get("last_edited_time"))
                gone = Record(entity_type, entity_id, None, version, deleted=True)
                yield Page([gone], None, None)
        self._seen = set()

    def record(self, item: Any) -> Record | None:
        if not isinstance(item, dict):
            return None
        entity_id = to_string(item.get("id"))
        if not entity_id:
            return None
        entity_type = to_string(item.get("object")).lower() or "page"
        version = provider_time_ns(item.get("last_edited_time"))
        if _trashed(item):
            return Record(entity_type, entity_id, None, version, deleted=True)
        return Record(entity_type, entity_id, dict(item), version)


PROVIDER = Provider("notion", poller=NotionPoller())
