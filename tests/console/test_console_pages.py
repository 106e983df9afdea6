"""The console's pages over the newer admin routes, without a browser: one dead letter and
its one-record replay, the live tail relayed with the session's token, the overview's charts
(and the chart drawing itself)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import nats
import orjson
import pytest

from ensemble_tap.console.charts import CHARTS, draw, nice_ceiling
from tests.console.test_console_http import FULL, READ, SERVER, csrf_in, signed_in
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers

SECRET = "pages-secret"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    directory = tmp_path_factory.mktemp("console-pages")
    server = NatsServer(directory / "nats").start()
    config = make_config(
        server.url, str(directory / "data"), providers={"acme": {"secret": SECRET}}, server=SERVER
    )
    app = RunningApp(config).start()
    yield app
    app.stop()
    server.stop()


async def dead_letter(app: RunningApp, event_id: str, body: bytes) -> int:
    """A publish-stage record as the service writes one; its DLQ sequence."""
    record = {
        "id": f"dlq_{event_id}",
        "stage": "publish",
        "provider": "acme",
        "tenant_id": "tenant-a",
        "request_id": f"req-{event_id}",
        "reason": "publish nats message: <b>too big</b>",
        "original_subject": "ensemble.tap.acme.deal.updated",
        "original_dedup_id": f"acme::{event_id}",
        "original_payload": base64.b64encode(body).decode(),
        "occurred_at": "2026-11-28T00:00:00Z",
        "request_meta": {
            "method": "POST",
            "path": "/webhooks/acme/tenant-a",
            "headers": {"Content-Type": "application/json", "X-Event-Type": "deal.updated"},
        },
    }
    assert app.config.nats.url is not None
    client = await nats.connect(app.config.nats.url)
    try:
        ack = await client.jetstream().publish("ensemble.dlq.publish.acme", orjson.dumps(record))
    finally:
        await client.close()
    return int(ack.seq)


@contextlib.asynccontextmanager
async def browser_like(app: RunningApp, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """An async client holding a console session signed in with ``token``."""
    with signed_in(app, token) as signed:
        cookies = httpx.Cookies(signed.cookies)
    async with httpx.AsyncClient(base_url=app.url, cookies=cookies, timeout=30) as client:
        yield client


async def test_one_dead_letter_with_its_request_and_a_replay_of_it_alone(
    served: RunningApp,
) -> None:
    body = b'{"id": "deal_1", "note": "<script>alert(1)</script>"}'
    sequence = await dead_letter(served, "evt_page_1", body)
    other = await dead_letter(served, "evt_page_2", b'{"id": "deal_2"}')
    async with browser_like(served, FULL) as client:
        listing = (await client.get("/console/dlq")).text
        page = await client.get(f"/console/dlq/{sequence}")
        missing = await client.get("/console/dlq/999999")
        form = {
            "csrf": csrf_in(page.text),
            "reason": "one record, INC-7",
            "dry_run": "true",
            "sequence": str(sequence),
            "limit": "1",
            "nonce": "n-1",
        }
        dry = await client.post("/console/replay", data=form)
        job_path = dry.headers["location"]
        job_page = await client.get(job_path)

    assert f'href="/console/dlq/{sequence}"' in listing
    assert f'href="/console/dlq/{other}"' in listing
    assert page.status_code == 200
    text = page.text
    assert "publish nats message: &lt;b&gt;too big&lt;/b&gt;" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>alert" not in text
    assert "<code>X-Event-Type</code>" in text and "/webhooks/acme/tenant-a" in text
    assert f'name="sequence" value="{sequence}"' in text
    assert "Preview (dry run)" in text
    assert missing.status_code == 404 and "no dead letter" in missing.text
    assert dry.status_code == 303 and job_path.startswith("/console/jobs/replay_")
    assert f"dead letter {sequence}</a> only" in job_page.text


async def test_a_read_only_token_sees_the_record_without_a_replay(served: RunningApp) -> None:
    sequence = await dead_letter(served, "evt_page_ro", b"{}")
    async with browser_like(served, READ) as client:
        page = await client.get(f"/console/dlq/{sequence}")
    assert page.status_code == 200 and "dlq_evt_page_ro" in page.text
    assert 'action="/console/replay"' not in page.text


async def first_event(
    response: httpx.Response, once_connected: Callable[[], Awaitable[None]]
) -> dict[str, str]:
    """The first server-sent event of ``response`` (its fields); ``once_connected`` runs when
    the stream says it is subscribed (``: connected``), so nothing published after is missed."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == ": connected":
            await once_connected()
        elif not line and fields:
            return fields
        elif line and not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    raise AssertionError("the stream ended without an event")


