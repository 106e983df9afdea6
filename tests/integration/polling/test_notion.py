"""Notion polling against a fake API: search sorted by last_edited_time with start_cursor
paging and the Notion-Version header; incremental passes stop early; full scans find pages
that were trashed or removed."""

from __future__ import annotations

from typing import Any

from tests.support.fakes import at
from tests.support.fakes.notion import FakeNotion
from tests.support.polling import poll_rig

T0 = at("2026-03-03T17:00:00Z")
MINUTE = 60 * 1_000_000_000


def notion(fake: FakeNotion, **extra: Any) -> dict[str, Any]:
    return {"notion": {"mode": "poll", "secret": "notion-token", "base_url": fake.url, **extra}}


async def test_search_pages_created_and_edited(nats_url: str, data_dir: str) -> None:
    async with FakeNotion() as fake:
        fake.put("not_1", T0, title="Plan")
        fake.put("not_2", T0 + 30 * MINUTE, object="database", title="Tasks")
        fake.put("not_3", T0 + 40 * MINUTE, title="Notes")
        async with poll_rig(nats_url, data_dir, notion(fake, query_per_page=2)) as rig:
            await rig.cycle()
            created = await rig.events()
            fake.put("not_1", T0 + 50 * MINUTE, title="Plan v2")
            await rig.cycle()
            updated = await rig.events()

    assert sorted((e["type"], e["data"]["entity_id"]) for e in created) == [
        ("ensemble.tap.notion.database.created", "not_2"),
        ("ensemble.tap.notion.page.created", "not_1"),
        ("ensemble.tap.notion.page.created", "not_3"),
    ]
    assert [(e["data"]["entity_id"], e["data"]["action"]) for e in updated] == [
        ("not_1", "updated")
    ]
    assert updated[0]["data"]["changes"]["properties"] == {
        "from": {"title": "Plan"},
        "to": {"title": "Plan v2"},
    }
    first, second = fake.data_requests()[:2]
    assert first.headers["notion-version"] == "2022-06-28"
    assert first.headers["authorization"] == "Bearer notion-token"
    assert first.json() == {
        "page_size": 2,
        "sort": {"direction": "descending", "timestamp": "last_edited_time"},
    }
    assert second.json()["start_cursor"] == "not_1"


async def test_incremental_pass_stops_at_the_checkpoint(nats_url: str, data_dir: str) -> None:
    async with FakeNotion() as fake:
        for n in range(6):
            fake.put(f"p{n}", T0 + n * 10 * MINUTE)
        async with poll_rig(nats_url, data_dir, notion(fake, query_per_page=3)) as rig:
            await rig.cycle()  # the first pass after start-up reads everything
            before = len(fake.data_requests())
            fake.put("p0", T0 + 70 * MINUTE, title="edited")
            stats = await rig.cycle()
            events = await rig.events()
    assert before == 2
    assert len(fake.data_requests()) - before == 1  # stopped at the checkpoint - lookback
    assert stats.updated == 1
    assert events[-1]["data"]["entity_id"] == "p0"


async def test_full_scan_finds_trashed_and_removed_pages(nats_url: str, data_dir: str) -> None:
    async with FakeNotion() as fake:
        fake.put("keep", T0)
        fake.put("trashed", T0)
        fake.put("gone", T0, object="database")
        # With a 5m interval every pass is a full scan (delete scans run about every 5m).
        async with poll_rig(nats_url, data_dir, notion(fake, poll_interval="5m")) as rig:
            await rig.cycle()
            await rig.events()
            fake.items["trashed"].in_trash = True
            fake.items["trashed"].edited_ns = T0 + MINUTE
            del fake.items["gone"]
            stats = await rig.cycle()
            events = await rig.events()
            await rig.cycle()
            assert await rig.events() == []

    assert stats.deleted == 2
    assert sorted((e["type"], e["data"]["entity_id"]) for e in events) == [
        ("ensemble.tap.notion.database.deleted", "gone"),
        ("ensemble.tap.notion.page.deleted", "trashed"),
    ]
    checks = [r.path for r in fake.data_requests() if r.method == "GET"]
    assert sorted(checks) == ["/v1/databases/gone", "/v1/pages/trashed"]


async def test_rate_limit_then_resume(nats_url: str, data_dir: str) -> None:
    async with FakeNotion() as fake:
        fake.put("p1", T0)
        async with poll_rig(nats_url, data_dir, notion(fake)) as rig:
            fake.rate_limit_next("3")
            next_at = await rig.scheduler().run_once()
            assert next_at - rig.clock.monotonic() == 3.0
            assert rig.service.status()[0]["last_error"] == "notion rate limited; retry after 3s"
            await rig.cycle()
            assert [e["data"]["entity_id"] for e in await rig.events()] == ["p1"]
