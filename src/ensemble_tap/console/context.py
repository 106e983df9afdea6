"""What every console handler works with: the console's state, the signed-in session, a
checked form post, and admin calls whose refusals become the right page."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from starlette.requests import Request

from ensemble_tap.config.models import ServerConfig
from ensemble_tap.console.gateway import AdminAnswer, AdminCall, AdminGateway
from ensemble_tap.console.render import Renderer
from ensemble_tap.console.security import (
    SESSION_COOKIE,
    TrustedProxies,
    cross_site,
    tokens_match,
)
from ensemble_tap.console.sessions import Session, SessionStore

MAX_FORM_BYTES = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# What a token grants, asked of the admin API's authenticator (injected by app.py).
ScopesOf = Callable[[str], frozenset[str]]


@dataclass(slots=True, frozen=True, kw_only=True)
class ConsoleState:
    server: ServerConfig
    sessions: SessionStore
    gateway: AdminGateway
    renderer: Renderer
    scopes_of: ScopesOf
    proxies: TrustedProxies


class SignInNeeded(Exception):
    """No live session: the answer is the sign-in page (then back to ``next_path``)."""

    def __init__(self, next_path: str = "/console") -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Refused(Exception):
    """The answer is an error page with ``status`` and ``message``."""

    def __init__(self, status: int, message: str, *, back: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.back = back  # the page the error page links back to (the overview without)


def state_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


async def session_of(request: Request) -> Session:
    session = await state_of(request).sessions.get(request.cookies.get(SESSION_COOKIE, ""))
    if session is None:
        raise SignInNeeded(back_here(request))
    return session


def back_here(request: Request) -> str:
    """Where to return after signing in: this page (a form post starts over)."""
    if request.method != "GET":
        return "/console"
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def form_of(request: Request) -> dict[str, str]:
    """A urlencoded form (the console's only kind); the last value of a repeated field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Refused(413, "form too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def posted(request: Request) -> tuple[Session, dict[str, str]]:
    """The session and form of a POST from this site's own page; else Refused (403)."""
    state = state_of(request)
    why = cross_site(request, state.proxies)
    if why:
        raise Refused(403, f"cross-site request refused ({why})")
    form = await form_of(request)
    session = await state.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
    if session is None:
        raise SignInNeeded()
    if not tokens_match(form.get("csrf", ""), session.csrf):
        raise Refused(403, "the form's CSRF token is missing or stale: reload the page")
    return session, form


def reason_of(form: dict[str, str]) -> str:
    """The operator's reason, on one line (it travels as a header); required."""
    reason = _CONTROL.sub(" ", form.get("reason", "")).strip()
    if not reason:
        raise Refused(400, "a reason is required: it is kept in the audit log")
    return reason[:500]


async def admin_call(request: Request, session: Session, call: AdminCall) -> AdminAnswer:
    """``call`` with the session's token. A token that no longer signs in (rotated) ends
    the session; one that lacks the scope is a 403 page; other refusals are returned."""
    state = state_of(request)
    answer = await state.gateway.call(request, session.token, call)
    if answer.status == 401:
        if not state.scopes_of(session.token):
            await state.sessions.end(request.cookies.get(SESSION_COOKIE, ""))
            raise SignInNeeded(back_here(request))
        raise Refused(403, "your admin token does not grant this action")
    if answer.status == 403:
        raise Refused(403, answer.error)
    return answer


async def admin_read(request: Request, session: Session, call: AdminCall) -> AdminAnswer:
    """A read the page cannot do without: any refusal is the error page."""
    answer = await admin_call(request, session, call)
    if not answer.ok:
        raise Refused(answer.status, answer.error)
    return answer


def quoted(segment: str) -> str:
    return quote(segment, safe="")
