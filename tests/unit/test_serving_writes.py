"""serving.TapHttpProtocol sends a small response's head and body in ONE transport write.

uvicorn writes the head at ``http.response.start`` and the body at ``http.response.body``;
``CoalescedWrites`` joins them (one TCP segment per webhook answer on loopback). The
protocol subclasses uvicorn's private httptools protocol (pyproject pins uvicorn's minor
version): this test fails when an upgrade, or a change here, splits the answer again.
The connection is a real socket pair; only the server transport's writes are recorded.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from ensemble_tap.asgi_types import Receive, Scope, Send
from ensemble_tap.config.models import ServerConfig
from ensemble_tap.http_connections import ConnectionGuard, ConnectionLimits
from ensemble_tap.observability import Metrics
from ensemble_tap.serving import TapHttpProtocol

BODY = b'{"status":"accepted"}\n'


async def small_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """A webhook-sized answer, sent as the ingress sends it: start, then the whole body."""
    assert scope["type"] == "http"
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


class RecordingTransport:
    """The server side's real transport, with every ``write`` recorded."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def test_head_and_body_of_a_small_response_leave_in_one_write() -> None:
    guard = ConnectionGuard(ConnectionLimits.of(ServerConfig()), Metrics())
    recorded: list[RecordingTransport] = []

    class Recording(TapHttpProtocol.bound_to(guard)):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            recorded.append(RecordingTransport(transport))
            super().connection_made(recorded[-1])

    config = uvicorn.Config(small_answer, lifespan="off", ws="none", log_config=None)
    config.load()
    state = ServerState()
    server_side, client_side = socket.socketpair()
    loop = asyncio.get_running_loop()
    await loop.connect_accepted_socket(
        lambda: Recording(config=config, server_state=state, app_state={}), server_side
    )
    reader, writer = await asyncio.open_connection(sock=client_side)
    try:
        writer.write(b"POST /webhooks/acme HTTP/1.1\r\nHost: tap\r\nContent-Length: 2\r\n\r\n{}")
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(len(BODY))
    finally:
        writer.close()
        await writer.wait_closed()
        await _connection_sweeper_done()

    assert head.startswith(b"HTTP/1.1 202 ")
    assert body == BODY
    assert recorded[0].writes == [head + body]


async def _connection_sweeper_done() -> None:
    """The guard's sweeper ends once the connection is gone (within one sweep interval)."""
    sweepers = [t for t in asyncio.all_tasks() if t.get_name() == "tap-connection-sweeper"]
    await asyncio.gather(*sweepers)
