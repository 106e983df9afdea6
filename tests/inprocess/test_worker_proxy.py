"""A worker's proxy to the primary (``workers/proxy.py``) against a real uvicorn server on a
unix socket: answers are relayed with their status, headers and length, and an endless
answer (the live tail's server-sent events) is relayed as it arrives, until the client
goes, which ends the primary's stream too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from ensemble_tap.asgi_types import Receive, Scope, Send
from ensemble_tap.workers.proxy import PrimaryProxy
from tests.support.waiting import eventually


class Primary:
    """The primary's side: ``/json`` answers at once; ``/stream`` sends an event, then
    another every 50 ms until its client goes."""

    def __init__(self) -> None:
        self.stream_ended = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/json":
            body = b'{"ok":true}'
            headers = [(b"content-type", b"application/json"), (b"x-answer", b"primary")]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": 201, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
        assert (await receive())["type"] == "http.request"  # no body; next: the disconnect

        async def disconnect() -> None:
            await receive()

        gone = asyncio.create_task(disconnect())
        while not gone.done():
            await send({"type": "http.response.body", "body": b": tick\n\n", "more_body": True})
            await asyncio.wait((gone,), timeout=0.05)
        self.stream_ended.set()


@pytest.fixture
async def primary(tmp_path: Path) -> AsyncIterator[tuple[Primary, Path]]:
    app = Primary()
    socket_path = tmp_path / "primary.sock"
    config = uvicorn.Config(
        app, uds=str(socket_path), lifespan="off", log_config=None, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, 10, interval=0.01, what="the primary serving")
    yield app, socket_path
    server.should_exit = True
    await serving


def request(path: str) -> Scope:
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": [(b"host", b"tap")],
            "client": ("10.0.0.9", 1)}  # fmt: skip


class Client:
    """The worker's side of the client: what it was sent, and whether it is still there."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self._requested = False

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def test_an_answer_is_relayed_with_its_status_headers_and_length(
    primary: tuple[Primary, Path],
) -> None:
    _, socket_path = primary
    proxy, client = PrimaryProxy(socket_path), Client()
    try:
        await proxy(request("/json"), client.receive, client.send)  # type: ignore[arg-type]
    finally:
        await proxy.close()
    start = client.sent[0]
    headers = dict(start["headers"])
    assert start["status"] == 201
    assert headers[b"x-answer"] == b"primary" and headers[b"content-length"] == b"11"
    assert client.body() == b'{"ok":true}'
    assert client.sent[-1].get("more_body", False) is False


async def test_a_stream_is_relayed_as_it_arrives_until_the_client_goes(
    primary: tuple[Primary, Path],
) -> None:
    app, socket_path = primary
    proxy, client = PrimaryProxy(socket_path), Client()
    relaying = asyncio.create_task(proxy(request("/stream"), client.receive, client.send))  # type: ignore[arg-type]
    try:

        def three_events() -> bool:
            return client.body().count(b": tick") >= 3

        await eventually(three_events, 5, interval=0.01, what="three events, the stream open")
        assert not relaying.done()
        assert b"content-length" not in dict(client.sent[0]["headers"])
        client.gone.set()
        async with asyncio.timeout(5):
            await relaying
        async with asyncio.timeout(5):
            await app.stream_ended.wait()  # the primary saw its client go too
    finally:
        relaying.cancel()
        await proxy.close()
