"""Poller actions from the console against a served instance polling the fake HubSpot API:
each action is the admin call with the operator's reason, reset asks for confirmation first,
a refusal (409) says why, a read-only token sees no action and cannot post one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.test_console_http import FULL, READ, SERVER, csrf_in, signed_in
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.fakes import at
from tests.support.fakes.hubspot import FakeHubSpot
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually

WHY = "upstream maintenance window"


def hubspot(fake: FakeHubSpot) -> dict[str, Any]:
    return {
        "hubspot": {
            "mode": "poll",
            "objects": ["deals"],
            "base_url": fake.url,
            "poll_interval": "1h",  # every cycle after the first is one the test asked for
            "tenants": {"tenant-a": {"access_token": "token-a"}},
        }
    }


@pytest.fixture
async def polling(private_nats: NatsServer, tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with FakeHubSpot(token="token-a") as fake:
        fake.put("deals", "1", at("2026-03-03T14:00:00Z"), dealname="Deal")
        config = make_config(
            private_nats.url, str(tmp_path / "data"), server=SERVER, providers=hubspot(fake)
        )
        app = RunningApp(config).start()
        try:
            yield app
        finally:
            app.stop()


async def status(app: RunningApp) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=app.url, headers={"X-Admin-Token": FULL}) as client:
        [entry] = (await client.get("/admin/poller-status")).json()["pollers"]
    return dict(entry)


async def idle(app: RunningApp) -> None:
    async def finished() -> bool:
        entry = await status(app)
        return bool(entry.get("last_success_at")) and not entry.get("cycle_running")

    await eventually(finished, 15.0, interval=0.05, what="tenant-a's first cycle to end")


def act(client: httpx.Client, action: str, **form: str) -> httpx.Response:
    csrf = csrf_in(client.get("/console/pollers").text)
    return client.post(
        f"/console/pollers/hubspot/tenant-a/{action}", data={"csrf": csrf, "reason": WHY, **form}
    )


async def test_pause_resume_and_a_confirmed_reset(polling: RunningApp) -> None:
    await idle(polling)
    with signed_in(polling, FULL) as client:
        page = client.get("/console/pollers").text
        paused = act(client, "pause")
        after_pause = client.get(paused.headers["location"]).text
        entry = await status(polling)
        again = act(client, "pause")  # already paused: the admin API refuses (409)
        resumed = act(client, "resume")
        asked = act(client, "reset")  # no confirmation yet: nothing is reset
        unchanged = await status(polling)
        confirmed = act(client, "reset", confirm="yes")
        reset = await status(polling)

    assert 'action="/console/pollers/hubspot/tenant-a/run"' in page
    assert 'formaction="/console/pollers/hubspot/tenant-a/pause"' in page
    assert paused.status_code == 303
    assert paused.headers["location"].startswith("/console/pollers?did=pause")
    assert "hubspot / tenant-a is paused" in after_pause
    assert re.search(r"badge-paused.*by primary", after_pause, re.S)
    assert 'formaction="/console/pollers/hubspot/tenant-a/resume"' in after_pause
    assert (entry["paused"], entry["pause_reason"]) == (True, WHY)
    assert again.status_code == 409 and "already paused" in again.text
    assert 'href="/console/pollers"' in again.text  # the error page leads back
    assert resumed.status_code == 303 and not (await status(polling)).get("paused")
    assert asked.status_code == 200 and 'name="confirm" value="yes"' in asked.text
    assert f'value="{WHY}"' in asked.text  # the reason is carried to the confirmation
    assert unchanged.get("checkpoints")
    assert confirmed.status_code == 303, confirmed.text
    assert "checkpoints" not in reset


async def test_a_read_only_token_sees_no_poller_actions_and_cannot_post_them(
    polling: RunningApp,
) -> None:
    with signed_in(polling, READ) as client:
        page = client.get("/console/pollers").text
        refused = act(client, "pause")
    assert "hubspot" in page and "/console/pollers/hubspot" not in page
    assert refused.status_code == 403 and "does not grant this action" in refused.text
    assert not (await status(polling)).get("paused")


async def test_a_poller_action_needs_a_reason_and_this_sites_origin(
    polling: RunningApp,
) -> None:
    with signed_in(polling, FULL) as client:
        blank = act(client, "pause", reason="  ")
        csrf = csrf_in(client.get("/console/pollers").text)
        forged = client.post(
            "/console/pollers/hubspot/tenant-a/pause",
            data={"csrf": csrf, "reason": WHY},
            headers={"Origin": "http://evil.example"},
        )
        unknown = act(client, "explode")
    assert blank.status_code == 400 and "reason is required" in blank.text
    assert forged.status_code == 403 and "cross-site" in forged.text
    assert unknown.status_code == 404
    assert not (await status(polling)).get("paused")
