"""QuickBooks Online v3: the query endpoint (MetaData.LastUpdatedTime filter, STARTPOSITION /
MAXRESULTS paging) and change data capture (``status: Deleted``). Intuit's token endpoint
wants HTTP Basic client authentication and rotates refresh tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from tests.support.fakes import FakeServer, Seen, at, json_response

_QUERY = re.compile(
    r"^SELECT \* FROM (?P<entity>\w+)"
    r"(?: WHERE MetaData\.LastUpdatedTime >= '(?P<since>[^']+)')?"
    r" ORDERBY MetaData\.LastUpdatedTime STARTPOSITION (?P<start>\d+) MAXRESULTS (?P<max>\d+)$"
)


def qbo_time(ns: int) -> str:
    """Intuit's format: local time with offset (``2026-03-03T08:20:00-08:00``)."""
    moment = datetime.fromtimestamp(ns // 1_000_000_000 - 8 * 3600, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}-08:00"


@dataclass
class QuickBooksRecord:
    id: str
    updated_ns: int
    fields: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False


class FakeQuickBooks(FakeServer):
    name = "quickbooks"

    def __init__(self, token: str = "qb-token", realm: str = "realm-1") -> None:
        super().__init__(token)
        self.realm = realm
        self.oauth.basic_auth = True
        self.oauth.rotate = True
        self.entities: dict[str, dict[str, QuickBooksRecord]] = {}
        self.now_ns = at("2026-03-03T18:00:00Z")

    def put(self, entity: str, record_id: str, updated_ns: int, **fields: Any) -> None:
        self.entities.setdefault(entity, {})[record_id] = QuickBooksRecord(
            record_id, updated_ns, dict(fields)
        )

    def delete(self, entity: str, record_id: str, updated_ns: int) -> None:
        record = self.entities[entity][record_id]
        record.deleted = True
        record.updated_ns = updated_ns

    def unauthorized(self) -> Response:
        return json_response(
            {"fault": {"error": [{"message": "AuthenticationFailed", "code": "3200"}],
                       "type": "AUTHENTICATION"}},
            401,
        )  # fmt: skip

    def route(self, seen: Seen) -> Response:
        parts = seen.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["v3", "company"] or parts[2] != self.realm:
            return json_response({"fault": {"type": "ValidationFault"}}, 400)
        if parts[3] == "query" and seen.method == "GET":
            return self.query(seen.query["query"][0])
        if parts[3] == "cdc" and seen.method == "GET":
            return self.cdc(seen.query["entities"][0].split(","), seen.query["changedSince"][0])
        return json_response({"fault": {"type": "ValidationFault"}}, 400)

    def _render(self, entity: str, record: QuickBooksRecord) -> dict[str, Any]:
        return {
            "Id": record.id,
            **record.fields,
            "domain": "QBO",
            "sparse": False,
            "MetaData": {
                "CreateTime": qbo_time(record.updated_ns),
                "LastUpdatedTime": qbo_time(record.updated_ns),
            },
        }

    def query(self, text: str) -> Response:
        match = _QUERY.match(text)
        if match is None:
            return json_response({"fault": {"type": "ValidationFault", "q": text}}, 400)
        entity = match["entity"]
        rows = [r for r in self.entities.get(entity, {}).values() if not r.deleted]
        if match["since"]:
            since = at(match["since"])
            rows = [r for r in rows if r.updated_ns >= since]
        rows.sort(key=lambda r: (r.updated_ns, r.id))
        start, size = int(match["start"]), int(match["max"])
        chunk = rows[start - 1 : start - 1 + size]
        response: dict[str, Any] = {"startPosition": start, "maxResults": len(chunk)}
        if chunk:
            response[entity] = [self._render(entity, r) for r in chunk]
        return json_response({"QueryResponse": response, "time": qbo_time(self.now_ns)})

    def cdc(self, entities: list[str], changed_since: str) -> Response:
        since = at(changed_since)
        responses = []
        for entity in entities:
            changed = sorted(
                (r for r in self.entities.get(entity, {}).values() if r.updated_ns >= since),
                key=lambda r: r.updated_ns,
            )
            items = [
                {"Id": r.id, "status": "Deleted", "domain": "QBO",
                 "MetaData": {"LastUpdatedTime": qbo_time(r.updated_ns)}}
                if r.deleted
                else self._render(entity, r)
                for r in changed
            ]  # fmt: skip
            responses.append({entity: items, "startPosition": 1, "maxResults": len(items)})
        return json_response(
            {"CDCResponse": [{"QueryResponse": responses}], "time": qbo_time(self.now_ns)}
        )
