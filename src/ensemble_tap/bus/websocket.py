"""nats-py's WebSocket transport (``ws://``/``wss://`` servers), with four fixes for nats-py
2.16 on aiohttp 3.14:

* the handshake is bounded by ``nats.connect_timeout``: nats-py hands that value to aiohttp as
  the close timeout (a deprecated float that never bounded the handshake), so a server that
  accepts the TCP connection and never answers held a connect attempt for aiohttp's
  5-minute default;
* a failed handshake (an HTTP error, a port that is not a WebSocket listener) raises a
  ConnectionError, which nats-py reports through the error callback and retries like a
  refused TCP connection, instead of an aiohttp exception that ends ``connect``;
* the commands of one flush go out as one WebSocket message, not one message (and one await)
  per command. The server reads the stream of messages as one byte stream, as over TCP;
* closing waits until the socket of a TLS connection is closed (aiohttp finishes that in the
  background, and a loop that ends right after left it open).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import ParseResult

import aiohttp
from nats.aio.transport import WebSocketTransport
from nats.errors import ProtocolError


class WebSocket(WebSocketTransport):
    def __init__(self, ws_headers: dict[str, list[str]] | None = None) -> None:
        super().__init__(ws_headers)
        self._socket: Any = None  # the connection's socket, to see it closed

    async def connect(self, uri: ParseResult, buffer_size: int, connect_timeout: int) -> None:
        self._ws = await self._handshake(uri.geturl(), connect_timeout)
        self._using_tls = False

    async def connect_tls(
        self,
        uri: str | ParseResult,
        ssl_context: ssl.SSLContext,
        buffer_size: int,
        connect_timeout: int,
    ) -> None:
        if self._ws is not None and not self._ws.closed:
            if self._using_tls:  # wss:// did the handshake already; INFO asks again
                return
            raise ProtocolError("ws: cannot upgrade to TLS")
        url = uri if isinstance(uri, str) else uri.geturl()
        self._ws = await self._handshake(url, connect_timeout, ssl=ssl_context)
        self._using_tls = True

    async def wait_closed(self) -> None:
        await super().wait_closed()  # type: ignore[no-untyped-call]
        # The socket of a TLS connection closes in the background: wait for it, briefly.
        for _ in range(100):
            if self._socket is None or self._socket.fileno() == -1:
                return
            await asyncio.sleep(0.01)

    def writelines(self, payload: list[bytes]) -> None:
        if payload:
            self._pending.put_nowait(b"".join(payload))

    async def _handshake(
        self, url: str, timeout: float, **options: Any
    ) -> aiohttp.ClientWebSocketResponse:
        try:
            async with asyncio.timeout(timeout):
                headers = self._get_custom_headers()  # type: ignore[no-untyped-call]
                ws: aiohttp.ClientWebSocketResponse = await self._client.ws_connect(
                    url, headers=headers, max_msg_size=0, **options
                )
                self._socket = ws.get_extra_info("socket")
                return ws
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"nats: websocket handshake with {url} failed: {exc}") from exc
        except TimeoutError:
            raise ConnectionError(
                f"nats: websocket handshake with {url} timed out after {timeout:g}s"
            ) from None
