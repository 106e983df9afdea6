"""Pollers: per target its health (last success, lag, failures against the budget, circuit,
paused or not) and the actions run now, pause, resume and reset checkpoint. Each action is
``POST /admin/pollers/{provider}/{tenant}/{action}`` with the operator's reason; reset asks
for confirmation on a page of its own first."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ensemble_tap.console.context import (
    Refused,
    admin_call,
    admin_read,
    posted,
    quoted,
    reason_of,
    session_of,
    state_of,
)
from ensemble_tap.console.gateway import AdminCall
from ensemble_tap.console.security import SECURITY_HEADERS

ACTIONS = ("run", "pause", "resume", "reset")
# What the notice after an action says it did.
DONE = {
    "run": "polls now (its next cycle starts at once)",
    "pause": "is paused (a cycle in flight finishes)",
    "resume": "is resumed",
    "reset": "forgot its checkpoints: its next cycle reads from the initial lookback",
}
# The admin API's path segment of a target without a tenant.
NO_TENANT = "-"


async def pollers(request: Request) -> Response:
    session = await session_of(request)
    answer = await admin_read(
        request, session, AdminCall(method="GET", path="/admin/poller-status")
    )
    query = request.query_params
    did = query.get("did", "")
    notice = ""
    if did in DONE:
        notice = f"{query.get('provider', '')} / {query.get('tenant', '')} {DONE[did]}."
    return state_of(request).renderer.page(
        "pollers.html",
        title="Pollers",
        section="pollers",
        session=session,
        pollers=answer.body.get("pollers", []),
        generated_at=answer.body.get("generated_at", ""),
        notice=notice,
        no_tenant=NO_TENANT,
    )


async def act(request: Request) -> Response:
    """One action on one target. ``reset`` without ``confirm`` is the confirmation page."""
    session, form = await posted(request)
    provider = request.path_params["provider"]
    tenant = request.path_params["tenant"]
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise Refused(404, "no such poller action")
    reason = reason_of(form)
    if action == "reset" and form.get("confirm", "") != "yes":
        return state_of(request).renderer.page(
            "poller_reset.html",
            title=f"Reset {provider} / {tenant}?",
            section="pollers",
            session=session,
            provider=provider,
            tenant=tenant,
            reason=reason,
        )
    answer = await admin_call(
        request,
        session,
        AdminCall(
            method="POST",
            path=f"/admin/pollers/{quoted(provider)}/{quoted(tenant)}/{action}",
            reason=reason,
        ),
    )
    if not answer.ok:
        raise Refused(answer.status, answer.error, back="/console/pollers")
    done = urlencode({"did": action, "provider": provider, "tenant": tenant})
    return RedirectResponse(f"/console/pollers?{done}", status_code=303, headers=SECURITY_HEADERS)
