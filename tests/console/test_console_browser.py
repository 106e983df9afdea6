"""The console in a real browser (headless Chromium) against a served instance with a real
nats-server and the embedded ClickHouse sink: sign in, find a webhook, replay a dead letter
after a dry run, a read-only token, a cross-site form post. Every page shown is saved as a
screenshot (tests/console/browser.py)."""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
from playwright.async_api import Browser, Page, expect

from ensemble_tap.bus.embedded import free_port
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.fakes import at
from tests.support.fakes.hubspot import FakeHubSpot
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers
from tests.support.waiting import eventually

FULL = "browser-full-token"
READ = "browser-read-token"
SECRET = "browser-secret"
MAX_MSG = 2_000  # the main stream refuses larger events: they become dead letters


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    directory = tmp_path_factory.mktemp("console-browser")
    server = NatsServer(directory / "nats").start()
    config = make_config(
        server.url,
        str(directory / "data"),
        providers={"acme": {"secret": SECRET}},
        server={
            "admin_token": FULL,
            "admin_token_read": READ,
            "admin_rate_limit_per_sec": 1000,
            "admin_rate_limit_burst": 1000,
        },
        nats={"stream_max_msg_size": MAX_MSG},
        clickhouse={"backend": "embedded", "flush_interval": "100ms"},
    )
    app = RunningApp(config).start()
    yield app
    app.stop()
    server.stop()


async def signed_in(browser: Browser, app: RunningApp, token: str, shots: Path) -> Page:
    """A page of a new browser context, signed in with ``token`` through the form, using
    the keyboard only."""
    # A zone other than UTC: the pages show local times, UTC on hover.
    context = await browser.new_context(
        viewport={"width": 1280, "height": 800}, timezone_id="Europe/Berlin", locale="en-GB"
    )
    page = await context.new_page()
    await page.goto(f"{app.url}/console")
    await expect(page).to_have_url(f"{app.url}/console/login")
    await page.screenshot(path=shots / "sign-in.png")
    await page.keyboard.type(token)  # the token field has the focus
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


async def section(page: Page, name: str) -> None:
    """Follow the navigation bar's link to a section."""
    await page.get_by_role("navigation").get_by_role("link", name=name).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(name)


async def send(app: RunningApp, *, event_id: str, request_id: str, pad: int = 0) -> int:
    body = orjson.dumps({"id": f"deal_{event_id}", "amount": 5, "pad": "x" * pad})
    headers = {
        **generic_headers(SECRET, body, "deal.updated", event_id),
        "X-Request-ID": request_id,
    }
    async with httpx.AsyncClient(base_url=app.url) as client:
        response = await client.post("/webhooks/acme", content=body, headers=headers)
    return response.status_code


async def admin_json(app: RunningApp, path: str, **params: str) -> Any:
    async with httpx.AsyncClient(base_url=app.url, headers={"X-Admin-Token": FULL}) as client:
        return (await client.get(path, params=params)).json()


async def test_a_webhook_is_found_and_traced(
    browser: Browser, served: RunningApp, shots: Path
) -> None:
    page = await signed_in(browser, served, FULL, shots)
    assert await send(served, event_id="evt_browser_1", request_id="req-browser-1") == 202

    async def stored() -> bool:
        found = await admin_json(served, "/admin/events", request_id="req-browser-1")
        return bool(found["events"])

    await eventually(stored, 30.0, what="the webhook stored by the sink")
    await section(page, "Events")
    await page.get_by_label("Request id", exact=True).fill("req-browser-1")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("link", name="evt_browser_1")).to_be_visible()
    await page.screenshot(path=shots / "events.png")
    await page.get_by_role("link", name="evt_browser_1").click()
    await expect(page.get_by_role("heading", name="ClickHouse row")).to_be_visible()
    await expect(page.locator("pre").last).to_contain_text('"deal_evt_browser_1"')
    # Times are shown in the browser's zone, UTC kept in the title.
    title = await page.locator("time").first.get_attribute("title")
    assert title is not None and title.endswith("Z (UTC)")
    await page.screenshot(path=shots / "event-trace.png", full_page=True)


