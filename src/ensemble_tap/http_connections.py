"""Deadlines and a limit for the HTTP server's connections, per process.

uvicorn closes idle keep-alive connections, but it has no deadline for a request head (a
sender trickling a byte a second holds a connection for ever), none for a body outside the
webhook route or after the answer, none for a peer that stops reading, and no connection
limit (``limit_concurrency`` answers 503 per request, counting keep-alive connections).
``serving.TapHttpProtocol`` stamps on each connection since when it waits for what (a few
attribute stores per request, on this module's coarse clock) and one task per process
sweeps the open connections: no timer per request (one cost ~4 µs; ingress.BodyDeadlines).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ensemble_tap.asgi_types import Receive, Scope, Send
from ensemble_tap.config.models import ServerConfig
from ensemble_tap.observability import Metrics, get_logger

log = get_logger("ensemble_tap.http_connections")


class TrackedConnection(Protocol):
    """What the guard reads and calls on a connection (``serving.TapHttpProtocol``)."""

    admitted: bool
    write_blocked_since: float | None
    awaiting_head_since: float | None
    awaiting_body_since: float | None
    idle_since: float | None

    def reading(self) -> bool: ...
    def answering(self) -> bool: ...
    def time_out(self, reason: str) -> None: ...
    def abort(self) -> None: ...


HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
IDLE_TIMEOUT = "idle_timeout"
WRITE_TIMEOUT = "write_timeout"
MAX_CONNECTIONS = "max_connections"
REASONS = (HEADER_TIMEOUT, BODY_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT, MAX_CONNECTIONS)
# The webhook route answers a late body 408 at server.read_timeout (ingress.BodyDeadlines,
# up to 0.5 s late); the connection is closed only this much later, so that answer goes out.
BODY_GRACE = 1.0
OVER_LIMIT_BODY = b"too many connections\n"
OVER_LIMIT_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(OVER_LIMIT_BODY)).encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"retry-after", b"1"),
    (b"connection", b"close"),
]


@dataclass(slots=True, frozen=True)
class ConnectionLimits:
    read_header_timeout: float  # a request head, from its first byte (the first: from accept)
    body_timeout: float  # a request body, from the end of its head
    idle_timeout: float  # between a response and the next request's first byte
    write_timeout: float  # a response blocked on a peer that does not read
    max_connections: int  # connections served at once; 0: no limit

    @classmethod
    def of(cls, server: ServerConfig) -> ConnectionLimits:
        return cls(
            read_header_timeout=server.read_header_timeout,
            body_timeout=server.read_timeout + BODY_GRACE,
            idle_timeout=server.idle_timeout,
            write_timeout=server.write_timeout,
            max_connections=server.max_connections,
        )

    @property
    def sweep_interval(self) -> float:
        shortest = min(self.read_header_timeout, self.idle_timeout, self.write_timeout)
        return min(0.5, shortest / 4)


class ConnectionGuard:
    """The open connections of one process, their limit and the task that times them out.

    ``now`` is the clock connections stamp with: refreshed by every sweep and every new
    connection, so a stamp is at most one sweep interval early. A deadline is therefore
    enforced one interval late (never early), and noticed up to one more interval later."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics) -> None:
        self.limits = limits
        self.interval = limits.sweep_interval
        self.now = time.monotonic()
        self.open: set[TrackedConnection] = set()
        self.admitted = 0
        # Shutting down (``drain``): answers say ``Connection: close``, so that keep-alive
        # clients reconnect, and the load balancer routes them elsewhere.
        self.draining = False
        self.last_request = float("-inf")  # when a request head (not a probe) last arrived
        self._closed = {
            reason: metrics.http_connections_closed.labels(reason) for reason in REASONS
        }
        metrics.http_connections_open.set_function(lambda: len(self.open))
        self._sweeper: asyncio.Task[None] | None = None

    def opened(self, connection: TrackedConnection) -> bool:
        """Track a new connection; False when it is over ``max_connections``."""
        self.now = time.monotonic()
        self.open.add(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep(), name="tap-connection-sweeper"
            )
        if self.limits.max_connections and self.admitted >= self.limits.max_connections:
            return False
        self.admitted += 1
        return True

    def closed(self, connection: TrackedConnection) -> None:
        self.open.discard(connection)
        if connection.admitted:
            self.admitted -= 1

    def count(self, reason: str) -> None:
        self._closed[reason].inc()

    async def _sweep(self) -> None:
        """Runs while connections are open (a new one starts it again)."""
        try:
            while self.open:
                await asyncio.sleep(self.interval)
                self.now = now = time.monotonic()
                for connection in list(self.open):
                    reason = self._overdue(connection, now)
                    if reason is None:
                        continue
                    self.count(reason)
                    try:
                        connection.time_out(reason)
                    except Exception as exc:  # a bug: the other connections still time out
                        log.error("closing a timed-out connection failed", error=repr(exc))
                        connection.abort()
        finally:
            self._sweeper = None

    def _overdue(self, connection: TrackedConnection, now: float) -> str | None:
        limits = self.limits
        blocked = connection.write_blocked_since  # a monotonic() reading (rare: no margin)
        if blocked is not None and now - blocked >= limits.write_timeout:
            return WRITE_TIMEOUT
        # Nothing else is overdue while closing, or while reading is paused by the server
        # (a pipelined request waits, or the application has not read the body yet).
        if not connection.reading():
            return None
        stamped = now - self.interval  # stamps are up to one interval early
        since = connection.awaiting_head_since
        overdue = since is not None and stamped - since >= limits.read_header_timeout
        if overdue and not connection.answering():  # not while answering the previous request
            return HEADER_TIMEOUT
        since = connection.awaiting_body_since
        if since is not None and stamped - since >= limits.body_timeout:
            return BODY_TIMEOUT
        since = connection.idle_since
        if since is not None and stamped - since >= limits.idle_timeout:
            return IDLE_TIMEOUT
        return None

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The application of a connection over ``max_connections``: 503 + Retry-After and
        close. The request is read first: closing with request bytes unread would reset the
        connection, and the sender could lose the answer."""
        while (await receive()).get("more_body"):  # http.disconnect has none
            pass
        self.count(MAX_CONNECTIONS)
        await send({"type": "http.response.start", "status": 503, "headers": OVER_LIMIT_HEADERS})
        await send({"type": "http.response.body", "body": OVER_LIMIT_BODY})


# A drain ends once no request has arrived for this long: the load balancer routes elsewhere.
QUIET = 0.5
# Requests that are not traffic: health checks and scrapes go on after routing has stopped.
PROBES = frozenset({"/livez", "/readyz", "/metrics"})
DRAIN_TICK = 0.1


async def drain(
    guard: ConnectionGuard, *, delay: float, budget: float, stop: Callable[[float], None]
) -> None:
    """Serve on after a stop signal (``guard.draining`` set, ``/readyz`` 503): everything
    for ``delay`` (``server.shutdown_delay``), then, for up to ``budget``
    (``server.shutdown_timeout``), requests newly routed here until none (but ``PROBES``)
    has arrived for ``QUIET`` seconds. ``stop(grace)`` then stops accepting; in-flight
    requests get what is left of the budget (``grace``)."""
    began = guard.now = time.monotonic()  # from now on heads are stamped at most a tick early
    await asyncio.sleep(delay)
    deadline = time.monotonic() + budget
    while True:
        now = guard.now = time.monotonic()
        # A head stamped before the drain may be up to a sweep interval early.
        quiet = QUIET if guard.last_request >= began else QUIET + guard.interval
        if now - guard.last_request >= quiet or now >= deadline:
            break
        await asyncio.sleep(DRAIN_TICK)
    stop(max(deadline - time.monotonic(), DRAIN_TICK))
