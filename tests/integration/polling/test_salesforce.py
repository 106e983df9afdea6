"""Salesforce polling against a fake REST API: queryAll SOQL, nextRecordsUrl, keyset resume,
recycle-bin deletes, REQUEST_LIMIT_EXCEEDED."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.fakes import at
from tests.support.fakes.salesforce import FakeSalesforce
from tests.support.polling import poll_rig

T0 = at("2026-03-03T15:00:00Z")
SECOND = 1_000_000_000


def salesforce(fake: FakeSalesforce, **extra: Any) -> dict[str, Any]:
    return {
        "salesforce": {
            "mode": "poll",
            "access_token": "sf-token",
            "base_url": fake.url,
            **extra,
        }
    }


async def test_created_updated_with_nested_fields_and_deleted(nats_url: str, data_dir: str) -> None:
    async with FakeSalesforce() as fake:
        fake.put("Opportunity", "006A", T0, Name="Big deal", StageName="Prospecting",
                 Amount=1000.0)  # fmt: skip
        fake.put("Opportunity", "006B", T0 + SECOND, Name="Small deal", StageName="Closed Won",
                 Amount=10)  # fmt: skip
        async with poll_rig(nats_url, data_dir, salesforce(fake)) as rig:
            await rig.cycle()
            created = await rig.events()
            # Re-read records carry nested ``attributes`` (the reference crashed on them).
            fake.put("Opportunity", "006A", T0 + 60 * SECOND, Name="Big deal",
                     StageName="Negotiation", Amount=1000)  # fmt: skip
            fake.delete("Opportunity", "006B", T0 + 61 * SECOND)
            fake.put("Opportunity", "006Z", T0, Name="never seen")
            fake.delete("Opportunity", "006Z", T0 + 62 * SECOND)
            stats = await rig.cycle()
            later = await rig.events()

    assert [e["type"] for e in created] == ["ensemble.tap.salesforce.opportunity.created"] * 2
    assert created[0]["data"]["snapshot"]["attributes"]["type"] == "Opportunity"
    assert created[0]["time"] == "2026-03-03T15:00:00Z"
    assert [(e["data"]["entity_id"], e["data"]["action"]) for e in later] == [
        ("006A", "updated"),
        ("006B", "deleted"),
    ]
    changes = later[0]["data"]["changes"]
    assert changes["StageName"] == {"from": "Prospecting", "to": "Negotiation"}
    assert "Amount" not in changes  # 1000.0 and 1000 are the same number
    assert later[1]["data"]["snapshot"]["Name"] == "Small deal"
    assert stats.skipped == 1  # the delete of a record this state never saw

    first, second = (r for r in fake.data_requests() if r.path.endswith("/queryAll"))
    assert first.path == "/services/data/v59.0/queryAll"
    assert first.headers["authorization"] == "Bearer sf-token"
    assert first.headers["sforce-query-options"] == "batchSize=200"
    assert first.query["q"] == [
        "SELECT FIELDS(STANDARD) FROM Opportunity ORDER BY SystemModstamp ASC, Id ASC"
    ]
    assert second.query["q"] == [
        "SELECT FIELDS(STANDARD) FROM Opportunity WHERE SystemModstamp >= 2026-03-03T14:59:01Z "
        "ORDER BY SystemModstamp ASC, Id ASC"
    ]


async def test_configured_fields_and_objects(nats_url: str, data_dir: str) -> None:
    async with FakeSalesforce() as fake:
        fake.put("Account", "001A", T0, Name="Acme")
        providers = salesforce(fake, objects=["Account"], fields=["Name", "Owner.Name"],
                               api_version="v61.0")  # fmt: skip
        async with poll_rig(nats_url, data_dir, providers) as rig:
            await rig.cycle()
            events = await rig.events()
    assert events[0]["type"] == "ensemble.tap.salesforce.account.created"
    request = fake.data_requests()[0]
    assert request.path == "/services/data/v61.0/queryAll"
    assert request.query["q"][0].startswith(
        "SELECT Id, SystemModstamp, LastModifiedDate, IsDeleted, Name, Owner.Name FROM Account"
    )


async def test_paging_and_truncated_passes_resume_by_keyset(nats_url: str, data_dir: str) -> None:
    async with FakeSalesforce() as fake:
        for n in range(450):  # many records share a second, as bulk updates do
            fake.put("Opportunity", f"006{n:04d}", T0 + (n // 100) * SECOND, Name=str(n))
        async with poll_rig(nats_url, data_dir, salesforce(fake, poll_max_pages=2)) as rig:
            first = await rig.cycle()
            second = await rig.cycle()
            events = await rig.events()

    assert (first.created, first.truncated, second.created, second.truncated) == (
        400, True, 50, False,
    )  # fmt: skip
    assert sorted(e["data"]["entity_id"] for e in events) == [f"006{n:04d}" for n in range(450)]
    paths = [r.path for r in fake.data_requests()]
    assert re.fullmatch(r"/services/data/v59.0/queryAll/01g\d+-200:200", paths[1])
    resumed = fake.data_requests()[2].query["q"][0]
    assert "WHERE (SystemModstamp > 2026-03-03T15:00:03Z OR (SystemModstamp = " in resumed
    assert "AND Id > '0060399'))" in resumed


async def test_request_limit_exceeded_is_a_rate_limit_not_an_expired_token(
    nats_url: str, data_dir: str
) -> None:
    async with FakeSalesforce() as fake:
        providers = salesforce(
            fake,
            token_url=f"{fake.url}/oauth/token",
            client_id="client-id",
            client_secret="client-secret",
        )
        async with poll_rig(nats_url, data_dir, providers) as rig:
            fake.limit_exceeded_next()
            next_at = await rig.scheduler().run_once()
            status = rig.service.status()[0]
    assert fake.oauth.calls == []  # no token refresh
    assert next_at - rig.clock.monotonic() == pytest.approx(300)
    assert status["last_error"] == "salesforce rate limited; retry after 5m0s"


async def test_instance_url_from_the_token_response(nats_url: str, data_dir: str) -> None:
    async with FakeSalesforce(token="") as login, FakeSalesforce(token="") as org:
        org.put("Opportunity", "006A", T0, Name="x")
        login.oauth.instance_url = org.url
        login.oauth.client_id, login.oauth.client_secret = "id", "secret"
        org.tokens = login.tokens  # the org accepts what the login server issues
        providers = {
            "salesforce": {
                "mode": "poll",
                "base_url": "https://login.invalid",
                "token_url": f"{login.url}/oauth/token",
                "client_id": "id",
                "client_secret": "secret",
            }
        }
        async with poll_rig(nats_url, data_dir, providers) as rig:
            await rig.cycle()
            events = await rig.events()
    assert [e["data"]["entity_id"] for e in events] == ["006A"]
    assert login.oauth.calls[0]["grant_type"] == "client_credentials"


def delete_log_reads(fake: FakeSalesforce) -> list[dict[str, list[str]]]:
    return [r.query for r in fake.data_requests() if r.path.endswith("/deleted/")]


async def test_records_purged_before_a_poll_saw_them_deleted_come_from_the_delete_log(
    nats_url: str, data_dir: str
) -> None:
    """Deleted and purged from the recycle bin between two reads: queryAll no longer returns
    the row, "Get Deleted Records" does; the delete is announced once, with the last
    snapshot and Salesforce's deletedDate as its time."""
    async with FakeSalesforce() as fake:
        fake.put("Opportunity", "006A", T0, Name="Kept")
        fake.put("Opportunity", "006B", T0, Name="Purged")
        providers = salesforce(fake, poll_delete_interval="0s")  # every cycle
        async with poll_rig(nats_url, data_dir, providers) as rig:
            first = await rig.cycle()
            await rig.events()
            fake.purge("Opportunity", "006B", at("2026-03-03T18:00:30Z"))
            rig.clock.advance(60)
            purged = await rig.cycle()
            events = await rig.events()
            rig.clock.advance(60)
            again = await rig.cycle()
            assert await rig.events() == []
            checkpoints = rig.service.status()[0]["checkpoints"]

    assert (first.created, purged.deleted, again.deleted) == (2, 1, 0)
    assert [(e["data"]["entity_id"], e["data"]["action"]) for e in events] == [("006B", "deleted")]
    assert events[0]["data"]["snapshot"]["Name"] == "Purged"
    assert events[0]["time"] == "2026-03-03T18:00:30Z"  # deletedDate
    reads = delete_log_reads(fake)
    # The first pass reads the last 29 days up to now (the rig's clock, 18:00); later passes
    # from the checkpoint (latestDateCovered) less poll_lookback (1m), in whole minutes.
    assert reads[0] == {
        "start": ["2026-02-02T18:00:00+00:00"],
        "end": ["2026-03-03T18:00:00+00:00"],
    }
    assert reads[1] == {
        "start": ["2026-03-03T17:59:00+00:00"],
        "end": ["2026-03-03T18:01:00+00:00"],
    }
    assert checkpoints["Opportunity#deleted"] == "2026-03-03T18:02:00Z"


async def test_the_delete_log_is_read_every_poll_delete_interval(
    nats_url: str, data_dir: str
) -> None:
    async with FakeSalesforce() as fake:
        fake.put("Opportunity", "006A", T0, Name="Kept")
        async with poll_rig(nats_url, data_dir, salesforce(fake)) as rig:  # 1m, default 5m
            for _ in range(6):
                await rig.cycle()
                rig.clock.advance(60)
    assert len(delete_log_reads(fake)) == 2  # cycles 1 and 6
