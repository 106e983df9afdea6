"""Fake provider APIs on loopback ports, following each provider's documented requests.

Every fake checks bearer tokens (401 otherwise), serves an OAuth token endpoint at
``/oauth/token`` (refresh-token and client-credentials grants; optional rotation of refresh
tokens), records every request, and can be told to answer the next data requests with canned
failures (429 with ``Retry-After``, 500, …).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import parse_qs

import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from ensemble_tap.bus.embedded import free_port


def iso_ms(ns: int) -> str:
    """``2026-03-03T14:22:00.123Z`` (HubSpot, Notion)."""
    moment = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{(ns // 1_000_000) % 1000:03d}Z"


def at(text: str) -> int:
    """Epoch nanoseconds of an ISO time (``2026-03-03T14:22:00Z``)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, headers, media_type="application/json")


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    def form(self) -> dict[str, str]:
        return {key: values[0] for key, values in parse_qs(self.body.decode()).items()}


@dataclass
class OAuthServer:
    """An OAuth 2 token endpoint as the providers document it."""

    client_id: str = "client-id"
    client_secret: str = "client-secret"
    basic_auth: bool = False  # Intuit: client credentials as HTTP Basic, not in the form
    rotate: bool = False  # Intuit: every refresh returns a new refresh token
    refresh_tokens: set[str] = field(default_factory=lambda: {"refresh-1"})
    expires_in: int = 3600
    instance_url: str = ""
    calls: list[dict[str, str]] = field(default_factory=list)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(2))

    def handle(self, seen: Seen, server: FakeServer) -> Response:
        form = seen.form()
        self.calls.append(form)
        client = (form.get("client_id", ""), form.get("client_secret", ""))
        if self.basic_auth:
            auth = seen.headers.get("authorization", "")
            if not auth.startswith("Basic "):
                return json_response({"error": "invalid_client"}, 401)
            pair = base64.b64decode(auth[6:]).decode()
            client = tuple(pair.split(":", 1))  # type: ignore[assignment]
        if client != (self.client_id, self.client_secret):
            return json_response({"error": "invalid_client"}, 401)
        grant = form.get("grant_type")
        if grant == "refresh_token" and form.get("refresh_token") not in self.refresh_tokens:
            return json_response({"error": "invalid_grant"}, 400)
        if grant not in ("refresh_token", "client_credentials"):
            return json_response({"error": "unsupported_grant_type"}, 400)
        number = next(self._counter)
        token = f"access-{number}"
        server.tokens.add(token)
        reply: dict[str, Any] = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
        }
        if grant == "refresh_token":
            if self.rotate:
                self.refresh_tokens.discard(form["refresh_token"])
                fresh = f"refresh-{number}"
                self.refresh_tokens.add(fresh)
                reply["refresh_token"] = fresh
            else:
                reply["refresh_token"] = form["refresh_token"]
        if self.instance_url:
            reply["instance_url"] = self.instance_url
        return json_response(reply)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave the test runner's signals alone
        yield


class FakeServer:
    """Base of the fakes: auth, token endpoint, request log, failure injection."""

    name = "fake"

    def __init__(self, token: str = "token-1") -> None:
        self.port = free_port()
        self.tokens = {token} if token else set()
        self.oauth = OAuthServer()
        self.requests: list[Seen] = []
        self.failures: list[Response] = []
        self.down_status = 0  # while set, every data request gets this status
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def data_requests(self) -> list[Seen]:
        return [seen for seen in self.requests if seen.path != "/oauth/token"]

    def fail_next(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        self.failures.append(json_response(body if body is not None else {}, status, headers))

    def rate_limit_next(self, retry_after: str = "3") -> None:
        self.fail_next(429, {"message": "rate limited"}, {"Retry-After": retry_after})

    async def __aenter__(self) -> Self:
        config = uvicorn.Config(
            self.asgi,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                return self
            if self._task.done():
                await self._task
            await asyncio.sleep(0.01)
        raise RuntimeError(f"{self.name} fake did not start")

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        body = await request.body()
        seen = Seen(
            request.method,
            request.url.path,
            parse_qs(request.url.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        self.requests.append(seen)
        response = self.dispatch(seen)
        await response(scope, receive, send)

    def dispatch(self, seen: Seen) -> Response:
        if seen.path == "/oauth/token" and seen.method == "POST":
            return self.oauth.handle(seen, self)
        if self.failures:
            return self.failures.pop(0)
        if self.down_status:
            return json_response({"message": "unavailable"}, self.down_status)
        auth = seen.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return self.unauthorized()
        return self.route(seen)

    def unauthorized(self) -> Response:
        return json_response({"message": "invalid token"}, 401)

    def route(self, seen: Seen) -> Response:
        raise NotImplementedError
