"""A nats-py client with two shortcuts for the per-event paths.

* ``direct``: messages for a registered subscription id go straight to a plain callback
  with the raw subject, reply, body and header bytes, skipping nats-py's ``Msg`` object,
  per-subscription queue and task (about 15 µs per message: the JetStream acks of the
  webhook path and the sink's deliveries).
* ``publish_frame``: an HPUB/PUB whose header block is already encoded, skipping nats-py's
  per-call subject regexes and header re-encoding. The same checks as ``publish``
  (closed, draining, buffer limit, max payload) still apply.

Both use private members of nats-py 2.16 (``_process_msg``, ``_send_command``,
``_flush_pending``); pyproject pins the minor version, and tests/integration/test_bus_client.py
runs both paths against a real server.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
)

# (subject, reply, data, raw headers or None)
DirectHandler = Callable[[bytes, bytes, bytes, bytes | None], None]
_HEADER_VALUE_UNSAFE = str.maketrans({"\r": " ", "\n": " "})


class TapClient(Client):
    def __init__(self) -> None:
        super().__init__()
        self.direct: dict[int, DirectHandler] = {}

    async def publish_frame(
        self, subject: bytes, reply: bytes, headers: bytes, payload: bytes
    ) -> None:
        """Publish ``payload``; ``headers`` is an encoded block from ``encode_headers`` (or
        empty). ``subject`` and ``reply`` must be valid subjects (built by the caller)."""
        if self.is_closed:
            raise ConnectionClosedError
        if self.is_draining_pubs:
            raise ConnectionDrainingError
        size = len(payload)
        if not self.is_connected and (
            self._max_pending_size <= 0 or size + self._pending_data_size > self._max_pending_size
        ):
            raise OutboundBufferLimitError
        if size > self._max_payload:
            raise MaxPayloadError
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
        await self._send_command(command)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self.direct.get(sid)
        if handler is not None:
            handler(subject, reply, data, headers)
            return
        # nats-py passes None for a message without headers, despite its annotation.
        await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]


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
