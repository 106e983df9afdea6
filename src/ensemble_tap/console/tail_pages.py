"""The live tail: events as they are published, filtered by provider, tenant and type.

The page's script opens ``/console/tail/stream`` (an ``EventSource``), which relays the admin
API's ``GET /admin/events/stream`` with the session's token: the browser holds only its
session cookie, never the token. Without script the page says so and links to the search of
stored events with the same filters.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ensemble_tap.asgi_types import Message, Receive, Scope, Send
from ensemble_tap.console.context import session_of, state_of
from ensemble_tap.console.gateway import AdminCall, AdminGateway
from ensemble_tap.console.sessions import Session

TAIL_FILTERS = ("provider", "tenant", "type")
# How many events the page keeps on screen (the oldest go first).
SHOWN = 200


def filters_of(request: Request) -> dict[str, str]:
    return {key: request.query_params.get(key, "").strip()[:200] for key in TAIL_FILTERS}


async def tail(request: Request) -> Response:
    session = await session_of(request)
    filters = filters_of(request)
    chosen = {key: value for key, value in filters.items() if value}
    return state_of(request).renderer.page(
        "tail.html",
        title="Live tail",
        section="tail",
        session=session,
        filters=filters,
        stream_url="/console/tail/stream" + (f"?{urlencode(chosen)}" if chosen else ""),
        search_url="/console/events" + (f"?{urlencode(chosen)}" if chosen else ""),
        shown=SHOWN,
    )


async def stream(request: Request) -> Response:
    """The admin API's event stream, relayed as it comes (its status too: a refusal reaches
    the page's script as a failed connection)."""
    session = await session_of(request)
    call = AdminCall(method="GET", path="/admin/events/stream", query=filters_of(request))
    return Relayed(state_of(request).gateway, request, session, call)


class Relayed(Response):
    """A response that is the admin app's own answer to ``call``, streamed through."""

    def __init__(
        self, gateway: AdminGateway, request: Request, session: Session, call: AdminCall
    ) -> None:
        super().__init__()
        self._gateway = gateway
        self._request = request
        self._session = session
        self._call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self._gateway.stream(
            self._request, self._session.token, self._call, receive=receive, send=hardened
        )
