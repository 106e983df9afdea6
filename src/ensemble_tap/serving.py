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


class TapServer(uvicorn.Server):
    """uvicorn whose signal handling is left to the caller: uvicorn would re-raise a caught
    SIGTERM after its own shutdown and kill the process before NATS is drained."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
