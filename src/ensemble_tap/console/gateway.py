"""Every console page and action is an admin API call, made in-process.

The call goes through the admin ASGI app as a request of the operator's own: the browser's
address (and, behind a trusted proxy, its forwarded headers and client certificate header),
the session's token in ``X-Admin-Token`` and the operator's reason in ``X-Admin-Reason``. So
the admin API's CIDR allowlist, rate limits, scopes and audit log apply unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request

from ensemble_tap.asgi_types import ASGIApp, Message, Receive, Scope, Send
from ensemble_tap.config.models import ServerConfig

# The browser's headers that the admin guards read (the requester address behind a trusted
# proxy, the client certificate) or log (the user agent).
_PASSED_ON = ("user-agent", "x-forwarded-for", "x-real-ip", "x-forwarded-proto")


@dataclass(slots=True, frozen=True)
class AdminAnswer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        return str(self.body.get("error", "")) or f"admin API answered {self.status}"


@dataclass(slots=True, frozen=True, kw_only=True)
class AdminCall:
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    idempotency_key: str = ""


class AdminGateway:
    def __init__(self, admin: ASGIApp, server: ServerConfig) -> None:
        self._admin = admin
        self._passed_on = (*_PASSED_ON, server.admin_mtls_client_cert_header.lower())

    async def call(self, request: Request, token: str, call: AdminCall) -> AdminAnswer:
        """``call`` as the browser's request with ``token``; its status and JSON body."""
        scope = self._scope(request, token, call)
        done = asyncio.Event()
        status = 500
        chunks: list[bytes] = []
        sent_request = False

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        await self._admin(scope, receive, send)
        done.set()
        try:
            body = orjson.loads(b"".join(chunks)) if chunks else {}
        except orjson.JSONDecodeError:
            body = {}
        return AdminAnswer(status, body if isinstance(body, dict) else {})

    async def stream(
        self, request: Request, token: str, call: AdminCall, *, receive: Receive, send: Send
    ) -> None:
        """Relay a streaming admin answer (server-sent events) to the browser as it comes."""
        await self._admin(self._scope(request, token, call), receive, send)

    def _scope(self, request: Request, token: str, call: AdminCall) -> Scope:
        headers = [
            (name.encode(), request.headers[name].encode("latin-1"))
            for name in self._passed_on
            if name in request.headers
        ]
        headers.append((b"host", request.headers.get("host", "console").encode("latin-1")))
        headers.append((b"x-admin-token", token.encode()))
        if call.reason:
            headers.append((b"x-admin-reason", call.reason.encode()))
        if call.idempotency_key:
            headers.append((b"idempotency-key", call.idempotency_key.encode()))
        query = urlencode({k: v for k, v in call.query.items() if v}).encode()
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": call.method,
            "scheme": request.url.scheme,
            "path": call.path,
            "raw_path": call.path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": request.scope.get("client"),
            "server": request.scope.get("server"),
        }
