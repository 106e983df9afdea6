"""HubSpot polling against a fake CRM API: search requests, created / updated / deleted,
the boundary timestamp, budgets, the search window, rate limits, token refresh, tenants."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from ensemble_tap.providers.hubspot import HubSpotPoller
from tests.support.cloudevent import parse_cloudevent
from tests.support.fakes import at
from tests.support.fakes.hubspot import FakeHubSpot
from tests.support.polling import poll_rig

T0 = at("2026-03-03T14:00:00Z")
MINUTE = 60 * 1_000_000_000


def hubspot(fake: FakeHubSpot, **extra: Any) -> dict[str, Any]:
    settings = {
        "mode": "poll",
        "access_token": "hubspot-token",
        "base_url": fake.url + "/",
        "objects": ["deals"],
        **extra,
    }
    return {"hubspot": settings}


def ids(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["data"]["entity_id"], e["data"]["action"]) for e in events]


async def test_first_cycle_creates_every_record(nats_url: str, data_dir: str) -> None:
    async with FakeHubSpot() as fake:
        fake.put("deals", "1", T0, dealname="Alpha", amount="100")
        fake.put("deals", "2", T0 + MINUTE, dealname="Beta", amount="200")
        async with poll_rig(nats_url, data_dir, hubspot(fake)) as rig:
            stats = await rig.cycle()
            events = await rig.events()

    assert (stats.created, stats.updated, stats.fetched, stats.truncated) == (2, 0, 2, False)
    assert ids(events) == [("1", "created"), ("2", "created")]
    first = events[0]
    subject_prefix = rig.config.nats.subject_prefix
    assert first["_subject"] == f"{subject_prefix}.hubspot.deal.created"
    assert first["type"] == "ensemble.tap.hubspot.deal.created"
    assert first["source"] == "tap/hubspot/default"
    assert first["subject"] == "deal/1"
    assert first["time"] == "2026-03-03T14:00:00Z"
    # The reference's string plus the SHA-256 of the snapshot as sorted compact JSON.
    content = hashlib.sha256(orjson.dumps(first["data"]["snapshot"], option=orjson.OPT_SORT_KEYS))
    raw = f"hubspot||deal|1|created|2026-03-03T14:00:00Z|sha256:{content.hexdigest()}"
    expected_id = "poll_" + hashlib.sha256(raw.encode()).hexdigest()
    assert first["id"] == first["_msg_id"] == expected_id
    snapshot = first["data"]["snapshot"]
    assert snapshot["id"] == "1" and snapshot["dealname"] == "Alpha"
    assert first["data"]["changes"]["dealname"] == {"from": None, "to": "Alpha"}
    body = dict(first)
    for key in ("_subject", "_msg_id"):
        body.pop(key)
    assert parse_cloudevent(orjson.dumps(body)).get_id() == expected_id  # the SDK agrees

    search, archived = fake.data_requests()[:2]
    assert search.method == "POST" and search.path == "/crm/v3/objects/deals/search"
    assert search.headers["authorization"] == "Bearer hubspot-token"
    assert search.json() == {
        "limit": 100,
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
    }
    assert archived.path == "/crm/v3/objects/deals"
    assert archived.query["archived"] == ["true"]


async def test_update_unchanged_and_next_query(nats_url: str, data_dir: str) -> None:
    async with FakeHubSpot() as fake:
        fake.put("deals", "d1", T0, dealstage="open", amount="100")
        async with poll_rig(nats_url, data_dir, hubspot(fake)) as rig:
            await rig.cycle()
            await rig.events()
            unchanged = await rig.cycle()
            assert await rig.events() == []
            assert unchanged.unchanged == 1
            fake.put("deals", "d1", T0 + 2 * MINUTE, dealstage="won", amount="100")
            updated = await rig.cycle()
            events = await rig.events()

    assert updated.updated == 1
    assert ids(events) == [("d1", "updated")]
    changes = events[0]["data"]["changes"]
    assert changes["dealstage"] == {"from": "open", "to": "won"}
    assert "amount" not in changes
    assert set(changes) == {"dealstage", "hs_lastmodifieddate"}
    # Later passes start one lookback (1m) before the checkpoint, inclusive.
    later = [r.json() for r in fake.data_requests() if r.path.endswith("/search")][1]
    assert later["filterGroups"] == [
        {"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE",
                      "value": str((T0 - MINUTE) // 1_000_000)}]}
    ]  # fmt: skip


async def test_contacts_use_their_own_cursor_and_requested_properties(
    nats_url: str, data_dir: str
) -> None:
    async with FakeHubSpot() as fake:
        fake.put("contacts", "c1", T0, email="a@example.com", firstname="Ann")
        providers = hubspot(fake, objects=["contacts"], fields=["email"])
        async with poll_rig(nats_url, data_dir, providers) as rig:
            await rig.cycle()
            events = await rig.events()
    body = fake.data_requests()[0].json()
    assert body["sorts"][0]["propertyName"] == "lastmodifieddate"
    assert body["properties"] == ["email", "lastmodifieddate"]
    assert events[0]["type"] == "ensemble.tap.hubspot.contact.created"
    assert events[0]["time"] == "2026-03-03T14:00:00Z"  # from lastmodifieddate, not "now"
    assert "firstname" not in events[0]["data"]["snapshot"]


async def test_archived_record_is_deleted_once(nats_url: str, data_dir: str) -> None:
    async with FakeHubSpot() as fake:
        fake.put("deals", "1", T0, dealname="Alpha")
        fake.put("deals", "2", T0, dealname="Beta")
        # 5m interval: the archived list (a full listing) is read every cycle.
        async with poll_rig(nats_url, data_dir, hubspot(fake, poll_interval="5m")) as rig:
            await rig.cycle()
            await rig.events()
            fake.archive("deals", "2", T0 + 5 * MINUTE)
            stats = await rig.cycle()
            events = await rig.events()
            again = await rig.cycle()
            assert await rig.events() == []

    assert stats.deleted == 1 and again.deleted == 0
    assert ids(events) == [("2", "deleted")]
    deleted = events[0]
    assert deleted["type"] == "ensemble.tap.hubspot.deal.deleted"
    assert deleted["time"] == "2026-03-03T14:05:00Z"  # archivedAt
    assert deleted["data"]["snapshot"]["dealname"] == "Beta"  # the last known state
    assert "changes" not in deleted["data"]


async def test_records_sharing_the_boundary_timestamp_are_all_delivered(
    nats_url: str, data_dir: str
) -> None:
    async with FakeHubSpot() as fake:
        fake.put("deals", "a", T0, dealname="first")
        async with poll_rig(nats_url, data_dir, hubspot(fake)) as rig:
            await rig.cycle()
            # Same millisecond as the checkpoint, indexed by HubSpot only now.
            fake.put("deals", "b", T0, dealname="late")
            await rig.cycle()
            events = await rig.events()
    assert ids(events) == [("a", "created"), ("b", "created")]


async def test_truncated_cycles_deliver_everything_exactly_once(
    nats_url: str, data_dir: str
) -> None:
    async with FakeHubSpot() as fake:
        for n in range(7):
            fake.put("deals", f"r{n}", T0 + n * 1_000_000_000, n=str(n))
        providers = hubspot(fake, query_per_page=2, poll_max_pages=1)
        async with poll_rig(nats_url, data_dir, providers) as rig:
            first = await rig.cycle()
            # Changed while the pass is cut short: it moves to the end of the ordering.
            fake.put("deals", "r0", T0 + 30 * 1_000_000_000, n="0 changed")
            truncated = [first.truncated]
            for _ in range(6):
                stats = await rig.cycle()
                truncated.append(stats.truncated)
            events = await rig.events()
            status = rig.service.status()[0]
            requests = rig.metric("tap_poller_fetch_requests_total", provider="hubspot", tenant="")
            capped = rig.metric("tap_poller_fetch_truncated_total", provider="hubspot", tenant="")

    assert truncated[:4] == [True, True, True, True]
    assert ids(events) == [
        ("r0", "created"), ("r1", "created"), ("r2", "created"), ("r3", "created"),
        ("r4", "created"), ("r5", "created"), ("r6", "created"), ("r0", "updated"),
    ]  # fmt: skip
    assert len({e["id"] for e in events}) == len(events)
    assert status["last_cycle"]["pages"] == 1
    assert requests == 7 and capped >= 4


async def test_search_window_restarts_from_the_newest_time_seen(
    nats_url: str, data_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HubSpotPoller, "search_window", 4)
    async with FakeHubSpot(window=4) as fake:
        for n in range(11):
            fake.put("deals", f"w{n:02d}", T0 + (n // 2) * 1_000_000_000, n=str(n))
        async with poll_rig(nats_url, data_dir, hubspot(fake, query_per_page=2)) as rig:
            stats = await rig.cycle()
            events = await rig.events()
    assert stats.created == 11 and rig.service.status()[0].get("last_error") is None
    assert sorted(e["data"]["entity_id"] for e in events) == [f"w{n:02d}" for n in range(11)]
    searches = [r.json() for r in fake.data_requests() if r.path.endswith("/search")]
    assert all(int(body.get("after", 0)) + body["limit"] <= 4 for body in searches)
    assert any("filterGroups" in body for body in searches)


async def test_rate_limit_waits_for_retry_after(nats_url: str, data_dir: str) -> None:
    async with FakeHubSpot() as fake:
        fake.put("deals", "1", T0)
        async with poll_rig(nats_url, data_dir, hubspot(fake)) as rig:
            fake.rate_limit_next("7")
            scheduler = rig.scheduler()
            next_at = await scheduler.run_once()
            status = rig.service.status()[0]
            assert next_at - rig.clock.monotonic() == pytest.approx(7.0)
            assert status["last_error"] == "hubspot rate limited; retry after 7s"
            assert status["consecutive_failures"] == 1
            rig.clock.advance(7)
            await scheduler.run_once()
            assert [e["data"]["entity_id"] for e in await rig.events()] == ["1"]
            assert rig.service.status()[0]["consecutive_failures"] == 0


async def test_expired_token_is_refreshed_once(nats_url: str, data_dir: str) -> None:
    async with FakeHubSpot(token="") as fake:
        fake.put("deals", "1", T0)
        providers = hubspot(
            fake,
            access_token="expired",
            token_url=f"{fake.url}/oauth/token",
            client_id="client-id",
            client_secret="client-secret",
            refresh_token="refresh-1",
        )
        async with poll_rig(nats_url, data_dir, providers) as rig:
            await rig.cycle()
            await rig.cycle()
            events = await rig.events()
            refreshes = rig.metric(
                "tap_poller_token_refreshes_total", provider="hubspot", tenant="",
                outcome="success",
            )  # fmt: skip
    assert ids(events) == [("1", "created")]
    assert fake.oauth.calls == [
        {"grant_type": "refresh_token", "refresh_token": "refresh-1",
         "client_id": "client-id", "client_secret": "client-secret"}
    ]  # fmt: skip
    auths = [r.headers["authorization"] for r in fake.data_requests()]
    assert auths[0] == "Bearer expired"
    assert set(auths[1:]) == {"Bearer access-2"}
    assert refreshes == 1


async def test_tenants_poll_separately_with_their_own_credentials(
    nats_url: str, data_dir: str
) -> None:
    async with FakeHubSpot(token="token-a") as portal_a, FakeHubSpot(token="token-b") as portal_b:
        portal_a.put("deals", "1", T0, dealname="A's deal")
        portal_b.put("deals", "1", T0, dealname="B's deal")
        providers = {
            "hubspot": {
                "mode": "poll",
                "objects": ["deals"],
                "tenants": {
                    "tenant-a": {"access_token": "token-a", "base_url": portal_a.url},
                    "tenant-b": {"access_token": "token-b", "base_url": portal_b.url},
                },
            }
        }
        async with poll_rig(nats_url, data_dir, providers) as rig:
            assert [s.target.state_key for s in rig.schedulers] == [
                "hubspot::tenant-a",
                "hubspot::tenant-b",
            ]
            await rig.cycle("tenant-a")
            await rig.cycle("tenant-b")
            events = await rig.events()
            await rig.cycle("tenant-a")
            assert await rig.events() == []
            status = rig.service.status()

    assert [(e["source"], e["data"]["snapshot"]["dealname"]) for e in events] == [
        ("tap/hubspot/tenant-a", "A's deal"),
        ("tap/hubspot/tenant-b", "B's deal"),
    ]
    assert events[0]["id"] != events[1]["id"]
    assert {r.headers["authorization"] for r in portal_a.data_requests()} == {"Bearer token-a"}
    assert {r.headers["authorization"] for r in portal_b.data_requests()} == {"Bearer token-b"}
    assert [(s["tenant_id"], s["last_checkpoint"]) for s in status] == [
        ("tenant-a", "2026-03-03T14:00:00Z"),
        ("tenant-b", "2026-03-03T14:00:00Z"),
    ]


def archived_reads(fake: FakeHubSpot, token: str = "hubspot-token") -> int:
    return sum(
        1
        for r in fake.data_requests()
        if r.query.get("archived") == ["true"] and r.headers["authorization"] == f"Bearer {token}"
    )


async def test_poll_delete_interval_sets_how_often_the_archived_list_is_read(
    nats_url: str, data_dir: str
) -> None:
    """Default 5m at a 1m interval: the archived list (a full listing, requests of its own)
    on the first cycle and every fifth after; a tenant's ``poll_delete_interval: 0s`` reads
    it every cycle, another's ``2m`` every second cycle."""
    async with FakeHubSpot(token="token-a") as fake:
        fake.tokens.update({"token-b", "token-c"})
        fake.put("deals", "1", T0, dealname="Alpha")
        providers = {
            "hubspot": {
                "mode": "poll",
                "base_url": fake.url,
                "objects": ["deals"],
                "tenants": {
                    "a": {"access_token": "token-a"},
                    "b": {"access_token": "token-b", "poll_delete_interval": "0s"},
                    "c": {"access_token": "token-c", "poll_delete_interval": "2m"},
                },
            }
        }
        async with poll_rig(nats_url, data_dir, providers) as rig:
            for _ in range(6):
                for tenant in ("a", "b", "c"):
                    await rig.cycle(tenant)
            fake.archive("deals", "1", T0 + 5 * MINUTE)
            deleted = await rig.cycle("b")

    assert [s.target.delete_interval for s in rig.schedulers] == [300.0, 0.0, 120.0]
    assert archived_reads(fake, "token-a") == 2  # cycles 1 and 6
    assert archived_reads(fake, "token-b") == 6 + 1
    assert archived_reads(fake, "token-c") == 3  # cycles 1, 3 and 5
    assert deleted.deleted == 1
