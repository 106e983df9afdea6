"""QuickBooks Online polling against a fake API: query paging, inactive name-list records,
change data capture deletes (also when an answer is cut at 1,000 objects), HTTP Basic token
refresh with rotating refresh tokens kept durably, restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.support.fakes import at
from tests.support.fakes.quickbooks import FakeQuickBooks
from tests.support.polling import FakeClock, poll_rig

T0 = at("2026-03-03T16:00:00Z")
SECOND = 1_000_000_000


def quickbooks(fake: FakeQuickBooks, **extra: Any) -> dict[str, Any]:
    return {
        "quickbooks": {
            "mode": "poll",
            "access_token": "qb-token",
            "base_url": fake.url,
            "realm_id": "realm-1",
            "objects": ["Customer", "Invoice"],
            **extra,
        }
    }


async def test_query_cdc_deletes_and_inactive_customers(nats_url: str, data_dir: str) -> None:
    async with FakeQuickBooks() as fake:
        fake.put("Customer", "1", T0, DisplayName="Ann", Active=True,
                 BillAddr={"City": "Oslo", "Line1": "Street 1"})  # fmt: skip
        fake.put("Invoice", "10", T0 + SECOND, TotalAmt=99.5, Line=[{"Amount": 99.5}])
        fake.put("Invoice", "11", T0 + 2 * SECOND, TotalAmt=5, Line=[{"Amount": 5}])
        async with poll_rig(nats_url, data_dir, quickbooks(fake)) as rig:
            await rig.cycle()
            created = await rig.events()
            # Customers are made inactive, never deleted; invoices are deleted.
            fake.put("Customer", "1", T0 + 60 * SECOND, DisplayName="Ann", Active=False,
                     BillAddr={"City": "Bergen", "Line1": "Street 1"})  # fmt: skip
            fake.delete("Invoice", "11", at("2026-03-03T18:00:30Z"))
            fake.now_ns = at("2026-03-03T18:01:00Z")
            await rig.cycle()
            later = await rig.events()
            await rig.cycle()
            assert await rig.events() == []

    assert [(e["type"], e["data"]["entity_id"]) for e in created] == [
        ("ensemble.tap.quickbooks.customer.created", "1"),
        ("ensemble.tap.quickbooks.invoice.created", "10"),
        ("ensemble.tap.quickbooks.invoice.created", "11"),
    ]
    assert created[0]["time"] == "2026-03-03T16:00:00Z"  # MetaData.LastUpdatedTime, -08:00
    assert [(e["data"]["entity_id"], e["data"]["action"]) for e in later] == [
        ("1", "updated"),
        ("11", "deleted"),
    ]
    changes = later[0]["data"]["changes"]
    assert changes["Active"] == {"from": True, "to": False}
    assert changes["BillAddr"]["to"] == {"City": "Bergen", "Line1": "Street 1"}
    assert later[1]["data"]["snapshot"]["TotalAmt"] == 5
    query = fake.data_requests()[0]
    assert query.path == "/v3/company/realm-1/query"
    assert query.headers["authorization"] == "Bearer qb-token"
    assert query.query["query"] == [
        "SELECT * FROM Customer WHERE Active IN (true, false) ORDERBY MetaData.LastUpdatedTime "
        "STARTPOSITION 1 MAXRESULTS 100"
    ]
    cdc = [r for r in fake.data_requests() if r.path.endswith("/cdc")]
    assert cdc[0].query["entities"] == ["Customer,Invoice"]
    assert cdc[0].query["changedSince"] == ["2026-03-03T17:59:00Z"]  # first run: now - 1m
    assert cdc[1].query["changedSince"] == ["2026-03-03T17:59:00Z"]  # server time - lookback


async def test_deactivation_and_reactivation_are_updates(nats_url: str, data_dir: str) -> None:
    async with FakeQuickBooks() as fake:
        fake.put("Customer", "1", T0, DisplayName="Ann")
        fake.put("Customer", "2", T0, DisplayName="Bo", Active=False)  # inactive already
        async with poll_rig(nats_url, data_dir, quickbooks(fake)) as rig:
            await rig.cycle()
            first = await rig.events()
            # "Delete" in QuickBooks: the query API hides the record from plain queries now.
            # Within the CDC window too: CDC returns it as a normal entry, not as a delete.
            fake.set_active("Customer", "1", at("2026-03-03T17:59:30Z"), active=False)
            await rig.cycle()
            deactivated = await rig.events()
            fake.set_active("Customer", "1", at("2026-03-03T17:59:40Z"), active=True)
            await rig.cycle()
            reactivated = await rig.events()

    assert [(e["data"]["entity_id"], e["data"]["action"]) for e in first] == [
        ("1", "created"),
        ("2", "created"),
    ]
    assert first[1]["data"]["snapshot"]["Active"] is False
    assert [(e["type"], e["data"]["changes"]["Active"]) for e in deactivated] == [
        ("ensemble.tap.quickbooks.customer.updated", {"from": True, "to": False})
    ]
    assert deactivated[0]["data"]["snapshot"]["DisplayName"] == "Ann"
    assert [(e["type"], e["data"]["changes"]["Active"]) for e in reactivated] == [
        ("ensemble.tap.quickbooks.customer.updated", {"from": False, "to": True})
    ]
    invoice_queries = [
        r.query["query"][0] for r in fake.data_requests() if "FROM Invoice" in r.query.get(
            "query", [""])[0]
    ]  # fmt: skip
    assert invoice_queries and all("Active" not in q for q in invoice_queries)


async def test_full_cdc_answer_loses_no_delete_and_no_update(nats_url: str, data_dir: str) -> None:
    async with FakeQuickBooks() as fake:
        for n in range(1000):
            fake.put("Customer", str(n), T0, DisplayName=f"c{n}")
        fake.put("Invoice", "10", T0, TotalAmt=1)
        fake.put("Invoice", "11", T0, TotalAmt=2)
        async with poll_rig(nats_url, data_dir, quickbooks(fake)) as rig:
            await rig.cycle()
            assert len(await rig.events()) == 1002
            # One window: 1,000 customer updates and, older than all of them, an invoice
            # delete. The combined CDC answer is cut at 1,000 objects (the customers).
            fake.delete("Invoice", "11", at("2026-03-03T18:00:10Z"))
            for n in range(1000):
                fake.put("Customer", str(n), at("2026-03-03T18:00:20Z"), DisplayName=f"c{n}!")
            fake.now_ns = at("2026-03-03T18:01:00Z")
            rig.clock.advance(60)
            stats = await rig.cycle()
            events = await rig.events()
            cdc_cursor = rig.scheduler().engine.cursors["cdc"]
            await rig.cycle()
            assert await rig.events() == []

    assert rig.service.status()[0].get("last_error") is None
    deleted = [(e["data"]["entity_id"], e["data"]["action"]) for e in events
               if e["data"]["entity_type"] == "invoice"]  # fmt: skip
    assert deleted == [("11", "deleted")]
    updated = {e["data"]["entity_id"] for e in events if e["data"]["action"] == "updated"}
    assert updated == {str(n) for n in range(1000)}
    assert (stats.updated, stats.deleted) == (1000, 1)
    assert cdc_cursor == at("2026-03-03T18:01:00Z")  # the first answer's time, fully read
    cdc = [r.query["entities"][0] for r in fake.data_requests() if r.path.endswith("/cdc")]
    assert cdc[1:4] == ["Customer,Invoice", "Customer", "Invoice"]


async def test_keyset_paging_through_records_sharing_a_second(nats_url: str, data_dir: str) -> None:
    async with FakeQuickBooks() as fake:
        times = [0, 1, 1, 1, 1, 1, 2, 3]  # five records in one second, more than a page
        for n, offset in enumerate(times):
            fake.put("Customer", str(n), T0 + offset * SECOND, DisplayName=f"c{n}")
        providers = quickbooks(fake, objects=["Customer"], query_per_page=2)
        async with poll_rig(nats_url, data_dir, providers) as rig:
            stats = await rig.cycle()
            events = await rig.events()

    assert sorted(e["data"]["entity_id"] for e in events) == [str(n) for n in range(8)]
    assert stats.created == 8
    queries = [r.query["query"][0] for r in fake.data_requests() if r.path.endswith("/query")]
    assert "AND MetaData.LastUpdatedTime >= '2026-03-03T16:00:01Z' ORDERBY" in queries[1]
    assert any("STARTPOSITION 3" in q for q in queries)


async def test_rotated_refresh_token_survives_a_restart(nats_url: str, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    state = {"backend": "sqlite"}
    async with FakeQuickBooks(token="") as fake:
        fake.put("Customer", "1", T0, DisplayName="Ann")
        providers = quickbooks(
            fake,
            objects=["Customer"],
            access_token="",
            token_url=f"{fake.url}/oauth/token",
            client_id="client-id",
            client_secret="client-secret",
            refresh_token="refresh-1",
        )
        async with poll_rig(nats_url, data_dir, providers, state=state) as rig:
            await rig.cycle()
            assert [e["data"]["entity_id"] for e in await rig.events()] == ["1"]
        # Intuit revoked refresh-1 when it issued refresh-2; only the stored one works now.
        assert fake.oauth.refresh_tokens == {"refresh-2"}
        first_call = fake.oauth.calls[0]
        assert "client_secret" not in first_call  # HTTP Basic client authentication
        assert fake.requests[0].headers["authorization"].startswith("Basic ")
        db = sqlite3.connect(tmp_path / "data" / "tap-state.db")
        rows = db.execute("SELECT state_key, refresh_token FROM oauth_tokens").fetchall()
        db.close()
        assert rows == [("quickbooks", "refresh-2")]

        fake.put("Customer", "2", T0 + SECOND, DisplayName="Bo")
        async with poll_rig(nats_url, data_dir, providers, state=state,
                            clock=FakeClock()) as rig:  # fmt: skip
            await rig.cycle()
            events = await rig.events()
            assert rig.service.status()[0].get("last_error") is None
    # After the restart: the stored token refreshed, and only the new record is an event.
    assert fake.oauth.calls[1]["refresh_token"] == "refresh-2"
    assert [(e["data"]["entity_id"], e["data"]["action"]) for e in events] == [("2", "created")]


async def test_changed_configured_refresh_token_wins_over_the_stored_one(
    nats_url: str, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    async with FakeQuickBooks(token="") as fake:
        fake.put("Customer", "1", T0)
        base = quickbooks(
            fake, objects=["Customer"], access_token="", token_url=f"{fake.url}/oauth/token",
            client_id="client-id", client_secret="client-secret", refresh_token="refresh-1",
        )  # fmt: skip
        async with poll_rig(nats_url, data_dir, base, state={"backend": "sqlite"}) as rig:
            await rig.cycle()
        fake.oauth.refresh_tokens.add("reauthorized")  # the operator connected the app again
        base["quickbooks"]["refresh_token"] = "reauthorized"
        async with poll_rig(nats_url, data_dir, base, state={"backend": "sqlite"}) as rig:
            await rig.cycle()
            assert rig.service.status()[0].get("last_error") is None
    assert fake.oauth.calls[1]["refresh_token"] == "reauthorized"
