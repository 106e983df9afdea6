"""Requests a worker does not serve itself (``/admin/…``, ``/console/…``, ``/metrics``) go
to the primary.

The admin API keeps state in one place (jobs, rate limits, the audit log) and ``/metrics``
is merged there, so a worker forwards those requests over the primary's internal unix
socket. The client's address travels in ``PEER_HEADER``; only the primary's internal
listener (a socket in a private directory) reads it, and a worker always overwrites it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from ensemble_tap.asgi_types import ASGIApp, Receive, Scope, Send
from ensemble_tap.observability import get_logger

PEER_HEADER = b"x-ensemble-tap-peer"
MAX_FORWARDED_BODY = 1024 * 1024
FORWARD_TIMEOUT = 30.0
# Hop-by-hop headers (RFC 9110 §7.6.1) and the length, which httpx sets itself.
_NOT_FORWARDED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        PEER_HEADER,
    }
)
# The worker's own server adds these to the answer it relays.
_NOT_RELAYED = _NOT_FORWARDED | {b"date", b"server"}
log = get_logger("ensemble_tap.workers")


def forwarded_to_primary(path: str) -> bool:
    return path in ("/metrics", "/admin", "/console") or path.startswith(("/admin/", "/console/"))


class PrimaryProxy:
    """ASGI app forwarding each request to the primary process and relaying its answer as
    it arrives."""

    def __init__(self, socket_path: Path) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path)),
            base_url="http://primary",
            timeout=FORWARD_TIMEOUT,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            await _answer(send, 413, b'{"error":"request body too large"}')
            return
        client = scope.get("client")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _NOT_FORWARDED]
        headers.append((PEER_HEADER, (client[0] if client else "").encode("latin-1")))
        query = scope.get("query_string", b"")
        target = scope.get("raw_path") or scope["path"].encode()
        if query:
            target += b"?" + query
        request = self._client.build_request(
            scope["method"], target.decode("latin-1"), headers=headers, content=body
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.error("forward to the primary process failed", path=scope["path"], error=repr(exc))
            await _answer(send, 503, b'{"error":"primary process unavailable"}')
            return
        # Relayed as it arrives (the live tail is an endless stream), until the client goes.
        relay = asyncio.create_task(_relay(response, send, scope["path"]))
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, gone):
                task.cancel()
            await asyncio.gather(relay, gone, return_exceptions=True)
            await response.aclose()


def trust_peer_header(app: ASGIApp) -> ASGIApp:
    """The primary's internal listener: the client address is the one the worker saw."""

    async def with_peer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = next((v for k, v in scope["headers"] if k == PEER_HEADER), b"")
            scope = dict(scope)
            scope["client"] = (peer.decode("latin-1"), 0) if peer else None
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != PEER_HEADER]
        await app(scope, receive, send)

    return with_peer


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORWARDED_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _relay(response: httpx.Response, send: Send, path: str) -> None:
    """The primary's answer: its status and headers, then its body chunk by chunk (with its
    length when the primary gave one, else chunked)."""
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _NOT_RELAYED]
    length = response.headers.get("content-length")
    if length is not None:
        headers.append((b"content-length", length.encode("latin-1")))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    try:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.HTTPError as exc:  # the primary went mid-answer: end what was relayed
        log.error("relaying the primary's answer failed", path=path, error=repr(exc))
    await send({"type": "http.response.body", "body": b""})


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the request body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _answer(send: Send, status: int, body: bytes) -> None:
    """The worker's own JSON answer (the primary was not asked or did not answer)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
