"""HubSpot CRM v3: search (filterGroups, sorts, after paging, 10,000-result window) and the
archived object list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from tests.support.fakes import FakeServer, Seen, iso_ms, json_response

CURSOR = {"contacts": "lastmodifieddate"}
STANDARD_OBJECTS = frozenset({"deals", "contacts", "companies", "tickets"})


@dataclass
class HubSpotRecord:
    id: str
    modified_ns: int
    properties: dict[str, Any] = field(default_factory=dict)
    archived_ns: int | None = None


class FakeHubSpot(FakeServer):
    name = "hubspot"

    def __init__(self, token: str = "hubspot-token", window: int = 10_000) -> None:
        super().__init__(token)
        self.window = window
        self.objects: dict[str, dict[str, HubSpotRecord]] = {}

    def put(self, obj: str, record_id: str, modified_ns: int, **properties: Any) -> None:
        self.objects.setdefault(obj, {})[record_id] = HubSpotRecord(
            record_id, modified_ns, dict(properties)
        )

    def archive(self, obj: str, record_id: str, archived_ns: int) -> None:
        self.objects[obj][record_id].archived_ns = archived_ns

    def _properties(self, obj: str, record: HubSpotRecord) -> dict[str, Any]:
        cursor = CURSOR.get(obj, "hs_lastmodifieddate")
        return {
            "hs_object_id": record.id,
            cursor: iso_ms(record.modified_ns),
            **record.properties,  # a test may put odd values in the cursor property
        }

    def route(self, seen: Seen) -> Response:
        parts = seen.path.strip("/").split("/")
        if parts[:3] != ["crm", "v3", "objects"] or len(parts) < 4:
            return json_response({"message": "not found"}, 404)
        obj = parts[3]
        if obj not in STANDARD_OBJECTS and obj not in self.objects:
            return json_response(
                {"status": "error", "message": f"Unable to infer object type from: {obj}",
                 "category": "OBJECT_NOT_FOUND"},
                400,
            )  # fmt: skip
        if len(parts) == 5 and parts[4] == "search" and seen.method == "POST":
            return self.search(obj, seen.json() or {})
        if len(parts) == 4 and seen.method == "GET":
            return self.list_archived(obj, seen)
        return json_response({"message": "not found"}, 404)

    def search(self, obj: str, body: dict[str, Any]) -> Response:
        limit = int(body.get("limit", 10))
        if not 1 <= limit <= 200:
            return json_response({"status": "error", "category": "VALIDATION_ERROR"}, 400)
        offset = int(body.get("after") or 0)
        if offset + limit > self.window:
            return json_response(
                {"status": "error", "message": "search results beyond the window",
                 "category": "VALIDATION_ERROR"},
                400,
            )  # fmt: skip
        cursor = CURSOR.get(obj, "hs_lastmodifieddate")
        rows = [r for r in self.objects.get(obj, {}).values() if r.archived_ns is None]
        for group in body.get("filterGroups", []):
            for rule in group["filters"]:
                value = int(rule["value"])
                assert rule["propertyName"] == cursor, rule
                op = rule["operator"]
                rows = [
                    r
                    for r in rows
                    if (r.modified_ns // 1_000_000 >= value if op == "GTE" else
                        r.modified_ns // 1_000_000 > value)
                ]  # fmt: skip
        for sort in body.get("sorts", []):
            assert sort["propertyName"] == cursor
            rows.sort(key=lambda r: (r.modified_ns // 1_000_000, r.id),
                      reverse=sort["direction"] == "DESCENDING")  # fmt: skip
        wanted = body.get("properties")
        results = []
        for record in rows[offset : offset + limit]:
            props = self._properties(obj, record)
            if wanted:
                props = {k: v for k, v in props.items() if k in wanted or k == "hs_object_id"}
            results.append(
                {"id": record.id, "properties": props, "archived": False,
                 "updatedAt": iso_ms(record.modified_ns)}
            )  # fmt: skip
        reply: dict[str, Any] = {"total": len(rows), "results": results}
        if offset + limit < len(rows):
            reply["paging"] = {"next": {"after": str(offset + limit)}}
        return json_response(reply)

    def list_archived(self, obj: str, seen: Seen) -> Response:
        if seen.query.get("archived") != ["true"]:
            return json_response({"message": "only archived listing is faked"}, 400)
        limit = min(int(seen.query.get("limit", ["10"])[0]), 100)
        after = seen.query.get("after", [""])[0]
        rows = sorted(
            (r for r in self.objects.get(obj, {}).values() if r.archived_ns is not None),
            key=lambda r: int(r.id) if r.id.isdigit() else r.id,
        )
        start = int(after) if after else 0
        results = [
            {"id": r.id, "properties": self._properties(obj, r), "archived": True,
             "archivedAt": iso_ms(r.archived_ns or 0)}
            for r in rows[start : start + limit]
        ]  # fmt: skip
        reply: dict[str, Any] = {"results": results}
        if start + limit < len(rows):
            reply["paging"] = {"next": {"after": str(start + limit)}}
        return json_response(reply)
