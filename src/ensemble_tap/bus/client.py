"""A nats-py client with shortcuts for the per-event paths; the only module that touches
nats-py's private members.

* ``subscribe_direct`` / ``add_direct``: messages for a registered subscription id go straight
  to a plain callback with the raw subject, reply, body and header bytes, skipping nats-py's
  ``Msg`` object, per-subscription queue and task (about 15 µs per message: the JetStream
  acks of the webhook path and the sink's deliveries). ``DirectParser`` reads those messages
  off the wire without nats-py's regexes and coroutine per message; everything else still
  goes through nats-py's parser, in arrival order.
* ``publish_frame`` / ``queue_frame``: an HPUB/PUB whose header block is already encoded,
  skipping nats-py's per-call subject regexes, header re-encoding and the two coroutines
  of its buffering. The same checks as ``publish`` (closed, draining, buffer limit, max
  payload) still apply.
* ``respond_all``: one payload to many reply subjects in one buffered write (the sink's acks
  of a whole batch).

They use private members of nats-py 2.16 (``_ps``, ``_process_msg``, the outbound buffer
``_pending``/``_pending_data_size``/``_max_pending_size``, the flusher's ``_flush_queue``/
``_flusher_task``/``_flush_pending``, ``Subscription._id``, its parser); pyproject pins the
minor version, and tests/integration/test_bus_client.py runs these paths against a real server,
over TCP and over WebSocket. ``ws://``/``wss://`` servers get the transport of bus/websocket.py
(through the private ``_connect_to_server``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mypy_extensions import mypyc_attr
from nats.aio.client import Client, Srv
from nats.aio.subscription import Subscription
from nats.errors import (
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
)
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from ensemble_tap.bus.websocket import WebSocket

# nats-server's default max_control_line: a longer PUB/HPUB line makes it close the whole
# connection, so such a publish is refused here (values from senders are bounded before).
MAX_CONTROL_LINE = 4096
# (subject, reply, data, raw headers or None)
DirectHandler = Callable[[bytes, bytes, bytes, bytes | None], None]
_HEADER_VALUE_UNSAFE = str.maketrans({"\r": " ", "\n": " "})


# Compiled (setup.py), yet subclassed by plain Python (tests record what it parses).
@mypyc_attr(allow_interpreted_subclasses=True)
class TapClient(Client):
    def __init__(self) -> None:
        super().__init__()
        # Filled only by add_direct: nats-py's path looks handlers up by sid, the parser's
        # fast lane by the sid's digits as the server echoes them.
        self._direct: dict[int, DirectHandler] = {}
        self._direct_by_wire_sid: dict[bytes, DirectHandler] = {}
        self._ps = DirectParser(self)

    async def subscribe_direct(self, subject: str, handler: DirectHandler) -> Subscription:
        """Subscribe to ``subject`` with its messages handed to ``handler`` directly."""
        subscription = await self.subscribe(subject)
        self.add_direct(subscription._id, handler)
        return subscription

    def add_direct(self, sid: int, handler: DirectHandler) -> None:
        """Deliver the messages of subscription ``sid`` to ``handler`` (see the module doc)."""
        self._direct[sid] = handler
        self._direct_by_wire_sid[b"%d" % sid] = handler

    async def publish_frame(
        self, subject: bytes, reply: bytes, headers: bytes, payload: bytes
    ) -> None:
        """Publish ``payload``; ``headers`` is an encoded block from ``encode_headers`` (or
        empty). ``subject`` and ``reply`` must be valid subjects (built by the caller)."""
        if self.queue_frame(subject, reply, headers, payload):
            await self.flush_queued()

    def queue_frame(self, subject: bytes, reply: bytes, headers: bytes, payload: bytes) -> bool:
        """``publish_frame`` without a coroutine (the webhook path's publish): True when the
        caller must then await ``flush_queued()`` (see ``_queue``)."""
        size = len(payload)
        if self._status != Client.CONNECTED:  # one compare on the usual path, not 3 properties
            self._check_not_connected(size)
        if len(subject) + len(reply) + 64 > MAX_CONTROL_LINE:
            raise BadSubjectError
        if size + len(headers) > self._max_payload:  # the server's limit counts both;
            raise MaxPayloadError  # past it the server would close the whole connection
        if headers:
            command = b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
                subject,
                reply,
                len(headers),
                len(headers) + size,
                headers,
                payload,
            )
        else:
            command = b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, size, payload)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += size
        return self._queue(command)

    def _check_not_connected(self, size: int) -> None:
        """nats-py's ``publish`` checks when the connection is not up: refused when closed or
        draining, buffered (up to the pending limit) while reconnecting."""
        if self.is_closed:
            raise ConnectionClosedError
        if self.is_draining_pubs:
            raise ConnectionDrainingError
        if not self.is_connected and (
            self._max_pending_size <= 0 or size + self._pending_data_size > self._max_pending_size
        ):
            raise OutboundBufferLimitError

    def _queue(self, command: bytes) -> bool:
        """Append ``command`` to nats-py's outbound buffer and wake its flusher, which writes
        everything buffered in one call; while a wake-up is queued, later commands ride on
        it (one write per loop iteration, not per message). nats-py does this in two
        coroutines per publish. True when the caller must await ``flush_queued()``: the
        buffer is past its limit (backpressure, as nats-py's ``publish``) or the flusher
        task is gone."""
        self._pending.append(command)
        # Not ``+=``: mypyc cannot compile an augmented assignment to an attribute of the
        # (interpreted) nats-py base class.
        self._pending_data_size = self._pending_data_size + len(command)
        if 0 < self._max_pending_size < self._pending_data_size:
            return True
        wakeups = self._flush_queue
        if wakeups is None or not wakeups.empty() or not self._connected_or_draining():
            return False  # a wake-up is queued, or the reconnect writes the buffer
        flusher = self._flusher_task
        if flusher is None or flusher.done():
            return True
        wakeups.put_nowait(asyncio.get_running_loop().create_future())
        return False

    def _connected_or_draining(self) -> bool:
        """``is_connected`` with its usual answer first."""
        return self._status == Client.CONNECTED or self.is_connected

    async def flush_queued(self) -> None:
        """What ``_queue`` asked for: a flush that waits while the buffer is past its limit."""
        over_limit = 0 < self._max_pending_size < self._pending_data_size
        await self._flush_pending(force_flush=over_limit)

    async def _connect_to_server(self, s: Srv) -> None:
        if not self._transport and s.uri.scheme in ("ws", "wss"):
            self._transport = WebSocket(ws_headers=self.options["ws_connection_headers"])
        await super()._connect_to_server(s)

    async def respond_all(self, replies: list[bytes], payload: bytes) -> None:
        """Publish ``payload`` to every reply subject as one buffered write: the ack of a
        whole batch. nats-py's ``publish`` validates and formats each message on its own,
        about 5 µs apiece — a quarter of a core at 50,000 acks per second."""
        if not replies:
            return
        if self.is_closed:
            raise ConnectionClosedError
        tail = b" %d\r\n%s\r\n" % (len(payload), payload)
        if self._queue(b"".join([b"PUB " + reply + tail for reply in replies])):
            await self.flush_queued()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._direct.get(sid)
        if handler is not None:
            handler(subject, reply, data, headers)
            return
        # nats-py passes None for a message without headers, despite its annotation.
        await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]


class DirectParser(Parser):
    """nats-py's parser with a fast lane in front: a run of complete ``MSG``/``HMSG`` frames
    for ``add_direct`` subscriptions is split with plain byte operations and handed over
    synchronously. It stops at the first frame that is anything else (another subscription,
    PING, INFO, -ERR, an unusual control line), and nats-py's parser takes over from there,
    so the order of everything on the connection is kept. An incomplete frame waits in the
    buffer for the rest of its bytes."""

    def __init__(self, nc: TapClient) -> None:
        super().__init__(nc)
        self.direct = nc._direct_by_wire_sid

    async def parse(self, data: bytes = b"") -> None:
        if self.state != AWAITING_CONTROL_LINE:  # nats-py is in the middle of a frame
            await super().parse(data)
            return
        buf = self.buf
        if buf:  # the start of a frame from the previous read (one copy of the read)
            data = bytes(buf) + data
            buf.clear()
        done, waiting = self._direct_frames(data)
        if done == len(data):
            return
        buf.extend(data[done:])
        if not waiting:
            await super().parse()

    def _direct_frames(self, data: bytes) -> tuple[int, bool]:
        """Hand over the complete direct frames at the start of ``data``; returns how many
        bytes they took and whether what is left is an incomplete direct frame."""
        direct, size, pos = self.direct, len(data), 0
        while pos < size:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                return pos, data.startswith(b"MSG ", pos) or data.startswith(b"HMSG ", pos)
            parts = data[pos:eol].split(b" ")
            count = len(parts)
            try:
                if parts[0] == b"HMSG" and count in (5, 6):  # HMSG subject sid [reply] hdr total
                    header_size, total = int(parts[-2]), int(parts[-1])
                    with_reply = count == 6
                elif parts[0] == b"MSG" and count in (4, 5):  # MSG subject sid [reply] total
                    header_size, total = 0, int(parts[-1])
                    with_reply = count == 5
                else:
                    return pos, False
            except ValueError:
                return pos, False
            handler = direct.get(parts[2])
            if handler is None or not 0 <= header_size <= total:
                return pos, False
            start = eol + 2
            end = start + total
            if end + 2 > size:
                return pos, True
            body_start = start + header_size
            handler(
                parts[1],
                parts[3] if with_reply else b"",
                data[body_start:end],
                data[start:body_start] if header_size else None,
            )
            pos = end + 2
        return pos, False


def encode_headers(headers: dict[str, str]) -> bytes:
    """A NATS header block; values lose CR/LF (they could inject protocol lines)."""
    if not headers:
        return b""
    block = b"NATS/1.0\r\n"
    for key, value in headers.items():
        value = value.strip()
        if "\r" in value or "\n" in value:
            value = value.translate(_HEADER_VALUE_UNSAFE)
        block += b"%s: %s\r\n" % (key.encode(), value.encode())
    return block + b"\r\n"
