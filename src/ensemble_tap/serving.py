"""Process plumbing shared by the primary and worker processes: the event loop runner, the
uvicorn server and HTTP protocol classes, the listening socket, signal handlers and GC
tuning."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ensemble_tap.http_connections import HEADER_TIMEOUT, PROBES, WRITE_TIMEOUT

if TYPE_CHECKING:
    from ensemble_tap.http_connections import ConnectionGuard

_TIMEOUT_TEXT = b"request header not received in time\n"
# A header timeout's 408 after its status line and uvicorn's default headers (Date).
_HEADER_TIMEOUT_REST = (
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_TIMEOUT_TEXT)).encode() + b"\r\n"
    b"x-content-type-options: nosniff\r\n"
    b"connection: close\r\n\r\n" + _TIMEOUT_TEXT
)


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
    """uvicorn's httptools protocol on a ``CoalescedWrites`` transport, whose deadlines and
    connection limit are kept by a ``ConnectionGuard`` (``bound_to``; one per process)
    instead of uvicorn's keep-alive timer (one ``call_later`` per response).

    A connection stamps, on the guard's clock, since when it waits for a request head, a
    request body, the next request (idle) or a blocked write; the guard's sweeper closes it
    when one wait is overdue. Parser callbacks call uvicorn's directly, not through
    ``super()``: ≈2,000 instructions less per request, so a request costs what it did with
    uvicorn's keep-alive timer. Re-check the overridden callbacks when upgrading uvicorn."""

    guard: ClassVar[ConnectionGuard]
    awaiting_head_since: float | None  # the first from accept, later ones from their 1st byte
    head_started: bool  # a byte of the awaited head arrived: a timeout answers 408
    awaiting_body_since: float | None  # from the end of the head to the end of the body
    idle_since: float | None  # a response went out; nothing of a next request arrived yet
    write_blocked_since: float | None  # the transport paused writing (the peer is not reading)
    admitted: bool  # within max_connections (else every request is answered 503)

    @classmethod
    def bound_to(cls, guard: ConnectionGuard) -> type[TapHttpProtocol]:
        """The protocol class uvicorn instantiates per connection, with ``guard``."""
        return type(cls.__name__, (cls,), {"guard": guard})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescedWrites(transport, self.loop))  # type: ignore[arg-type]
        guard = self.guard
        self.head_started = False
        self.awaiting_body_since = self.idle_since = self.write_blocked_since = None
        self.admitted = guard.opened(self)
        self.awaiting_head_since = guard.now
        if not self.admitted:
            self.app = guard.refuse

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        if self.awaiting_head_since is None:
            self.awaiting_head_since = self.guard.now
        self.head_started = True
        self.idle_since = None
        HttpToolsProtocol.on_message_begin(self)

    def on_headers_complete(self) -> None:
        guard = self.guard
        self.awaiting_head_since = None
        self.head_started = False
        self.awaiting_body_since = guard.now
        HttpToolsProtocol.on_headers_complete(self)
        if self.scope.get("path") not in PROBES:  # probes go on while traffic is routed away
            guard.last_request = guard.now
        if guard.draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with Connection: close, then closed

    def on_message_complete(self) -> None:
        self.awaiting_body_since = None
        HttpToolsProtocol.on_message_complete(self)
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and self.awaiting_head_since is None:
            self.idle_since = self.guard.now  # answered before its body was all read

    def on_response_complete(self) -> None:
        """uvicorn's, with the keep-alive timer replaced by an idle stamp."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            if self.awaiting_body_since is not None:
                self.awaiting_body_since = self.guard.now  # it could not be read until now
            self._start_asgi_task(cycle, app)
        elif self.awaiting_head_since is not None:
            self.awaiting_head_since = self.guard.now  # the next head's time starts now (Go)
        elif self.awaiting_body_since is None:
            self.idle_since = self.guard.now

    def pause_writing(self) -> None:
        self.write_blocked_since = time.monotonic()
        super().pause_writing()

    def resume_writing(self) -> None:
        self.write_blocked_since = None
        super().resume_writing()

    # What the guard reads of uvicorn's state, so that uvicorn's internals stay in this file.

    def reading(self) -> bool:
        """Open and reading: not while closing, nor while uvicorn paused reading (a pipelined
        request waits, or the application has not read the body yet)."""
        return not self.transport.is_closing() and not self.flow.read_paused

    def answering(self) -> bool:
        """A response is being sent (a head may already be arriving behind it)."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def abort(self) -> None:
        self.transport.abort()

    def time_out(self, reason: str) -> None:
        """Close for ``reason`` (counted by the guard). A head that began and did not end
        in time is answered 408; a write that cannot go out is aborted."""
        if reason == WRITE_TIMEOUT:
            self.write_blocked_since = None
            self.transport.abort()
            return
        if reason == HEADER_TIMEOUT and self.head_started:
            head = [STATUS_LINE[408]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            self.transport.write(b"".join([*head, _HEADER_TIMEOUT_REST]))
        self.transport.close()


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


def raise_open_file_limit() -> None:
    """Soft limit of open files up to the hard one (as Go does at start): each connection
    holds one, so ``server.max_connections`` (1024 by default) must fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tune_gc() -> None:
    """Move start-up objects out of the collector's view and collect less often: full
    collections over them paused the event loop for ~55 ms several times a minute, which
    was the p99 of webhook latency."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


@contextlib.contextmanager
def signal_handlers(
    callback: Callable[[], None], on_reload: Callable[[], None] | None = None
) -> Iterator[None]:
    """SIGINT/SIGTERM call ``callback``; SIGHUP calls ``on_reload`` (secrets reload)."""
    loop = asyncio.get_running_loop()
    handled = {signal.SIGINT: callback, signal.SIGTERM: callback}
    if on_reload is not None:
        handled[signal.SIGHUP] = on_reload
    for sig, handler in handled.items():
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
