"""QuickBooks Online polling (query API plus change data capture for deletes).

This module holds only the poller: QuickBooks webhooks go through the generic HMAC handler,
like any provider without a dedicated verifier.

Each configured entity is one stream read with ``GET /v3/company/{realm}/query?query=SELECT *
FROM {Entity} WHERE MetaData.LastUpdatedTime >= '…' ORDERBY MetaData.LastUpdatedTime
STARTPOSITION n MAXRESULTS m``. Offset paging shifts when a record changes mid-pass (one record
would be skipped), so each page restarts the query at the newest time seen (keyset paging);
records sharing that second are read again and recognised as unchanged. Only when a whole
page shares one second does the offset advance inside it.

Name-list entities (Customer, Vendor, Item, …) are never deleted, only made inactive, and a
query returns active records only unless it asks for both (``Active IN (true, false)``); their
queries do, so a deactivation is read like any other change and becomes an ``updated`` event
with ``changes.Active`` (the record still exists and can be made active again).

Deletes come from change data capture, ``GET /v3/company/{realm}/cdc?entities=…&changedSince=…``
(entries with ``"status": "Deleted"``). CDC has no upper time bound and an answer holds at most
1,000 objects, so a full answer may have left out any change. The checkpoint then stays where
it is until every entity has been read completely: entity by entity, and for an entity whose
own answer is still full (or when the checkpoint is older than CDC's 30 days), by looking up
the ids this state knows with the query API — a known record no longer found is deleted.
Intuit's token endpoint takes the client credentials as HTTP Basic auth, and it rotates
refresh tokens.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import format_time_ns
from ensemble_tap.providers.common import provider_time_ns, to_string
from ensemble_tap.providers.contract import (
    Page,
    PollError,
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

QUICKBOOKS_OBJECTS = ("Customer",)
QUICKBOOKS_PAGE_SIZE = 100
QUICKBOOKS_MAX_PAGE_SIZE = 1000
CDC_MAX_ENTRIES = 1000  # a CDC answer holds at most this many changes
CDC_MAX_AGE = 30 * 86_400 * 1_000_000_000  # changedSince may reach 30 days back
CDC_AGE_MARGIN = 3_600 * 1_000_000_000  # stay this far inside the 30 days
CDC_FIRST_LOOKBACK = 60 * 1_000_000_000
# Known ids looked up per query when a CDC answer was full (keeps the GET URL short).
RECONCILE_BATCH = 100
# Entities with an ``Active`` attribute, whose queries hide inactive records unless asked.
NAME_LIST_ENTITIES = frozenset(
    {"Account", "Class", "Customer", "Department", "Employee", "Item", "PaymentMethod",
     "TaxCode", "TaxRate", "Term", "Vendor"}
)  # fmt: skip
# Entities change data capture does not serve (Intuit's CDC documentation).
NO_CDC_ENTITIES = frozenset({"JournalCode", "TaxAgency", "TaxCode", "TaxRate", "TimeActivity"})
_METADATA_KEYS = frozenset({"startPosition", "maxResults", "totalCount"})


def qbo_time(ns: int) -> str:
    return format_time_ns(ns - ns % 1_000_000_000)


def where(entity: str, *conditions: str) -> str:
    """The WHERE clause of a query of ``entity``; name lists include inactive records."""
    terms = ["Active IN (true, false)"] if entity in NAME_LIST_ENTITIES else []
    terms.extend(conditions)
    return f" WHERE {' AND '.join(terms)}" if terms else ""


_REALM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class QuickBooksPoller:
    headers: Mapping[str, str] = {"Accept": "application/json"}
    basic_token_auth = True
    token_key = "secret"  # the name of the config key with the token  # nosec B105
    max_page_size = QUICKBOOKS_MAX_PAGE_SIZE
    required_keys = ("realm_id",)  # the company: every URL holds it
    # Entity names are spliced into queries: no quoting tricks possible.
    object_name = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,100}$")
    reads_fields = False

    def target_problems(self, settings: ProviderConfig) -> Iterator[str]:
        realm = settings.realm_id.strip()
        if realm and not _REALM_ID.match(realm):
            yield "realm_id must be letters, digits, '_' or '-'"

    def settings_warnings(self, settings: ProviderConfig) -> Iterator[tuple[str, str]]:
        return iter(())

    def streams(self, settings: ProviderConfig, context: StreamContext) -> list[Stream]:
        company = f"{base_url(settings)}/v3/company/{settings.realm_id.strip()}"
        page_size = min(settings.query_per_page or QUICKBOOKS_PAGE_SIZE, self.max_page_size)
        entities = objects_of(settings, QUICKBOOKS_OBJECTS)
        streams: list[Stream] = [QuickBooksQuery(company, name, page_size) for name in entities]
        captured = [name for name in entities if name not in NO_CDC_ENTITIES]
        if captured:
            streams.append(QuickBooksDeletes(company, captured, context))
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
        since = position.since_ns
        changed = () if since is None else (f"MetaData.LastUpdatedTime >= '{qbo_time(since)}'",)
        skip = dig(position.token, "skip")
        offset = skip if isinstance(skip, int) and skip > 0 else 0
        return (
            # QuickBooks' query language sent over HTTPS, not SQL: entities come from a fixed list.
            f"SELECT * FROM {self.entity}{where(self.entity, *changed)} ORDERBY "  # nosec B608
            f"MetaData.LastUpdatedTime STARTPOSITION {offset + 1} MAXRESULTS {self.page_size}"
        )

    async def pages(self, start: Position, http: PollHTTP) -> AsyncGenerator[Page, None]:
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


@dataclass(slots=True, frozen=True)
class _Changes:
    """One CDC answer: its deletes, how many entries it held, and the time it covers."""

    deletes: list[Record]
    entries: int
    time_ns: int | None  # the server's time, else the newest entry's

    @property
    def full(self) -> bool:
        """Held as many objects as an answer can: changes may have been left out."""
        return self.entries >= CDC_MAX_ENTRIES


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _split_token(token: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The state of a pass gone entity by entity, or None (a new pass)."""
    if token is None:
        return None
    cover, entity, after = token.get("cover"), token.get("entity"), token.get("after")
    if not isinstance(cover, int) or not isinstance(entity, str):
        return None
    split: dict[str, Any] = {"cover": cover, "entity": entity, "stale": token.get("stale") is True}
    if isinstance(after, str):
        split["after"] = after
    return split