async def test_a_dead_letter_is_dry_run_then_replayed(
    browser: Browser, served: RunningApp, shots: Path
) -> None:
    assert await send(served, event_id="evt_too_big", request_id="req-big", pad=MAX_MSG) == 500
    # The operator fixes the cause (the stream takes larger messages) before replaying.
    assert served.config.nats.url is not None
    client = await nats.connect(served.config.nats.url)
    try:
        info = await client.jetstream().stream_info(served.config.nats.stream)
        info.config.max_msg_size = -1
        await client.jetstream().update_stream(info.config)
    finally:
        await client.close()

    page = await signed_in(browser, served, FULL, shots)
    await section(page, "Dead letters")
    await page.get_by_label("Stage", exact=True).fill("publish")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("cell", name="publish", exact=True)).to_have_count(1)
    await page.screenshot(path=shots / "dead-letters.png", full_page=True)
    await page.get_by_role("link", name=re.compile(r"^dead letter \d+$")).click()
    await expect(page.get_by_role("heading", name="Payload", exact=True)).to_be_visible()
    await expect(page.locator("#letter-reason")).to_contain_text("message size")
    await expect(page.locator("#letter-body")).to_contain_text('"deal_evt_too_big"')
    await page.screenshot(path=shots / "dead-letter.png", full_page=True)
    await page.go_back()

    await page.get_by_label("Reason", exact=False).first.fill("stream limit raised, INC-42")
    await page.get_by_role("button", name="Preview (dry run)").click()
    replay = page.get_by_role("button", name="Replay 1 record(s)")
    await expect(replay).to_be_visible()  # the page refreshes itself until the dry run ends
    await expect(page.locator("#would-replay")).to_have_text("1")
    await page.screenshot(path=shots / "replay-dry-run.png", full_page=True)

    await page.get_by_label("Reason", exact=False).first.fill("stream limit raised, INC-42")
    await replay.click()
    await expect(page.locator(".badge-succeeded").first).to_be_visible()
    await expect(page.locator("#replayed")).to_have_text("1")
    await page.screenshot(path=shots / "replay-job.png", full_page=True)

    await page.get_by_role("link", name="All replay jobs").click()
    await expect(page.get_by_role("cell", name="dry run")).to_have_count(1)
    await page.screenshot(path=shots / "replay-jobs.png", full_page=True)
    letters = await admin_json(served, "/admin/dlq", stage="publish")
    assert letters["records"] == []
    found = await admin_json(served, "/admin/events", request_id="req-big")
    assert found["events"] == [] or found["events"][0]["id"] == "evt_too_big"


async def test_a_read_only_token_sees_no_actions(
    browser: Browser, served: RunningApp, shots: Path
) -> None:
    page = await signed_in(browser, served, READ, shots)
    await section(page, "Dead letters")
    await expect(page.get_by_role("heading", name="Records, newest first")).to_be_visible()
    await expect(page.get_by_role("button", name="Preview (dry run)")).to_have_count(0)
    await expect(page.locator("form[method=post]")).to_have_count(1)  # sign out only
    await page.screenshot(path=shots / "read-only.png", full_page=True)
    await section(page, "Pollers")
    await expect(page.get_by_role("heading", name="Pollers")).to_be_visible()
    await expect(page.locator("form[method=post]")).to_have_count(1)


