"""The client shortcuts of bus/client.py against a real nats-server, over TCP and over
WebSocket (nats-py reads a WebSocket message at a time: frames split differently)."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, MaxPayloadError

from ensemble_tap.bus.client import TapClient, encode_headers
from tests.support.nats_server import NatsServer


@pytest.fixture(params=["tcp", "websocket"])
def url(request: pytest.FixtureRequest, nats_server: NatsServer) -> str:
    return nats_server.url if request.param == "tcp" else nats_server.ws_url


async def test_frames_arrive_as_nats_py_publishes_would(url: str) -> None:
    client = TapClient()
    await client.connect(url)
    received: list[Msg] = []
    try:
        subscription = await client.subscribe("frames.test", cb=_collect(received))
        headers = encode_headers({"Nats-Msg-Id": "a\r\nPUB x 1", "X-Request-ID": " rid "})
        await client.publish_frame(b"frames.test", b"reply.to", headers, b"with headers")
        await client.publish_frame(b"frames.test", b"", b"", b"plain")
        await client.flush()
        await _until(lambda: len(received) == 2)
        await subscription.unsubscribe()
    finally:
        await client.close()
    first, second = received
    assert first.data == b"with headers"
    assert first.reply == "reply.to"
    # A CR/LF in a value cannot start a protocol line of its own.
    assert first.headers == {"Nats-Msg-Id": "a  PUB x 1", "X-Request-ID": "rid"}
    assert second.data == b"plain"
    assert not second.headers


async def test_queued_frames_leave_without_a_flush(url: str) -> None:
    """``queue_frame`` wakes nats-py's flusher once for a batch: every frame of it is
    written although nothing awaits a flush."""
    client = TapClient()
    await client.connect(url)
    received: list[tuple[bytes, bytes, bytes, bytes | None]] = []
    try:
        await client.subscribe_direct("queued.*", lambda *message: received.append(message))
        for index in range(50):
            assert not client.queue_frame(b"queued.%d" % index, b"", b"", b"%d" % index)
        await _until(lambda: len(received) == 50)
        await asyncio.sleep(0.05)  # a second batch after the first was written
        assert not client.queue_frame(b"queued.last", b"", b"", b"last")
        await _until(lambda: len(received) == 51)
    finally:
        await client.close()
    assert [data for _, _, data, _ in received] == [b"%d" % i for i in range(50)] + [b"last"]


async def test_direct_handlers_get_raw_messages_others_go_through_nats_py(url: str) -> None:
    client = TapClient()
    await client.connect(url)
    raw: list[tuple[bytes, bytes, bytes, bytes | None]] = []
    regular: list[Msg] = []
    try:
        await client.subscribe_direct("direct.*", lambda *message: raw.append(message))
        await client.subscribe("regular", cb=_collect(regular))
        await client.publish("direct.one", b"1", reply="r", headers={"K": "v"})
        await client.publish("regular", b"2")
        await client.flush()
        await _until(lambda: raw and regular)
    finally:
        await client.close()
    assert raw == [(b"direct.one", b"r", b"1", b"NATS/1.0\r\nK: v\r\n\r\n")]
    assert [m.data for m in regular] == [b"2"]


async def test_frames_keep_the_client_checks(url: str) -> None:
    client = TapClient()
    await client.connect(url)
    try:
        with pytest.raises(MaxPayloadError):
            await client.publish_frame(b"x", b"", b"", b"0" * (client.max_payload + 1))
    finally:
        await client.close()
    with pytest.raises(ConnectionClosedError):
        await client.publish_frame(b"x", b"", b"", b"late")


async def test_a_burst_of_frames_of_every_size_arrives_whole_and_in_order(url: str) -> None:
    """Small and large messages, with and without headers, published as one burst and read
    on the direct path: frames that span reads (or WebSocket messages) are reassembled."""
    client = TapClient()
    await client.connect(url)
    sizes = [index * 997 % 300_000 for index in range(300)]
    received: list[tuple[bytes, bytes, bytes, bytes | None]] = []
    try:
        direct = await client.subscribe("burst.>")
        client.add_direct(direct._id, lambda *message: received.append(message))
        headers = encode_headers({"Nats-Msg-Id": "m"})
        for index, size in enumerate(sizes):
            payload = bytes([index % 251]) * size
            await client.publish_frame(
                b"burst.%d" % index, b"r.%d" % index, headers if index % 2 else b"", payload
            )
        await client.flush()
        await _until(lambda: len(received) == len(sizes))
    finally:
        await client.close()
    for index, (subject, reply, data, raw_headers) in enumerate(received):
        assert (subject, reply) == (b"burst.%d" % index, b"r.%d" % index)
        assert data == bytes([index % 251]) * sizes[index]
        assert raw_headers == (b"NATS/1.0\r\nNats-Msg-Id: m\r\n\r\n" if index % 2 else None)


async def test_respond_all_reaches_every_reply_subject(nats_server: NatsServer) -> None:
    client = TapClient()
    await client.connect(nats_server.url)
    received: list[Msg] = []
    try:
        await client.subscribe("acks.*", cb=_collect(received))
        await client.respond_all([], b"+ACK")  # nothing to write
        await client.respond_all([b"acks.one", b"acks.two"], b"+ACK")
        await client.flush()
        await _until(lambda: len(received) == 2)
    finally:
        await client.close()
    assert sorted((m.subject, m.data) for m in received) == [
        ("acks.one", b"+ACK"),
        ("acks.two", b"+ACK"),
    ]
    with pytest.raises(ConnectionClosedError):
        await client.respond_all([b"acks.one"], b"+ACK")


def test_encode_headers() -> None:
    assert encode_headers({}) == b""
    assert encode_headers({"A": "é"}) == "NATS/1.0\r\nA: é\r\n\r\n".encode()


def _collect(into: list[Msg]):  # type: ignore[no-untyped-def]
    async def collect(msg: Msg) -> None:
        into.append(msg)

    return collect


async def _until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
