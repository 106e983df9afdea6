"""Process plumbing shared by the primary and worker processes: the event loop runner, the
uvicorn server class, the listening socket, signal handlers and GC tuning."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class TapServer(uvicorn.Server):
    """uvicorn whose signal handling is left to the caller: uvicorn would re-raise a caught
    SIGTERM after its own shutdown and kill the process before NATS is drained."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class CoalescedWrites:
    """A transport whose writes within one event-loop iteration go out as one ``write``.

    uvicorn writes a response's status line and headers, then its body, with a system call
    each; on loopback every one also costs the kernel a TCP segment and the client a read.
    Joined, a webhook's 202 is one segment. Everything else is the wrapped transport's."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(b"".join(pending))

    def close(self) -> None:
        self._flush()  # the response before the FIN
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class TapHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a ``CoalescedWrites`` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescedWrites(transport, self.loop))  # type: ignore[arg-type]


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on uvloop when available; SIGINT/SIGTERM end it cleanly."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(coro)


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket that several processes can accept on (port 0: a free port)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"could not listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def tune_gc() -> None:
    """Move start-up objects out of the collector's view and collect less often: full
    collections over them paused the event loop for ~55 ms several times a minute, which
    was the p99 of webhook latency."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


@contextlib.contextmanager
def signal_handlers(callback: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
