"""Poller controls of the running service (``POST /admin/pollers/{provider}/{tenant}/…``)
against the fake HubSpot API: run polls at once, pause stops cycles (another tenant's cycles
are the witness that time went by), resume restarts them, reset polls again from the initial
lookback, and a pause kept in SQLite holds across a restart."""

from __future__ import annotations

from typing import Any

import httpx
from typer.testing import CliRunner, Result

from ensemble_tap.cli import cli
from tests.integration.conftest import StartApp
from tests.support.app import RunningApp
from tests.support.fakes import at
from tests.support.fakes.hubspot import FakeHubSpot
from tests.support.waiting import eventually

TOKEN = "admin-token-0123456789"
ADMIN = {"X-Admin-Token": TOKEN}
WHY = {**ADMIN, "X-Admin-Reason": "upstream maintenance window"}
SERVER = {"admin_token": TOKEN, "admin_rate_limit_per_sec": 1000, "admin_rate_limit_burst": 1000}
T0 = at("2026-03-03T14:00:00Z")


def hubspot(fake: FakeHubSpot, interval: str) -> dict[str, Any]:
    return {
        "hubspot": {
            "mode": "poll",
            "objects": ["deals"],
            "base_url": fake.url,
            "poll_interval": interval,
            "tenants": {"tenant-a": {"access_token": "token-a"},
                        "tenant-b": {"access_token": "token-b"}},
        }
    }  # fmt: skip


def admin_cli(app: RunningApp, *args: str) -> Result:
    env = {"TAP_ADMIN_URL": app.url, "TAP_ADMIN_TOKEN": TOKEN, "COLUMNS": "200"}
    return CliRunner().invoke(cli, ["admin", *args], env=env)


def searches(fake: FakeHubSpot, token: str) -> list[dict[str, Any]]:
    """The search bodies a tenant sent, oldest first."""
    return [
        seen.json()
        for seen in fake.data_requests()
        if seen.path.endswith("/search") and seen.headers["authorization"] == f"Bearer {token}"
    ]


async def count_at_least(fake: FakeHubSpot, token: str, count: int) -> None:
    async def reached() -> bool:
        return len(searches(fake, token)) >= count

    await eventually(reached, 15.0, interval=0.02, what=f"{count} searches of {token}")


async def control(client: httpx.AsyncClient, tenant: str, action: str) -> httpx.Response:
    return await client.post(f"/admin/pollers/hubspot/{tenant}/{action}", headers=WHY)


async def poller(client: httpx.AsyncClient, tenant: str) -> dict[str, Any]:
    reply = await client.get("/admin/poller-status", params={"tenant": tenant}, headers=ADMIN)
    [entry] = reply.json()["pollers"]
    return dict(entry)


async def idle(client: httpx.AsyncClient, tenant: str) -> None:
    async def finished() -> bool:
        return not (await poller(client, tenant))["cycle_running"]

    await eventually(finished, 15.0, interval=0.02, what=f"{tenant}'s cycle to end")


async def test_pause_stops_cycles_and_resume_restarts_them(start_app: StartApp) -> None:
    async with FakeHubSpot(token="token-a") as fake:
        fake.tokens.add("token-b")
        fake.put("deals", "1", T0, dealname="Deal")
        app = start_app(server=SERVER, providers=hubspot(fake, "100ms"))
        async with httpx.AsyncClient(base_url=app.url) as client:
            await count_at_least(fake, "token-a", 2)
            paused = await control(client, "tenant-a", "pause")
            assert paused.status_code == 200, paused.text
            await idle(client, "tenant-a")  # a cycle in flight finishes
            held = len(searches(fake, "token-a"))
            # Tenant b keeps polling every 100 ms: three of its cycles, none of a's.
            await count_at_least(fake, "token-b", len(searches(fake, "token-b")) + 3)
            assert len(searches(fake, "token-a")) == held
            entry = await poller(client, "tenant-a")
            assert (entry["paused"], entry["paused_by"]) == (True, "primary")
            assert entry["pause_reason"] == WHY["X-Admin-Reason"] and "next_run_at" not in entry
            assert app.metric("tap_poller_paused", provider="hubspot", tenant="tenant-a") == 1
            assert (await control(client, "tenant-a", "resume")).status_code == 200
            await count_at_least(fake, "token-a", held + 2)
            assert app.metric("tap_poller_paused", provider="hubspot", tenant="tenant-a") == 0


async def test_run_reset_and_a_pause_that_survives_a_restart(start_app: StartApp) -> None:
    async with FakeHubSpot(token="token-a") as fake:
        fake.tokens.add("token-b")
        fake.put("deals", "1", T0, dealname="Deal")
        # An hour between cycles: every cycle after the first is one an operator asked for.
        sections = {"server": SERVER, "providers": hubspot(fake, "1h"),
                    "state": {"backend": "sqlite"}}  # fmt: skip
        app = start_app(**sections)
        async with httpx.AsyncClient(base_url=app.url) as client:
            await count_at_least(fake, "token-a", 1)
            [first] = searches(fake, "token-a")
            await idle(client, "tenant-a")
            run = await control(client, "tenant-a", "run")
            assert run.status_code == 202, run.text
            await count_at_least(fake, "token-a", 2)
            assert searches(fake, "token-a")[1] != first  # from the checkpoint, not the start
            await idle(client, "tenant-a")
            reset = await control(client, "tenant-a", "reset")
            assert reset.status_code == 200, reset.text
            assert reset.json()["result"]["checkpoints_removed"] >= 1
            assert "checkpoints" not in reset.json()["poller"]
            assert (await control(client, "tenant-a", "run")).status_code == 202
            await count_at_least(fake, "token-a", 3)
            assert searches(fake, "token-a")[2] == first  # from the initial lookback again
            await idle(client, "tenant-a")
            assert (await control(client, "tenant-a", "pause")).status_code == 200
        before = len(searches(fake, "token-a"))
        app.stop()

        again: RunningApp = start_app(**sections)
        async with httpx.AsyncClient(base_url=again.url) as client:
            entry = await poller(client, "tenant-a")
            assert entry["paused"] is True and entry["paused_by"] == "primary"
            await count_at_least(fake, "token-b", 2)  # b's start-up cycle ran; a's did not
            assert len(searches(fake, "token-a")) == before
            refused = await control(client, "tenant-a", "run")
            assert refused.status_code == 409
            assert refused.json()["error"] == "poller is paused: resume it first"
            listed = admin_cli(again, "pollers")
            assert listed.exit_code == 0, listed.output
            [row] = [line for line in listed.stdout.splitlines() if "tenant-a" in line]
            assert "paused by primary" in row
            resumed = admin_cli(again, "pollers", "resume", "hubspot", "tenant-a",
                                "--reason", "maintenance is over")  # fmt: skip
            # (the server runs in this process: its log lines land in the same stdout)
            assert resumed.stdout.endswith("\nhubspot/tenant-a: resumed\nstate: ok\n")
            await count_at_least(fake, "token-a", before + 1)  # due since the start: at once
            unknown = await client.post("/admin/pollers/hubspot/tenant-z/run", headers=WHY)
            assert unknown.status_code == 404
