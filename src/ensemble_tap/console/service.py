"""``build_console``: the console's ASGI app, served by the admin role beside ``/admin``.

Its pages read and act through the admin app it is given (``gateway.py``); ``app.py`` wires
both and tells it what a token grants (``scopes_of``), so the console never imports the
admin package.
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ensemble_tap.asgi_types import ASGIApp
from ensemble_tap.config.models import ServerConfig
from ensemble_tap.console import (
    auth,
    event_pages,
    overview,
    poller_pages,
    replay_pages,
    tail_pages,
)
from ensemble_tap.console.context import ConsoleState, Refused, ScopesOf, SignInNeeded, state_of
from ensemble_tap.console.gateway import AdminGateway
from ensemble_tap.console.render import Renderer
from ensemble_tap.console.security import SECURITY_HEADERS, SESSION_COOKIE, TrustedProxies
from ensemble_tap.console.sessions import MemorySessions, SessionStore, SessionsUnavailable

STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}


def build_console(
    *,
    admin: ASGIApp,
    server: ServerConfig,
    scopes_of: ScopesOf,
    sessions: SessionStore | None = None,
) -> Starlette:
    """The console over ``admin``; ``sessions`` shared by the admin replicas, or else this
    process's own."""
    renderer = Renderer()
    renderer.env.globals["reason_min"] = server.admin_replay_reason_min_length
    app = Starlette(
        routes=[
            Route("/console", overview.overview),
            Route("/console/login", auth.sign_in_form, methods=["GET"]),
            Route("/console/login", auth.sign_in, methods=["POST"]),
            Route("/console/logout", auth.sign_out, methods=["POST"]),
            Route("/console/dlq", replay_pages.dead_letters),
            Route("/console/dlq/{record}", replay_pages.dead_letter),
            Route("/console/replay", replay_pages.create_replay, methods=["POST"]),
            Route("/console/jobs", replay_pages.jobs),
            Route("/console/jobs/{job_id}", replay_pages.job),
            Route("/console/jobs/{job_id}/cancel", replay_pages.cancel_job, methods=["POST"]),
            Route("/console/pollers", poller_pages.pollers),
            Route(
                "/console/pollers/{provider}/{tenant}/{action}",
                poller_pages.act,
                methods=["POST"],
            ),
            Route("/console/events", event_pages.events),
            Route("/console/events/{event_id}", event_pages.trace),
            Route("/console/tail", tail_pages.tail),
            Route("/console/tail/stream", tail_pages.stream),
            Route("/console/static/{name}", static),
        ],
        exception_handlers={
            SignInNeeded: sign_in_needed,
            Refused: refused,
            SessionsUnavailable: sessions_unavailable,
            404: not_found,
            405: not_allowed,
        },
    )
    app.state.console = ConsoleState(
        server=server,
        sessions=MemorySessions(server.console_session_ttl) if sessions is None else sessions,
        gateway=AdminGateway(admin, server),
        renderer=renderer,
        scopes_of=scopes_of,
        proxies=TrustedProxies(server.trusted_proxies),
    )
    return app


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        raise Refused(404, "no such file")
    body = resources.files("ensemble_tap.console").joinpath("static", name).read_bytes()
    headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"}
    return Response(body, media_type=STATIC[name], headers=headers)


async def sign_in_needed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInNeeded)
    target = "/console/login"
    if exc.next_path != "/console":
        target += "?" + urlencode({"next": exc.next_path})
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    if request.cookies.get(SESSION_COOKIE):  # a session that ended: forget its cookie
        response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    state = state_of(request)
    try:
        session = await state.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
    except SessionsUnavailable:
        session = None
    return state.renderer.page(
        "error.html",
        exc.status,
        title="Refused" if exc.status in (401, 403) else "Could not do that",
        session=session,
        status=exc.status,
        message=exc.message,
        back=exc.back,
    )


async def sessions_unavailable(request: Request, exc: Exception) -> Response:
    return await refused(request, Refused(503, f"{exc}: try again in a moment"))


async def not_found(request: Request, exc: Exception) -> Response:
    return await refused(request, Refused(404, "no such console page"))


async def not_allowed(request: Request, exc: Exception) -> Response:
    return await refused(request, Refused(405, "method not allowed"))