class QuickBooksDeletes:
    """Deleted entities from change data capture. The first run starts "now", since deletes
    of records never seen need no event.

    A pass asks for every entity at once. When that answer is full, or the checkpoint is older
    than CDC reaches back, the pass goes on entity by entity (token ``cover``, ``entity``,
    ``after``, ``stale``), looking up known ids where CDC cannot help, and only its last page
    moves the checkpoint, to the time the first answer covered.
    """

    name = "cdc"
    period = 1

    def __init__(self, company: str, entities: Sequence[str], context: StreamContext) -> None:
        self.cdc_url = f"{company}/cdc"
        self.query_url = f"{company}/query"
        self.entities = list(entities)
        self.context = context
        # Sorted ids known for the entity being looked up, per (entity, cover) of the pass.
        self._known: tuple[tuple[str, int], list[str]] | None = None

    def oldest_since(self) -> int:
        return self.context.now_ns() - CDC_MAX_AGE + CDC_AGE_MARGIN

    async def pages(self, start: Position, http: PollHTTP) -> AsyncGenerator[Page, None]:
        token = _split_token(start.token)
        since = start.since_ns
        position = start
        if token is None or since is None:  # a new pass
            requested = self.context.now_ns()
            since = since if since is not None else requested - CDC_FIRST_LOOKBACK
            position = Position(since, None)
            oldest = self.oldest_since()
            stale = since < oldest
            since = max(since, oldest)
            answer = await self._changes(http, self.entities, since)
            if not answer.full and not stale:
                yield Page(answer.deletes, position, None, answer.time_ns)
                return
            # Changes may be missing from this answer (or older than CDC reaches): read entity
            # by entity, and only then move the checkpoint to the time this answer covers.
            cover = answer.time_ns if answer.time_ns is not None else requested
            token = {"cover": cover, "entity": self.entities[0], "stale": stale}
            following = Position(since, token)
            yield Page(answer.deletes, position, following)
            position = following
        while token is not None:
            cover = token["cover"]
            deletes, token = await self._step(http, since, token)
            if token is None:
                yield Page(deletes, position, None, cover)
                return
            following = Position(since, token)
            yield Page(deletes, position, following)
            position = following

    async def _step(
        self, http: PollHTTP, since: int, token: dict[str, Any]
    ) -> tuple[list[Record], dict[str, Any] | None]:
        """One request of a pass gone entity by entity: its deletes and the pass's next state
        (None: every entity has been read up to ``cover``)."""
        while True:
            entity = token["entity"]
            if entity not in self.entities:  # the configuration changed: start over
                token = {"cover": token["cover"], "entity": self.entities[0],
                         "stale": token["stale"]}  # fmt: skip
                continue
            after = token.get("after")
            if after is None:
                if token["stale"] or since < self.oldest_since():
                    token = {**token, "after": ""}  # CDC cannot reach back: look ids up
                    continue
                answer = await self._changes(http, [entity], since)
                if answer.full:  # this entity alone fills an answer: look ids up
                    return answer.deletes, {**token, "after": ""}
                return answer.deletes, self._next_entity(token)
            ids = await self._unchecked(entity, token["cover"], after)
            if ids:
                return await self._missing(http, entity, ids), {**token, "after": ids[-1]}
            following = self._next_entity(token)
            if following is None:
                return [], None
            token = following

    def _next_entity(self, token: dict[str, Any]) -> dict[str, Any] | None:
        index = self.entities.index(token["entity"]) + 1
        if index == len(self.entities):
            self._known = None
            return None
        return {"cover": token["cover"], "entity": self.entities[index], "stale": token["stale"]}

    async def _changes(self, http: PollHTTP, entities: list[str], since: int) -> _Changes:
        params = {"entities": ",".join(entities), "changedSince": qbo_time(since)}
        reply = await http.request("GET", self.cdc_url, params=params)
        data = reply.json_object("quickbooks")
        deletes: list[Record] = []
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
                        # A deactivated name-list record is a normal entry (Active false):
                        # the entity's query stream reports it.
                        if to_string(item.get("status")).lower() == "deleted":
                            entity_id = to_string(item.get("Id"))
                            deletes.append(
                                Record(key.lower(), entity_id, None, version, deleted=True)
                            )
        server_time = provider_time_ns(data.get("time"))
        return _Changes(deletes, entries, server_time if server_time is not None else newest)

    async def _unchecked(self, entity: str, cover: int, after: str) -> list[str]:
        """The next known ids of ``entity`` after ``after`` (the pass's keyset)."""
        key = (entity, cover)
        if self._known is None or self._known[0] != key:
            known = await self.context.known_entities([entity.lower()])
            self._known = (key, sorted(entity_id for _type, entity_id in known))
        ids = self._known[1]
        first = bisect.bisect_right(ids, after)
        return ids[first : first + RECONCILE_BATCH]

    async def _missing(self, http: PollHTTP, entity: str, ids: list[str]) -> list[Record]:
        """Deletes of the known ``ids`` the query API no longer finds (inactive name-list
        records are found: they still exist)."""
        listed = ", ".join(_quoted(entity_id) for entity_id in ids)
        text = (
            # QuickBooks' query language sent over HTTPS, not SQL: entities come from a fixed list.
            f"SELECT * FROM {entity}{where(entity, f'Id IN ({listed})')} "  # nosec B608
            f"STARTPOSITION 1 MAXRESULTS {len(ids)}"
        )
        reply = await http.request("GET", f"{self.query_url}?query={quote_plus(text)}")
        data = reply.json_object("quickbooks")
        response = data.get("QueryResponse")
        if not isinstance(response, dict) or "Fault" in data:
            # Never read "deleted" into an answer that is not a query result.
            raise PollError("quickbooks query answer without QueryResponse")
        found = {
            to_string(item.get("Id"))
            for _key, items in _collections(response)
            for item in items
            if isinstance(item, dict)
        }
        entity_type = entity.lower()
        return [
            Record(entity_type, entity_id, None, None, deleted=True)
            for entity_id in ids
            if entity_id not in found
        ]


PROVIDER = Provider("quickbooks", poller=QuickBooksPoller())
