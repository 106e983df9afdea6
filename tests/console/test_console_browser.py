"""The console in a real browser (headless Chromium) against a served instance with a real
nats-server and the embedded ClickHouse sink: sign in, find a webhook, replay a dead letter
after a dry run, a read-only token, a cross-site form post. Every page shown is saved as a
screenshot (tests/console/browser.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
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
    await page.screenshot(path=shots / "overview.png")
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
    await page.screenshot(path=shots / "pollers.png", full_page=True)


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
