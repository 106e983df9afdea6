"""Connection deadlines and server.max_connections, over raw sockets against the service
under uvicorn (issue #11: slow-loris senders held connections for ever).

Deadlines are short here; every wait is a bounded poll: a hang fails, slowness does not."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ensemble_tap.bus.embedded import free_port
from tests.integration.conftest import StartApp
from tests.support.app import RunningApp
from tests.support.signing import generic_headers
from tests.support.waiting import eventually

SECRET = "s"
ACME = {"acme": {"secret": SECRET}}
LIVEZ = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
CLOSED = "tap_http_connections_closed_total"
OPEN = "tap_http_connections_open"


async def connect(app: RunningApp) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", app.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response with a Content-Length body: (head, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head, await asyncio.wait_for(reader.readexactly(length), 30)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the server sends until it closes the connection (a reset ends it too)."""
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            received += chunk
    except ConnectionResetError:
        pass
    return received


async def webhook_is_accepted(app: RunningApp, event_id: str) -> None:
    body = b'{"id":"deal_1"}'
    headers = generic_headers(SECRET, body, "deal.updated", event_id)
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        response = await client.post("/webhooks/acme", content=body, headers=headers)
    assert response.status_code == 202, response.text


async def slow_loris(app: RunningApp, gap: float) -> bytes:
    """Trickle a request head a byte per ``gap`` until the server closes the connection."""
    reader, writer = await connect(app)
    head = b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 100_000
    answer = asyncio.ensure_future(until_closed(reader))
    try:
        for byte in head:
            if answer.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(gap)
        return await asyncio.wait_for(answer, 30)
    finally:
        writer.close()


async def test_slow_loris_heads_are_closed_after_read_header_timeout_others_are_served(
    start_app: StartApp,
) -> None:
    """A byte every 0.1 s never leaves a 0.5 s gap: the deadline counts from the first
    byte, not the last. Meanwhile other senders are served."""
    app = start_app(providers=ACME, server={"read_header_timeout": "500ms"})
    lorises = [asyncio.ensure_future(slow_loris(app, gap=0.1)) for _ in range(64)]
    await eventually(lambda: app.metric(OPEN) >= 64)
    await webhook_is_accepted(app, "evt_during_slow_loris")

    answers = await asyncio.wait_for(asyncio.gather(*lorises), 60)

    assert app.metric(CLOSED, reason="header_timeout") == 64
    # A reset (a byte in flight as the server closed) may cost the client the answer.
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers), answers
    assert any(b"request header not received in time" in a for a in answers)
    assert all(b"connection: close" in a for a in answers if a)
    await eventually(lambda: app.metric(OPEN) == 0)
    await webhook_is_accepted(app, "evt_after_slow_loris")


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    start_app: StartApp,
) -> None:
    app = start_app(server={"read_header_timeout": "300ms"})
    reader, writer = await connect(app)
    try:
        assert await until_closed(reader) == b""
    finally:
        writer.close()
    assert app.metric(CLOSED, reason="header_timeout") == 1


async def test_idle_keep_alive_connection_is_closed_after_idle_timeout(
    start_app: StartApp,
) -> None:
    app = start_app(server={"idle_timeout": "1s", "read_header_timeout": "1s"})
    reader, writer = await connect(app)
    try:
        for _ in range(15):  # 1.5 s of requests 0.1 s apart: in use, never idle for 1 s
            writer.write(LIVEZ)
            head, _ = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200 ")
            await asyncio.sleep(0.1)
        assert app.metric(CLOSED, reason="idle_timeout") == 0
        assert await until_closed(reader) == b""  # idle: closed without an answer
    finally:
        writer.close()
    assert app.metric(CLOSED, reason="idle_timeout") == 1
    assert app.metric(CLOSED, reason="header_timeout") == 0


