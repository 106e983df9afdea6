"""``GET /admin/events/stream`` behind uvicorn with a real nats-server: an event published
while a stream is open arrives as one SSE frame (``id:`` its stream sequence), a filter keeps
other providers out, the number of open streams is bounded (503 beyond) and a client that
goes away frees its slot."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson

from tests.integration.conftest import StartApp
from tests.support.signing import generic_headers
from tests.support.waiting import eventually

TOKEN = "admin-token-0123456789"
ADMIN = {"X-Admin-Token": TOKEN}
SECRET = "s3cret"
SERVER = {"admin_token": TOKEN, "admin_rate_limit_per_sec": 1000, "admin_rate_limit_burst": 1000}
PROVIDERS = {"acme": {"secret": SECRET}, "globex": {"secret": SECRET}}


async def deliver(client: httpx.AsyncClient, provider: str, event_id: str) -> None:
    body = orjson.dumps({"id": event_id})
    headers = generic_headers(SECRET, body, "deal.updated", event_id)
    reply = await client.post(f"/webhooks/{provider}", content=body, headers=headers)
    assert reply.status_code == 202, reply.text


async def frames(response: httpx.Response) -> AsyncIterator[list[str]]:
    """The stream's frames (their lines), comments included."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line:
            lines.append(line)
        elif lines:
            yield lines
            lines = []


async def test_events_stream_filters_bounds_and_frees_slots(start_app: StartApp) -> None:
    app = start_app(server=SERVER, providers=PROVIDERS)
    assert app.app.live_streams is not None
    app.app.live_streams.limit = 1
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        params = {"provider": "acme", "type": "ensemble.tap.acme.deal.updated"}
        async with client.stream("GET", "/admin/events/stream", params=params,
                                 headers=ADMIN) as stream:  # fmt: skip
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            received = frames(stream)
            assert await anext(received) == [": connected"]
            second = await client.get("/admin/events/stream", headers=ADMIN)
            assert second.status_code == 503
            assert second.json()["error"] == "too many open event streams (at most 1)"
            await deliver(client, "globex", "evt_other")  # filtered out
            await deliver(client, "acme", "evt_wanted")
            frame = await anext(received)
        id_line, data_line = frame
        event = orjson.loads(data_line.removeprefix("data: "))
        assert (event["source"], event["type"]) == ("tap/acme/default", params["type"])
        assert int(id_line.removeprefix("id: ")) == 2  # globex's event is sequence 1

        async def slot_free() -> bool:  # the server notices the client went away
            async with client.stream("GET", "/admin/events/stream", headers=ADMIN) as again:
                return again.status_code == 200

        await eventually(slot_free, 10.0, interval=0.05, what="the stream's slot freed")
        unauthorized = await client.get("/admin/events/stream")
        assert unauthorized.status_code == 401


async def test_the_cli_tails_new_events_until_interrupted(start_app: StartApp) -> None:
    """``ensemble-tap admin events tail``: one CloudEvent per line, filtered, ended by Ctrl-C."""
    app = start_app(server=SERVER, providers=PROVIDERS)
    cli = str(Path(sys.executable).parent / "ensemble-tap")
    tail = await asyncio.create_subprocess_exec(
        cli, "admin", "events", "tail", "--provider", "acme", "--url", app.url,
        env={**os.environ, "TAP_ADMIN_TOKEN": TOKEN}, stdout=asyncio.subprocess.PIPE,
        preexec_fn=_interruptible,
    )  # fmt: skip
    assert tail.stdout is not None
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            line = asyncio.ensure_future(tail.stdout.readline())
            sent = 0

            async def printed() -> bool:  # until the tail is subscribed, events pass it by
                nonlocal sent
                sent += 1
                await deliver(client, "globex", f"evt_other_{sent}")
                await deliver(client, "acme", f"evt_tail_{sent}")
                await asyncio.wait({line}, timeout=0.2)
                return line.done()

            await eventually(printed, 20.0, interval=0, what="a line from the tail")
        event = orjson.loads(line.result())
        assert event["source"] == "tap/acme/default"
        tail.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(tail.wait(), 10) == 0
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()


def _interruptible() -> None:
    """Ctrl-C as at a terminal: a test run started in the background (``make test &``)
    ignores SIGINT, and a Python child would inherit that and never see KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
