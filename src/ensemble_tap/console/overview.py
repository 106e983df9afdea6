"""The overview: the last hour as charts (``GET /admin/metrics/history``) and what needs
attention now (dead letters, replay jobs, pollers). It refreshes itself every ``EVERY``
seconds (the history's resolution)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ensemble_tap.console.charts import draw_all
from ensemble_tap.console.context import admin_call, session_of, state_of
from ensemble_tap.console.gateway import AdminCall

EVERY = 10


async def overview(request: Request) -> Response:
    session = await session_of(request)
    letters = await admin_call(
        request, session, AdminCall(method="GET", path="/admin/dlq", query={"limit": "1"})
    )
    jobs = await admin_call(
        request, session, AdminCall(method="GET", path="/admin/replay-dlq", query={"limit": "1"})
    )
    polled = await admin_call(
        request, session, AdminCall(method="GET", path="/admin/poller-status")
    )
    pollers = polled.body.get("pollers", []) if polled.ok else []
    history = await admin_call(
        request, session, AdminCall(method="GET", path="/admin/metrics/history")
    )
    return state_of(request).renderer.page(
        "overview.html",
        title="Overview",
        section="overview",
        session=session,
        dlq=letters.body.get("summary", {}) if letters.ok else None,
        dlq_error="" if letters.ok else letters.error,
        jobs=jobs.body.get("summary", {}) if jobs.ok else None,
        pollers=pollers,
        charts=draw_all(history.body) if history.ok else [],
        history_error="" if history.ok else history.error,
        refresh=EVERY,
        unhealthy=[
            p for p in pollers if p.get("stuck") or p.get("circuit") not in (None, "closed")
        ],
    )