async def test_the_live_tail_relays_the_event_stream_with_the_sessions_token(
    served: RunningApp,
) -> None:
    body = orjson.dumps({"id": "deal_tail", "amount": 1})
    headers = generic_headers(SECRET, body, "deal.updated", "evt_tail_1")
    async with browser_like(served, READ) as client:
        page = await client.get("/console/tail", params={"provider": "acme", "type": ""})

        async def send_webhook() -> None:
            answer = await client.post("/webhooks/acme", content=body, headers=headers)
            assert answer.status_code == 202

        async with client.stream(
            "GET", "/console/tail/stream", params={"provider": "acme"}
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["x-content-type-options"] == "nosniff"
            seen = await asyncio.wait_for(first_event(stream, send_webhook), 15.0)
    assert page.status_code == 200
    assert 'data-stream="/console/tail/stream?provider=acme"' in page.text
    assert 'href="/console/events?provider=acme"' in page.text  # the no-script way
    assert READ not in page.text
    event = orjson.loads(seen["data"])
    assert event["id"] == "evt_tail_1" and event["source"].startswith("tap/acme")
    assert int(seen["id"]) >= 1


async def test_the_tail_stream_needs_a_session(served: RunningApp) -> None:
    async with httpx.AsyncClient(base_url=served.url) as client:
        answer = await client.get("/console/tail/stream")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login")


async def test_the_overview_draws_the_last_hour(served: RunningApp) -> None:
    async with browser_like(served, READ) as client:
        page = await client.get("/console")
    assert page.status_code == 200
    assert len(re.findall(r'<svg class="chart"', page.text)) == len(CHARTS)
    assert '<meta http-equiv="refresh" content="10">' in page.text  # without script
    assert 'data-live id="charts-live"' in page.text


def test_a_chart_breaks_its_line_where_a_value_is_unknown() -> None:
    end = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)
    points = [
        (end - timedelta(seconds=40), {"webhooks_per_s": 2.0}),
        (end - timedelta(seconds=30), {"webhooks_per_s": 4.0}),
        (end - timedelta(seconds=20), {}),  # unknown: a gap
        (end - timedelta(seconds=10), {"webhooks_per_s": 3.0}),
    ]
    chart = next(c for c in CHARTS if c.id == "webhooks")
    drawn = draw(chart, points, start=end - timedelta(hours=1), end=end)
    [path] = re.findall(r'<path class="line-1" d="([^"]+)"', str(drawn.svg))
    assert path.count("M") == 2  # two segments: before and after the gap
    assert ">5</text>" in str(drawn.svg)  # the axis' top: 4 rounded up to 5
    assert drawn.latest[0][1] == 3.0
    empty = draw(chart, [], start=end - timedelta(hours=1), end=end)
    assert "<path" not in str(empty.svg) and empty.latest[0][1] is None


@pytest.mark.parametrize(
    ("value", "top"), [(0.0, 1.0), (0.3, 0.5), (1.0, 1.0), (1.2, 2.0), (7.0, 10.0), (120, 200)]
)
def test_axis_tops_are_round(value: float, top: float) -> None:
    assert nice_ceiling(value) == pytest.approx(top)
