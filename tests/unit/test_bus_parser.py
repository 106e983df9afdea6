"""DirectParser: direct frames by the fast lane, everything else by nats-py, in wire order,
however the bytes are cut into reads."""

from __future__ import annotations

from typing import Any

import pytest

from ensemble_tap.bus.client import TapClient

DIRECT, OTHER = 7, 9
HEADERS = b"NATS/1.0\r\nNats-Msg-Id: a:b:c\r\n\r\n"
STREAM = b"".join(
    [
        b"INFO {}\r\n",
        b"HMSG in.1 7 $JS.ACK.s.c.1.1.1.1.0 %d %d\r\n%sbody-1\r\n"
        % (len(HEADERS), len(HEADERS) + 6, HEADERS),
        b"MSG in.2 7 5\r\nbody2\r\n",
        b"MSG in.3 7 reply.3 0\r\n\r\n",
        b"PING\r\n",
        b"MSG other.1 9 4\r\nelse\r\n",
        b"HMSG in.4 7 %d %d\r\n%s\r\n" % (len(HEADERS), len(HEADERS), HEADERS),  # status only
        b"+OK\r\n",
        b"MSG in.5  7 1\r\nx\r\n",  # two spaces: left to nats-py, still delivered
        b"MSG in.6 7 12\r\nMSG in 7 1\r\n\r\n",  # a body that looks like a frame
    ]
)
EXPECTED: list[tuple[Any, ...]] = [
    ("info",),
    ("direct", b"in.1", b"$JS.ACK.s.c.1.1.1.1.0", b"body-1", HEADERS),
    ("direct", b"in.2", b"", b"body2", None),
    ("direct", b"in.3", b"reply.3", b"", None),
    ("ping",),
    ("other", b"other.1", b"else"),
    ("direct", b"in.4", b"", b"", HEADERS),
    ("direct", b"in.5", b"", b"x", None),
    ("direct", b"in.6", b"", b"MSG in 7 1\r\n", None),
]


class Recorder(TapClient):
    """Records what the parser hands over instead of acting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, ...]] = []
        self.add_direct(DIRECT, lambda *message: self.seen.append(("direct", *message)))

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        if sid == OTHER:
            self.seen.append(("other", subject, data))
            return
        await super()._process_msg(sid, subject, reply, data, headers)

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        self.seen.append(("info",))


async def feed(chunks: list[bytes]) -> list[tuple[Any, ...]]:
    client = Recorder()
    for chunk in chunks:
        await client._ps.parse(chunk)
    assert not client._ps.buf
    return client.seen


async def test_one_read() -> None:
    assert await feed([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
async def test_every_place_a_read_can_end(cut: int) -> None:
    assert await feed([STREAM[:cut], STREAM[cut:]]) == EXPECTED


async def test_byte_by_byte() -> None:
    assert await feed([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED
