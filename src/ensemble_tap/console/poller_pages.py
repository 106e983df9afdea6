"""Pollers: per target its health (last success, lag, failures against the budget, circuit)
and the actions run now, pause, resume and reset checkpoint (reset asks for confirmation)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ensemble_tap.console.context import admin_read, session_of, state_of
from ensemble_tap.console.gateway import AdminCall


async def pollers(request: Request) -> Response:
    session = session_of(request)
    answer = await admin_read(
        request, session, AdminCall(method="GET", path="/admin/poller-status")
    )
    return state_of(request).renderer.page(
        "pollers.html",
        title="Pollers",
        section="pollers",
        session=session,
        pollers=answer.body.get("pollers", []),
        generated_at=answer.body.get("generated_at", ""),
    )