class _Attacker(BaseHTTPRequestHandler):
    """Another origin's page that posts a replay form to the console as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>win a prize</title><body>"
            f'<form id="f" method="post" action="{self.target}/console/replay">'
            '<input name="csrf" value="guessed"><input name="reason" value="not me at all">'
            '<input name="dry_run" value="false"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def attacker(served: RunningApp) -> Iterator[str]:
    handler = type("Attacker", (_Attacker,), {"target": served.url})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join(10)


async def test_a_cross_site_form_post_is_refused(
    browser: Browser, served: RunningApp, shots: Path, attacker: str
) -> None:
    page = await signed_in(browser, served, FULL, shots)
    before = (await admin_json(served, "/admin/replay-dlq"))["summary"]
    async with page.expect_navigation(url=f"{served.url}/console/replay") as navigation:
        await page.goto(attacker)
    answer = await navigation.value
    assert answer is not None and answer.status == 403
    await expect(page.get_by_role("alert")).to_contain_text("cross-site request refused")
    await page.screenshot(path=shots / "cross-site-refused.png")
    assert (await admin_json(served, "/admin/replay-dlq"))["summary"] == before


async def test_a_webhook_appears_in_the_live_tail(
    browser: Browser, served: RunningApp, shots: Path
) -> None:
    page = await signed_in(browser, served, READ, shots)
    await section(page, "Live tail")
    await page.get_by_label("Provider", exact=True).fill("acme")
    await page.get_by_role("button", name="Follow").click()
    # Subscribed: what is published from now on is relayed to the page.
    await expect(page.locator("#tail-state")).to_contain_text("Connected")
    assert await send(served, event_id="evt_tail_browser", request_id="req-tail") == 202
    await expect(page.get_by_role("link", name="evt_tail_browser")).to_be_visible()
    await expect(page.locator("#tail tbody tr").first).to_contain_text("deal.updated")
    await page.screenshot(path=shots / "live-tail.png", full_page=True)
    assert READ not in await page.content()  # the token stays on the server


async def test_the_overview_charts_the_last_hour(
    browser: Browser, served: RunningApp, shots: Path
) -> None:
    """Webhooks sent now show in the next point of the history (one every 10 s)."""
    for number in range(3):
        assert await send(served, event_id=f"evt_chart_{number}", request_id="req-c") == 202

    async def charted() -> bool:
        history = await admin_json(served, "/admin/metrics/history")
        return any(point.get("webhooks_per_s", 0) > 0 for point in history["points"][-2:])

    await eventually(charted, 30.0, interval=0.5, what="a point with the webhooks sent")
    page = await signed_in(browser, served, FULL, shots)
    chart = page.locator("#chart-webhooks")
    await expect(chart.locator("svg path")).to_have_count(1)
    await expect(page.get_by_role("img", name=re.compile("^Outcomes"))).to_be_visible()
    await page.screenshot(path=shots / "overview.png", full_page=True)


def searches(fake: FakeHubSpot, token: str) -> int:
    return sum(
        1
        for seen in fake.data_requests()
        if seen.path.endswith("/search") and seen.headers["authorization"] == f"Bearer {token}"
    )


async def more_searches(fake: FakeHubSpot, token: str, count: int) -> None:
    async def reached() -> bool:
        return searches(fake, token) >= count

    await eventually(reached, 15.0, interval=0.02, what=f"{count} searches of {token}")


@pytest.fixture
async def polling(
    private_nats: NatsServer, tmp_path: Path
) -> AsyncIterator[tuple[RunningApp, FakeHubSpot]]:
    """A service polling two HubSpot tenants of the fake API every 100 ms."""
    async with FakeHubSpot(token="token-a") as fake:
        fake.tokens.add("token-b")
        fake.put("deals", "1", at("2026-03-03T14:00:00Z"), dealname="Deal")
        tenants = {"tenant-a": {"access_token": "token-a"},
                   "tenant-b": {"access_token": "token-b"}}  # fmt: skip
        providers = {
            "hubspot": {"mode": "poll", "objects": ["deals"], "base_url": fake.url,
                        "poll_interval": "100ms", "tenants": tenants},
        }  # fmt: skip
        config = make_config(
            private_nats.url,
            str(tmp_path / "data"),
            providers=providers,
            server={"admin_token": FULL, "admin_rate_limit_per_sec": 1000,
                    "admin_rate_limit_burst": 1000},
        )  # fmt: skip
        app = RunningApp(config).start()
        try:
            yield app, fake
        finally:
            app.stop()


async def test_a_paused_poller_stops_polling_until_resumed(
    browser: Browser, polling: tuple[RunningApp, FakeHubSpot], shots: Path
) -> None:
    app, fake = polling
    await more_searches(fake, "token-a", 2)
    page = await signed_in(browser, app, FULL, shots)
    await section(page, "Pollers")
    row = page.locator("#poller-hubspot-tenant-a")
    await row.get_by_label("Reason for hubspot/tenant-a").fill("HubSpot maintenance, INC-9")
    await row.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("status")).to_contain_text("hubspot / tenant-a is paused")
    await expect(row.locator(".badge-paused")).to_be_visible()

    async def idle() -> bool:
        status = await admin_json(app, "/admin/poller-status", tenant="tenant-a")
        return not status["pollers"][0]["cycle_running"]

    await eventually(idle, 15.0, interval=0.02, what="tenant-a's cycle in flight to end")
    held = searches(fake, "token-a")
    # Tenant b polls on every 100 ms: three of its cycles go by, none of tenant a's.
    await more_searches(fake, "token-b", searches(fake, "token-b") + 3)
    assert searches(fake, "token-a") == held
    await page.reload()
    await page.screenshot(path=shots / "pollers.png", full_page=True)

    await row.get_by_label("Reason for hubspot/tenant-a").fill("check before resuming")
    await row.get_by_role("button", name="Reset checkpoint…").click()
    await expect(page.get_by_role("heading", name="Reset hubspot / tenant-a?")).to_be_visible()
    await page.screenshot(path=shots / "poller-reset.png", full_page=True)
    await page.get_by_role("link", name="Cancel").click()

    await row.get_by_label("Reason for hubspot/tenant-a").fill("maintenance is over")
    await row.get_by_role("button", name="Resume").click()
    await expect(page.get_by_role("status")).to_contain_text("hubspot / tenant-a is resumed")
    await more_searches(fake, "token-a", held + 2)
