"""QuickBooks Online polling (query API plus change data capture for deletes).

This module holds only the poller: QuickBooks webhooks go through the generic HMAC handler,
like any provider without a dedicated verifier.

Each configured entity is one stream read with ``GET /v3/company/{realm}/query?query=SELECT *
FROM {Entity} WHERE MetaData.LastUpdatedTime >= '…' ORDERBY MetaData.LastUpdatedTime
STARTPOSITION n MAXRESULTS m``. Offset paging shifts when a record changes mid-pass (one record
would be skipped), so each page restarts the query at the newest time seen (keyset paging);
records sharing that second are read again and recognised as unchanged. Only when a whole
page shares one second does the offset advance inside it.

Deletes come from change data capture, ``GET /v3/company/{realm}/cdc?entities=…&changedSince=…``
(entries with ``"status": "Deleted"``). Name-list entities such as Customer are never deleted,
only made inactive, which the query stream reports as an update. Intuit's token endpoint takes
the client credentials as HTTP Basic auth, and it rotates refresh tokens.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import quote_plus

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import format_time_ns
from ensemble_tap.poller.http import ProviderHTTP, Response
from ensemble_tap.poller.model import (
    Page,
    Position,
    Record,
    Stream,
    StreamContext,
    base_url,
    dig,
    objects_of,
)
from ensemble_tap.providers.common import provider_time_ns, to_string

QUICKBOOKS_OBJECTS = ("Customer",)
QUICKBOOKS_PAGE_SIZE = 100
QUICKBOOKS_MAX_PAGE_SIZE = 1000
CDC_MAX_ENTRIES = 1000  # a CDC answer holds at most this many changes
CDC_MAX_AGE = 30 * 86_400 * 1_000_000_000  # changedSince may reach 30 days back
CDC_FIRST_LOOKBACK = 60 * 1_000_000_000
_METADATA_KEYS = frozenset({"startPosition", "maxResults", "totalCount"})


def qbo_time(ns: int) -> str:
    return format_time_ns(ns - ns % 1_000_000_000)


class QuickBooksPoller:
    name = "quickbooks"
    headers: Mapping[str, str] = {"Accept": "application/json"}
    basic_token_auth = True

    def streams(self, settings: ProviderConfig, context: StreamContext) -> list[Stream]:
        company = f"{base_url(settings)}/v3/company/{settings.realm_id.strip()}"
        page_size = min(settings.query_per_page or QUICKBOOKS_PAGE_SIZE, QUICKBOOKS_MAX_PAGE_SIZE)
        entities = objects_of(settings, QUICKBOOKS_OBJECTS)
        streams: list[Stream] = [QuickBooksQuery(company, name, page_size) for name in entities]
        streams.append(QuickBooksDeletes(company, entities, context))
        return streams

    def rate_limit_hint(self, response: Response) -> float | None:
        return None


def _collections(response: Any) -> list[tuple[str, list[Any]]]:
    """The record arrays of a ``QueryResponse`` (every array key but the paging metadata)."""
    if not isinstance(response, dict):
        return []
    return [
        (key, value)
        for key, value in response.items()
        if key not in _METADATA_KEYS and isinstance(value, list)
    ]


class QuickBooksQuery:
    period = 1

    def __init__(self, company: str, entity: str, page_size: int) -> None:
        self.name = entity
        self.url = f"{company}/query"
        self.entity = entity
        self.entity_type = entity.lower()
        self.page_size = page_size

    def query(self, position: Position) -> str:
        text = f"SELECT * FROM {self.entity}"
        if position.since_ns is not None:
            text += f" WHERE MetaData.LastUpdatedTime >= '{qbo_time(position.since_ns)}'"
        skip = dig(position.token, "skip")
        offset = skip if isinstance(skip, int) and skip > 0 else 0
        return (
            text + f" ORDERBY MetaData.LastUpdatedTime STARTPOSITION {offset + 1} "
            f"MAXRESULTS {self.page_size}"
        )

    async def pages(self, start: Position, http: ProviderHTTP) -> AsyncGenerator[Page, None]:
        position = start
        while True:
            reply = await http.request(
                "GET", f"{self.url}?query={quote_plus(self.query(position))}"
            )
            data = reply.json_object("quickbooks")
            records: list[Record] = []
            rows = 0
            for _key, items in _collections(data.get("QueryResponse")):
                for item in items:
                    if isinstance(item, dict):
                        rows += 1
                        record = self.record(item)
                        if record is not None:
                            records.append(record)
            newest = max((r.version_ns for r in records if r.version_ns is not None), default=None)
            after_next: Position | None = None
            if rows >= self.page_size:
                since = position.since_ns
                skip = dig(position.token, "skip")
                skipped = skip if isinstance(skip, int) else 0
                if newest is not None and (since is None or newest > since):
                    after_next = Position(newest, None)
                else:  # the whole page shares one second: step through it by offset
                    after_next = Position(since, {"skip": skipped + rows})
            yield Page(records, position, after_next, newest)
            if after_next is None:
                return
            position = after_next

    def record(self, item: dict[str, Any]) -> Record | None:
        entity_id = to_string(item.get("Id"))
        if not entity_id:
            return None
        version = provider_time_ns(dig(item, "MetaData", "LastUpdatedTime"))
        return Record(self.entity_type, entity_id, dict(item), version)


class QuickBooksDeletes:
    """Deleted entities from change data capture. The first run starts "now", since deletes
    of records never seen need no event."""

    name = "cdc"
    period = 1

    def __init__(self, company: str, entities: list[str], context: StreamContext) -> None:
        self.url = f"{company}/cdc"
        self.entities = ",".join(entities)
        self.context = context

    async def pages(self, start: Position, http: ProviderHTTP) -> AsyncGenerator[Page, None]:
        now = self.context.now_ns()
        since = start.since_ns if start.since_ns is not None else now - CDC_FIRST_LOOKBACK
        position = Position(since, None)
        while True:
            since = max(since, now - CDC_MAX_AGE + 3_600 * 1_000_000_000)
            params = {"entities": self.entities, "changedSince": qbo_time(since)}
            reply = await http.request("GET", self.url, params=params)
            data = reply.json_object("quickbooks")
            records: list[Record] = []
            entries = 0
            newest: int | None = None
            for block in data.get("CDCResponse") or []:
                for response in dig(block, "QueryResponse") or []:
                    for key, items in _collections(response):
                        for item in items:
                            if not isinstance(item, dict):
                                continue
                            entries += 1
                            version = provider_time_ns(dig(item, "MetaData", "LastUpdatedTime"))
                            if version is not None:
                                newest = version if newest is None else max(newest, version)
                            if to_string(item.get("status")).lower() == "deleted":
                                records.append(
                                    Record(
                                        key.lower(),
                                        to_string(item.get("Id")),
                                        None,
                                        version,
                                        deleted=True,
                                    )
                                )
            if entries >= CDC_MAX_ENTRIES and newest is not None and newest > since:
                # The answer was cut at 1,000 changes: ask again from the newest one.
                following = Position(newest, None)
                yield Page(records, position, following, newest)
                position, since = following, newest
                continue
            # A complete answer covers everything up to the server's "time".
            server_time = provider_time_ns(data.get("time"))
            cursor = server_time if server_time is not None else newest
            yield Page(records, position, None, cursor)
            return
