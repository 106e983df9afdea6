"""Sign-in and sign-out.

Signing in is an admin call with the presented token (``GET /admin/poller-status``, which
every token slot may read), so the CIDR allowlist, rate limits and audit log see each
attempt. The sign-in form is protected by a double-submit token (a short-lived cookie and
the same value in the form), every later form by the session's own token.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ensemble_tap.console.context import Refused, form_of, posted, state_of
from ensemble_tap.console.gateway import AdminCall
from ensemble_tap.console.render import seconds
from ensemble_tap.console.security import (
    SECURITY_HEADERS,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_COOKIE_TTL,
    clear_cookie,
    cross_site,
    served_over_tls,
    set_cookie,
    tokens_match,
)

PROBE = AdminCall(method="GET", path="/admin/poller-status")


def safe_next(path: str) -> str:
    """Only a console page of this site (never another host, ``//evil`` or a scheme)."""
    if path.startswith("/console") and not path.startswith("//") and "\\" not in path:
        return path
    return "/console"


def sign_in_page(
    request: Request, *, error: str = "", status: int = 200, next_path: str = ""
) -> Response:
    state = state_of(request)
    value = secrets.token_urlsafe(32)
    response = state.renderer.page(
        "login.html",
        status,
        title="Sign in",
        error=error,
        sign_in_csrf=value,
        next_path=safe_next(next_path or request.query_params.get("next", "")),
        ttl=seconds(state.server.console_session_ttl),
    )
    set_cookie(
        response,
        name=SIGN_IN_COOKIE,
        value=value,
        max_age=SIGN_IN_COOKIE_TTL,
        secure=served_over_tls(request, state.proxies),
    )
    return response


async def sign_in_form(request: Request) -> Response:
    return sign_in_page(request)


async def sign_in(request: Request) -> Response:
    state = state_of(request)
    why = cross_site(request, state.proxies)
    if why:
        raise Refused(403, f"cross-site request refused ({why})")
    form = await form_of(request)
    next_path = safe_next(form.get("next", ""))
    if not tokens_match(form.get("csrf", ""), request.cookies.get(SIGN_IN_COOKIE, "")):
        return sign_in_page(
            request, error="The sign-in form expired: try again.", status=403, next_path=next_path
        )
    token = form.get("token", "").strip()
    answer = await state.gateway.call(request, token, PROBE) if token else None
    if answer is None or answer.status == 401:
        return sign_in_page(
            request, error="That token is not an admin token.", status=401, next_path=next_path
        )
    if not answer.ok:
        return sign_in_page(request, error=answer.error, status=answer.status, next_path=next_path)
    session = await state.sessions.create(token, state.scopes_of(token))
    secure = served_over_tls(request, state.proxies)
    response = RedirectResponse(next_path, status_code=303, headers=SECURITY_HEADERS)
    set_cookie(
        response,
        name=SESSION_COOKIE,
        value=session.id,
        max_age=int(state.server.console_session_ttl),
        secure=secure,
    )
    clear_cookie(response, SIGN_IN_COOKIE, secure=secure)
    return response


async def sign_out(request: Request) -> Response:
    _, _ = await posted(request)
    state = state_of(request)
    await state.sessions.end(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/console/login", status_code=303, headers=SECURITY_HEADERS)
    clear_cookie(response, SESSION_COOKIE, secure=served_over_tls(request, state.proxies))
    return response
