"""Notion: ``POST /v1/search`` (sort by last_edited_time, start_cursor paging, only an
``object`` filter; trashed pages never returned) and ``GET /v1/pages/{id}``. Requests must
carry ``Notion-Version``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from tests.support.fakes import FakeServer, Seen, iso_ms, json_response


@dataclass
class NotionObject:
    id: str
    edited_ns: int
    object: str = "page"
    properties: dict[str, Any] = field(default_factory=dict)
    in_trash: bool = False


class FakeNotion(FakeServer):
    name = "notion"

    def __init__(self, token: str = "notion-token") -> None:
        super().__init__(token)
        self.items: dict[str, NotionObject] = {}

    def put(self, item_id: str, edited_ns: int, object: str = "page", **properties: Any) -> None:
        self.items[item_id] = NotionObject(item_id, edited_ns, object, dict(properties))

    def unauthorized(self) -> Response:
        return json_response(
            {"object": "error", "status": 401, "code": "unauthorized",
             "message": "API token is invalid."},
            401,
        )  # fmt: skip

    def _render(self, item: NotionObject) -> dict[str, Any]:
        return {
            "object": item.object,
            "id": item.id,
            "created_time": iso_ms(item.edited_ns),
            "last_edited_time": iso_ms(item.edited_ns),
            "in_trash": item.in_trash,
            "archived": item.in_trash,
            "parent": {"type": "workspace", "workspace": True},
            "properties": item.properties,
        }

    def route(self, seen: Seen) -> Response:
        if seen.headers.get("notion-version") != "2022-06-28":
            return json_response({"object": "error", "status": 400, "code": "missing_version"}, 400)
        if seen.path == "/v1/search" and seen.method == "POST":
            return self.search(seen.json() or {})
        parts = seen.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] in (["v1", "pages"], ["v1", "databases"]):
            item = self.items.get(parts[2])
            if item is None:
                return json_response({"object": "error", "status": 404,
                                      "code": "object_not_found"}, 404)  # fmt: skip
            return json_response(self._render(item))
        return json_response({"object": "error", "status": 404}, 404)

    def search(self, body: dict[str, Any]) -> Response:
        allowed = {"query", "sort", "filter", "start_cursor", "page_size"}
        if set(body) - allowed:
            return json_response({"object": "error", "status": 400,
                                  "code": "validation_error"}, 400)  # fmt: skip
        rule = body.get("filter")
        if rule is not None and (rule.get("property") != "object" or "value" not in rule):
            return json_response(
                {"object": "error", "status": 400, "code": "validation_error",
                 "message": "body.filter.property should be `object`"},
                400,
            )  # fmt: skip
        size = int(body.get("page_size", 100))
        if not 1 <= size <= 100:
            return json_response({"object": "error", "status": 400}, 400)
        rows = [i for i in self.items.values() if not i.in_trash]
        if rule is not None:
            rows = [i for i in rows if i.object == rule["value"]]
        sort = body.get("sort") or {"direction": "descending"}
        rows.sort(key=lambda i: (i.edited_ns, i.id), reverse=sort["direction"] == "descending")
        start = 0
        cursor = body.get("start_cursor")
        if cursor:
            ids = [i.id for i in rows]
            if cursor not in ids:
                return json_response({"object": "error", "status": 400,
                                      "code": "validation_error"}, 400)  # fmt: skip
            start = ids.index(cursor)
        chunk = rows[start : start + size]
        more = start + size < len(rows)
        return json_response(
            {
                "object": "list",
                "results": [self._render(i) for i in chunk],
                "has_more": more,
                "next_cursor": rows[start + size].id if more else None,
            }
        )
