"""Read back what the service stored in JetStream."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import nats
import orjson
from nats.js.errors import NotFoundError


@dataclass
class Stored:
    subject: str
    headers: dict[str, str]
    data: bytes

    def json(self) -> Any:
        return orjson.loads(self.data)


async def stored_messages(url: str, stream: str, **options: Any) -> list[Stored]:
    """Every message of ``stream``; ``options``: more ``nats.connect`` options (credentials)."""
    nc = await nats.connect(url, **options)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            return []
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            try:
                msg = await js.get_msg(stream, seq)
            except NotFoundError:
                continue
            messages.append(Stored(msg.subject or "", dict(msg.headers or {}), msg.data or b""))
        return messages
    finally:
        await nc.close()


def dlq_payload(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record.get("original_payload", ""))
