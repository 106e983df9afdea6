"""Engine and scheduler behaviour that is the same for every provider (HubSpot's fake used):
poison records, the circuit breaker, restarts with SQLite state, NATS outages."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from ensemble_tap.bus.dlq_store import parse_letter
from ensemble_tap.state import MemoryStateStore
from tests.support.fakes import at
from tests.support.fakes.hubspot import FakeHubSpot
from tests.support.polling import FakeClock, poll_rig

T0 = at("2026-03-03T14:00:00Z")
SECOND = 1_000_000_000


def hubspot(fake: FakeHubSpot, **extra: Any) -> dict[str, Any]:
    return {
        "hubspot": {
            "mode": "poll",
            "access_token": "hubspot-token",
            "base_url": fake.url,
            "objects": ["deals"],
            **extra,
        }
    }


async def test_poison_records_go_to_the_dlq_and_the_others_continue(
    nats_url: str, data_dir: str
) -> None:
    async with FakeHubSpot() as fake:
        fake.put("deals", "1", T0, dealname="fine")
        fake.put("deals", "2", T0 + SECOND, dealname="x" * 4000)  # over the stream's size
        fake.put("deals", "3", T0 + 2 * SECOND, hs_lastmodifieddate="9" * 19)  # year > 9999
        fake.put("deals", "4", T0 + 3 * SECOND, dealname="also fine")
        nats = {"stream_max_msg_size": 3000}
        async with poll_rig(nats_url, data_dir, hubspot(fake), nats=nats) as rig:
            stats = await rig.cycle()
            events = await rig.events()
            letters = await rig.dead_letters()
            again = await rig.cycle()
            assert await rig.dead_letters() == []  # not retried every cycle
            status = rig.service.status()[0]

    assert [e["data"]["entity_id"] for e in events] == ["1", "4"]
    assert (stats.created, stats.dead_lettered) == (2, 2)
    assert (again.created, again.dead_lettered) == (0, 0)
    assert status.get("last_error") is None
    # The far-future time did not push the checkpoint past our own clock.
    assert status["last_checkpoint"] < "2026-03-03T18:00:01Z"
    by_stage = {letter["stage"]: letter for letter in letters}
    assert set(by_stage) == {"poll_publish", "poll_normalize"}
    published = by_stage["poll_publish"]
    assert published["provider"] == "hubspot"
    assert published["original_subject"] == f"{rig.config.nats.subject_prefix}.hubspot.deal.created"
    assert published["original_dedup_id"].startswith("poll_")
    event = orjson.loads(base64.b64decode(published["original_payload"]))
    assert event["id"] == published["original_dedup_id"]
    assert event["data"]["entity_id"] == "2"
    stored = parse_letter(1, orjson.dumps({k: v for k, v in published.items()
                                           if not k.startswith("_")}))  # fmt: skip
    assert stored is not None and stored.replayable  # the admin replay can deliver it
    assert "out of range" in by_stage["poll_normalize"]["reason"]


async def test_circuit_breaker_opens_after_the_budget_and_closes_again(
    nats_url: str, data_dir: str
) -> None:
    async with FakeHubSpot() as fake:
        fake.put("deals", "1", T0)
        providers = hubspot(fake, poll_failure_budget=3, poll_circuit_break_duration="45s")
        async with poll_rig(nats_url, data_dir, providers) as rig:
            scheduler, clock = rig.scheduler(), rig.clock
            waits: list[float] = []
            circuits: list[str] = []
            fake.down_status = 500
            for _ in range(4):
                next_at = await scheduler.run_once()
                waits.append(next_at - clock.monotonic())
                circuits.append(rig.service.status()[0]["circuit"])
                clock.advance(waits[-1])
            failing = rig.service.status()[0]
            stuck = rig.metric("tap_poller_stuck", provider="hubspot", tenant="")
            is_open = rig.metric("tap_poller_circuit_open", provider="hubspot", tenant="")
            fake.down_status = 0
            started = clock.monotonic()
            next_at = await scheduler.run_once()
            healed = rig.service.status()[0]
            events = await rig.events()

    assert 0.25 <= waits[0] <= 0.75 and 0.375 <= waits[1] <= 1.125  # exponential backoff
    assert min(waits[2:]) == pytest.approx(45)  # open, then the failed probe opens it again
    assert circuits == ["closed", "closed", "open", "open"]
    assert failing["consecutive_failures"] == 4 and failing["stuck"] is True
    assert failing["last_error"].startswith(
        "hubspot request failed: request failed with status 500"
    )
    assert (stuck, is_open) == (1.0, 1.0)
    assert healed["circuit"] == "closed" and healed["consecutive_failures"] == 0
    assert "last_error" not in healed and healed["stuck"] is False
    assert next_at - started == pytest.approx(60)  # back on the regular interval
    assert [e["data"]["entity_id"] for e in events] == ["1"]


async def test_restart_with_sqlite_state_emits_nothing_new(nats_url: str, data_dir: str) -> None:
    state = {"backend": "sqlite"}
    async with FakeHubSpot() as fake:
        for n in range(3):
            fake.put("deals", str(n), T0 + n * SECOND, dealname=f"d{n}")
        async with poll_rig(nats_url, data_dir, hubspot(fake), state=state) as rig:
            await rig.cycle()
            assert len(await rig.events()) == 3
            stream = rig.config.nats.stream
        async with poll_rig(nats_url, data_dir, hubspot(fake), state=state,
                            stream=stream, clock=FakeClock()) as rig:  # fmt: skip
            rig._next_seq = 4
            stats = await rig.cycle()
            assert await rig.events() == []
            fake.put("deals", "1", T0 + 10 * SECOND, dealname="changed")
            await rig.cycle()
            events = await rig.events()
    assert (stats.created, stats.unchanged) == (0, 3)
    assert [(e["data"]["entity_id"], e["data"]["action"]) for e in events] == [("1", "updated")]


def amounts(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["data"]["action"], e["data"]["snapshot"]["amount"]) for e in events]


async def test_edits_sharing_one_modification_time_are_all_published(
    nats_url: str, data_dir: str
) -> None:
    """Issue #11: amount 2, then 3 within one ``hs_lastmodifieddate``; the id carries the
    content's digest, so JetStream does not drop the second edit as a duplicate."""
    async with FakeHubSpot() as fake:
        fake.put("deals", "1", T0, amount="1")
        async with poll_rig(nats_url, data_dir, hubspot(fake)) as rig:
            await rig.cycle()
            fake.put("deals", "1", T0 + SECOND, amount="2")
            await rig.cycle()
            fake.put("deals", "1", T0 + SECOND, amount="3")  # the same modification time
            third = await rig.cycle()
            events = await rig.events()
            hits = rig.metric("tap_events_dedup_hits_total", provider="hubspot")

    assert amounts(events) == [("created", "1"), ("updated", "2"), ("updated", "3")]
    assert events[1]["time"] == events[2]["time"] == "2026-03-03T14:00:01Z"
    assert events[2]["data"]["changes"] == {"amount": {"from": "2", "to": "3"}}
    assert len({e["id"] for e in events}) == 3
    assert all(e["id"] == e["_msg_id"] for e in events)  # the sink keys rows by this id
    assert (third.updated, third.duplicates, hits) == (1, 0, 0.0)


