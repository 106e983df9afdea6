"""QuickBooks Online v3: the query endpoint (MetaData.LastUpdatedTime / Active / Id filters,
STARTPOSITION / MAXRESULTS paging) and change data capture (``status: Deleted``). Intuit's token
endpoint wants HTTP Basic client authentication and rotates refresh tokens.

As the real API: a query of a name-list entity (one with ``Active``) returns active records
only unless its WHERE clause asks for inactive ones (``Active IN (true, false)``), and an
``Active`` filter on any other entity is refused; MAXRESULTS is at most 1,000. Change data
capture returns deactivated records as normal entries (``Active: false``), refuses a
``changedSince`` older than 30 days, and holds at most 1,000 objects: Intuit does not say which
ones a full answer keeps; this fake keeps the first ones in request order (entity by entity,
oldest first), so the entities asked for last are the ones cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from tests.support.fakes import FakeServer, Seen, at, json_response

_QUERY = re.compile(
    r"^SELECT \* FROM (?P<entity>\w+)(?: WHERE (?P<where>.+?))?"
    r"(?: ORDERBY MetaData\.LastUpdatedTime)? STARTPOSITION (?P<start>\d+) MAXRESULTS (?P<max>\d+)$"
)
_SINCE = re.compile(r"^MetaData\.LastUpdatedTime >= '(?P<since>[^']+)'$")
_ACTIVE = re.compile(
    r"^Active (?:= (?P<one>true|false)|IN \((?P<many>(?:true|false)(?:, ?(?:true|false))*)\))$"
)
_IDS = re.compile(r"^Id IN \((?P<ids>'[^']*'(?:, ?'[^']*')*)\)$")
NAME_LISTS = frozenset(
    {"Account", "Class", "Customer", "Department", "Employee", "Item", "PaymentMethod",
     "TaxCode", "TaxRate", "Term", "Vendor"}
)  # fmt: skip
MAX_RESULTS = 1000
CDC_MAX_OBJECTS = 1000
CDC_MAX_AGE = 30 * 86_400 * 1_000_000_000


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

    @property
    def active(self) -> bool:
        return self.fields.get("Active") is not False


def _fault(kind: str, message: str) -> Response:
    return json_response(
        {"Fault": {"Error": [{"Message": message, "code": "4000"}], "type": kind}}, 400
    )


class FakeQuickBooks(FakeServer):
    name = "quickbooks"

    def __init__(self, token: str = "qb-token", realm: str = "realm-1") -> None:
        super().__init__(token)
        self.realm = realm
        self.oauth.basic_auth = True
        self.oauth.rotate = True
        self.entities: dict[str, dict[str, QuickBooksRecord]] = {}
        self.now_ns = at("2026-03-03T18:00:00Z")

    @property
    def company(self) -> str:
        return f"{self.url}/v3/company/{self.realm}"

    def put(self, entity: str, record_id: str, updated_ns: int, **fields: Any) -> None:
        self.entities.setdefault(entity, {})[record_id] = QuickBooksRecord(
            record_id, updated_ns, dict(fields)
        )

    def set_active(self, entity: str, record_id: str, updated_ns: int, active: bool) -> None:
        """What "delete" (make inactive) and "make active" do to a name-list record."""
        record = self.entities[entity][record_id]
        record.fields["Active"] = active
        record.updated_ns = updated_ns

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
            return _fault("ValidationFault", "unknown company")
        if parts[3] == "query" and seen.method == "GET":
            return self.query(seen.query["query"][0])
        if parts[3] == "cdc" and seen.method == "GET":
            return self.cdc(seen.query["entities"][0].split(","), seen.query["changedSince"][0])
        return _fault("ValidationFault", "unsupported operation")

    def _render(self, entity: str, record: QuickBooksRecord) -> dict[str, Any]:
        active = {"Active": True} if entity in NAME_LISTS else {}
        return {
            "Id": record.id,
            **active,
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
            return _fault("QueryParserError", f"cannot parse {text!r}")
        entity = match["entity"]
        rows = [r for r in self.entities.get(entity, {}).values() if not r.deleted]
        active = {True}  # name lists: active records only, unless the query asks
        for condition in match["where"].split(" AND ") if match["where"] else []:
            if since := _SINCE.match(condition):
                rows = [r for r in rows if r.updated_ns >= at(since["since"])]
            elif wanted := _ACTIVE.match(condition):
                if entity not in NAME_LISTS:
                    return _fault("QueryValidationError", "property 'Active' is not queryable")
                values = wanted["one"] or wanted["many"]
                active = {value.strip() == "true" for value in values.split(",")}
            elif ids := _IDS.match(condition):
                listed = {value.strip().strip("'") for value in ids["ids"].split(",")}
                rows = [r for r in rows if r.id in listed]
            else:
                return _fault("QueryParserError", f"unsupported condition {condition!r}")
        if entity in NAME_LISTS:
            rows = [r for r in rows if r.active in active]
        rows.sort(key=lambda r: (r.updated_ns, r.id))
        start, size = int(match["start"]), min(int(match["max"]), MAX_RESULTS)
        chunk = rows[start - 1 : start - 1 + size]
        response: dict[str, Any] = {"startPosition": start, "maxResults": len(chunk)}
        if chunk:
            response[entity] = [self._render(entity, r) for r in chunk]
        return json_response({"QueryResponse": response, "time": qbo_time(self.now_ns)})

    def cdc(self, entities: list[str], changed_since: str) -> Response:
        since = at(changed_since)
        if since < self.now_ns - CDC_MAX_AGE:
            return _fault("ValidationFault", "changedSince must be within the last 30 days")
        responses = []
        room = CDC_MAX_OBJECTS
        for entity in entities:
            changed = sorted(
                (r for r in self.entities.get(entity, {}).values() if r.updated_ns >= since),
                key=lambda r: (r.updated_ns, r.id),
            )[:room]
            room -= len(changed)
            items = [
                {"Id": r.id, "status": "Deleted", "domain": "QBO",
                 "MetaData": {"LastUpdatedTime": qbo_time(r.updated_ns)}}
                if r.deleted
                else self._render(entity, r)  # inactive records too, as normal entries
                for r in changed
            ]  # fmt: skip
            response: dict[str, Any] = {"startPosition": 1, "maxResults": len(items)}
            if items:
                response[entity] = items
            responses.append(response)
        return json_response(
            {"CDCResponse": [{"QueryResponse": responses}], "time": qbo_time(self.now_ns)}
        )
