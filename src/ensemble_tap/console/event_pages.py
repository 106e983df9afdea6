"""Events stored by the ClickHouse sink: search, and one delivery's trace (the request, the
CloudEvents it became, where they were published, the stored row)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ensemble_tap.console.context import admin_call, admin_read, session_of, state_of
from ensemble_tap.console.gateway import AdminCall
from ensemble_tap.console.times import instant, rfc3339

SEARCH_FIELDS = ("request_id", "id", "provider", "tenant", "entity_id", "type")
PAGE_SIZE = "50"


async def events(request: Request) -> Response:
    session = await session_of(request)
    query = request.query_params
    fields = {key: query.get(key, "").strip() for key in SEARCH_FIELDS}
    tz = query.get("tz", "")
    window = {
        "since": rfc3339(instant(query.get("since", ""), tz, "since")),
        "until": rfc3339(instant(query.get("until", ""), tz, "until")),
    }
    answer = await admin_call(
        request,
        session,
        AdminCall(
            method="GET",
            path="/admin/events",
            query={**fields, **window, "limit": PAGE_SIZE, "cursor": query.get("cursor", "")},
        ),
    )
    found: list[dict[str, Any]] = answer.body.get("events", []) if answer.ok else []
    next_cursor = answer.body.get("next_cursor", "") if answer.ok else ""
    next_url = ""
    if next_cursor:
        kept = {key: value for key, value in query.items() if key != "cursor" and value}
        next_url = "/console/events?" + urlencode({**kept, "cursor": next_cursor})
    return state_of(request).renderer.page(
        "events.html",
        title="Events",
        section="events",
        session=session,
        fields=fields,
        since=query.get("since", ""),
        until=query.get("until", ""),
        events=found,
        error="" if answer.ok else answer.error,
        next_url=next_url,
    )


async def trace(request: Request) -> Response:
    """One event and its delivery: every CloudEvent of the same request, newest first."""
    session = await session_of(request)
    event_id = request.path_params["event_id"]
    answer = await admin_read(
        request,
        session,
        AdminCall(method="GET", path="/admin/events", query={"id": event_id, "limit": "1"}),
    )
    rows = answer.body.get("events", [])
    row = rows[0] if rows else None
    siblings: list[dict[str, Any]] = []
    if row is not None and row.get("request_id"):
        same_request = await admin_read(
            request,
            session,
            AdminCall(
                method="GET",
                path="/admin/events",
                query={"request_id": row["request_id"], "limit": "100"},
            ),
        )
        siblings = same_request.body.get("events", [])
    return state_of(request).renderer.page(
        "trace.html",
        404 if row is None else 200,
        title=f"Event {event_id}",
        section="events",
        session=session,
        event_id=event_id,
        row=row,
        siblings=siblings,
    )