async def test_the_same_version_read_twice_is_stored_once(nats_url: str, data_dir: str) -> None:
    """A restart that lost the snapshots reads every record again as new: the same content
    at the same time gets the same id, and JetStream drops the copy."""
    async with FakeHubSpot() as fake:
        fake.put("deals", "1", T0, amount="1")
        fake.put("deals", "2", T0 + SECOND, amount="2")
        async with poll_rig(nats_url, data_dir, hubspot(fake)) as rig:
            await rig.cycle()
            stream = rig.config.nats.stream
        fake.put("deals", "2", T0 + SECOND, amount="5")  # edited within the same second
        async with poll_rig(nats_url, data_dir, hubspot(fake), stream=stream) as rig:
            again = await rig.cycle()  # memory state: a new rig starts with no snapshots
            events = await rig.events()  # the whole stream
            hits = rig.metric("tap_events_dedup_hits_total", provider="hubspot")
            reported = rig.scheduler().status.last_cycle

    assert (again.created, again.duplicates, hits) == (2, 1, 1.0)
    assert reported is not None and reported["duplicates"] == 1  # the status reports it
    assert [(e["data"]["entity_id"], e["data"]["snapshot"]["amount"]) for e in events] == [
        ("1", "1"),
        ("2", "2"),
        ("2", "5"),
    ]
    assert len({e["id"] for e in events}) == 3


async def test_nats_outage_stops_the_cycle_without_losing_records(
    nats_url: str, data_dir: str
) -> None:
    store = MemoryStateStore()
    async with FakeHubSpot() as fake:
        fake.put("deals", "1", T0)
        fake.put("deals", "2", T0 + SECOND)
        async with poll_rig(nats_url, data_dir, hubspot(fake), store=store) as rig:
            stream = rig.config.nats.stream
            await rig.broker.close()  # NATS gone
            await rig.cycle()
            status = rig.service.status()[0]
        assert status["last_error"].startswith("publish poll event: nats not connected")
        assert await store.get_snapshots("hubspot", [("deal", "1"), ("deal", "2")]) == {}
        async with poll_rig(nats_url, data_dir, hubspot(fake), store=store,
                            stream=stream) as rig:  # fmt: skip
            await rig.cycle()
            events = await rig.events()
            assert await rig.dead_letters() == []
    assert [e["data"]["entity_id"] for e in events] == ["1", "2"]


async def test_a_failing_object_does_not_stop_the_others(nats_url: str, data_dir: str) -> None:
    async with FakeHubSpot() as fake:
        fake.put("deals", "1", T0)
        providers = hubspot(fake, objects=["widgets", "deals"])
        async with poll_rig(nats_url, data_dir, providers) as rig:
            await rig.cycle()
            events = await rig.events()
            status = rig.service.status()[0]
            failures = rig.metric(
                "tap_poller_cycles_total", provider="hubspot", tenant="", outcome="failure"
            )
    assert [e["data"]["entity_id"] for e in events] == ["1"]
    assert "status 400" in status["last_error"]
    assert failures == 1