async def test_next_head_is_timed_from_its_first_byte_and_answered_408(
    start_app: StartApp,
) -> None:
    app = start_app(server={"read_header_timeout": "300ms", "idle_timeout": "30s"})
    reader, writer = await connect(app)
    try:
        writer.write(LIVEZ)
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 ")
        writer.write(b"GET /livez HTTP/1.1\r\nHo")  # and nothing more
        answer = await until_closed(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert answer.endswith(b"\r\n\r\nrequest header not received in time\n")
    assert app.metric(CLOSED, reason="header_timeout") == 1


async def test_connection_is_closed_when_a_body_stops_after_its_408(
    start_app: StartApp,
) -> None:
    """The webhook route answers 408 at read_timeout; a sender that keeps the body
    unfinished loses the connection soon after (it could not carry a request again)."""
    app = start_app(providers=ACME, server={"read_timeout": "300ms"})
    reader, writer = await connect(app)
    try:
        writer.write(b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 408 "), head
        assert body == b"request body not received in time\n"
        assert await until_closed(reader) == b""
    finally:
        writer.close()
    assert app.metric(CLOSED, reason="body_timeout") == 1


async def test_body_deadline_applies_to_routes_that_do_not_read_the_body(
    start_app: StartApp,
) -> None:
    app = start_app(server={"read_timeout": "300ms"})
    reader, writer = await connect(app)
    try:
        writer.write(b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 405 "), head
        assert await until_closed(reader) == b""
    finally:
        writer.close()
    assert app.metric(CLOSED, reason="body_timeout") == 1


async def test_connections_over_max_connections_are_answered_503_with_retry_after(
    start_app: StartApp,
) -> None:
    app = start_app(providers=ACME, server={"max_connections": 2})
    held = [await connect(app) for _ in range(2)]
    for reader, writer in held:  # served: both are admitted
        writer.write(LIVEZ)
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 ")

    reader, writer = await connect(app)
    body = b"x" * 300_000  # read to the end before the answer: no reset under it
    writer.write(
        b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    for start in range(0, len(body), 65536):
        writer.write(body[start : start + 65536])
        await writer.drain()
    head, text = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 503 "), head
    assert b"retry-after: 1\r\n" in head
    assert b"connection: close\r\n" in head
    assert text == b"too many connections\n"
    assert await until_closed(reader) == b""
    writer.close()
    assert app.metric(CLOSED, reason="max_connections") == 1
    assert app.metric("tap_webhooks_received_total", provider="acme", status="rejected") == 0

    held[0][1].close()  # a slot frees: the next connection is served
    await eventually(lambda: app.metric(OPEN) == 1)
    await webhook_is_accepted(app, "evt_after_a_slot_freed")
    held[1][1].close()
    await eventually(lambda: app.metric(OPEN) == 0)


async def test_a_peer_that_stops_reading_is_aborted_after_write_timeout(
    start_app: StartApp,
) -> None:
    """Pipelined /metrics requests whose answers are never read: the server's writes block
    (transport paused) and the connection is aborted after write_timeout."""
    app = start_app(server={"write_timeout": "500ms"})
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", app.port))
    try:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
        await eventually(lambda: app.metric(CLOSED, reason="write_timeout") == 1)
        await eventually(lambda: app.metric(OPEN) == 0)
    finally:
        conn.close()


async def test_open_connections_gauge(start_app: StartApp) -> None:
    app = start_app()
    held = [await connect(app) for _ in range(3)]
    await eventually(lambda: app.metric(OPEN) == 3)
    for _, writer in held:
        writer.close()
    await eventually(lambda: app.metric(OPEN) == 0)
    assert app.metric(CLOSED, reason="header_timeout") == 0  # closed by the client


def test_a_worker_process_keeps_the_deadlines_too(tmp_path: Path) -> None:
    """server.workers: each process has its own guard. With the primary stopped, only the
    worker accepts: its slow senders are answered 408 and counted in the merged /metrics."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"server:\n  host: 127.0.0.1\n  port: {port}\n  workers: 2\n"
        "  read_header_timeout: 500ms\n",
        encoding="utf-8",
    )
    log = tmp_path / "serve.log"
    cli = str(Path(sys.executable).parent / "ensemble-tap")
    with log.open("wb") as out:
        service = subprocess.Popen(
            [cli, "serve", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while '"workers started"' not in log.read_text() and service.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert service.poll() is None, log.read_text()
        os.kill(service.pid, signal.SIGSTOP)
        try:
            answers = []
            for _ in range(8):
                with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
                    conn.sendall(b"GET /livez HTTP/1.1\r\nHo")
                    answers.append(conn.recv(65536))
                    assert conn.recv(65536) == b""  # then closed
        finally:
            os.kill(service.pid, signal.SIGCONT)
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        counted = re.search(
            r'tap_http_connections_closed_total\{reason="header_timeout"\} (\S+)', text
        )
        assert counted is not None and float(counted.group(1)) == 8, text
    finally:
        service.terminate()  # not kill: the embedded nats-server would outlive it
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
