"""QuickBooks streams against the local fake: name-list queries include inactive records, and
a change-data-capture answer cut at 1,000 objects never moves the checkpoint past a change it
left out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.poller.errors import PollError
from ensemble_tap.poller.http import FetchBudget, ProviderHTTP, TokenBucket
from ensemble_tap.poller.oauth import TokenSource
from ensemble_tap.providers.contract import Page, Position, StreamContext
from ensemble_tap.providers.quickbooks import (
    QuickBooksDeletes,
    QuickBooksPoller,
    QuickBooksQuery,
)
from ensemble_tap.state import MemoryStateStore
from tests.support.fakes import at
from tests.support.fakes.quickbooks import FakeQuickBooks
from tests.support.polling import FakeClock

T0 = at("2026-03-03T16:00:00Z")
NOW = at("2026-03-03T18:00:00Z")  # the fake's and the clock's time
SECOND = 1_000_000_000
DAY = 86_400 * SECOND


@contextlib.asynccontextmanager
async def connected(fake: FakeQuickBooks) -> AsyncIterator[ProviderHTTP]:
    clock = FakeClock(NOW)
    async with httpx.AsyncClient() as client:
        auth = TokenSource(
            "quickbooks",
            state_key="quickbooks",
            access_token="qb-token",
            oauth=None,
            store=MemoryStateStore(),
            client=client,
            clock=clock,
        )
        limiter = TokenBucket(1000.0, 1000, clock)
        http = ProviderHTTP(
            "quickbooks",
            client=client,
            auth=auth,
            limiter=limiter,
            clock=clock,
            headers=QuickBooksPoller.headers,
        )
        http.new_cycle(FetchBudget(100_000, 100_000))
        yield http


def context(known: set[tuple[str, str]], now_ns: int = NOW) -> StreamContext:
    async def known_entities(types: Sequence[str]) -> set[tuple[str, str]]:
        return {key for key in known if key[0] in types}

    return StreamContext("quickbooks", 60.0, known_entities, lambda: now_ns)


async def walk(stream: QuickBooksDeletes, start: Position, http: ProviderHTTP) -> list[Page]:
    return [page async for page in stream.pages(start, http)]


def deletes(pages: Sequence[Page]) -> list[tuple[str, str]]:
    return [(r.entity_type, r.entity_id) for page in pages for r in page.records if r.deleted]


def query_texts(fake: FakeQuickBooks) -> list[str]:
    return [r.query["query"][0] for r in fake.data_requests() if r.path.endswith("/query")]


def cdc_calls(fake: FakeQuickBooks) -> list[tuple[str, str]]:
    return [
        (r.query["entities"][0], r.query["changedSince"][0])
        for r in fake.data_requests()
        if r.path.endswith("/cdc")
    ]


def test_name_list_queries_ask_for_inactive_records_too() -> None:
    customers = QuickBooksQuery("https://x/v3/company/1", "Customer", 100)
    invoices = QuickBooksQuery("https://x/v3/company/1", "Invoice", 100)
    since = Position(T0, {"skip": 2})
    assert customers.query(Position()) == (
        "SELECT * FROM Customer WHERE Active IN (true, false) "
        "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 100"
    )
    assert customers.query(since) == (
        "SELECT * FROM Customer WHERE Active IN (true, false) AND MetaData.LastUpdatedTime >= "
        "'2026-03-03T16:00:00Z' ORDERBY MetaData.LastUpdatedTime STARTPOSITION 3 MAXRESULTS 100"
    )
    assert invoices.query(since) == (
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2026-03-03T16:00:00Z' "
        "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 3 MAXRESULTS 100"
    )


def test_entities_without_change_data_capture_get_no_delete_stream() -> None:
    settings = ProviderConfig.model_validate(
        {"mode": "poll", "access_token": "t", "base_url": "https://x", "realm_id": "1",
         "objects": ["Customer", "TaxCode", "Invoice"]}
    )  # fmt: skip
    streams = QuickBooksPoller().streams(settings, context(set()))
    assert [s.name for s in streams] == ["Customer", "TaxCode", "Invoice", "cdc"]
    cdc = streams[-1]
    assert isinstance(cdc, QuickBooksDeletes) and cdc.entities == ["Customer", "Invoice"]
    only_tax = settings.model_copy(update={"objects": ["TaxCode"]})
    assert [s.name for s in QuickBooksPoller().streams(only_tax, context(set()))] == ["TaxCode"]


async def test_deactivated_customer_is_read_and_the_fake_hides_it_unless_asked() -> None:
    async with FakeQuickBooks() as fake, connected(fake) as http:
        fake.put("Customer", "1", T0, DisplayName="Ann")
        fake.put("Customer", "2", T0 + SECOND, DisplayName="Bo")
        fake.set_active("Customer", "2", T0 + 2 * SECOND, active=False)
        pages = [p async for p in QuickBooksQuery(fake.company, "Customer", 100).pages(
            Position(T0), http)]  # fmt: skip
        plain = await http.request(
            "GET", f"{fake.company}/query",
            params={"query": "SELECT * FROM Customer STARTPOSITION 1 MAXRESULTS 10"},
        )  # fmt: skip
        cdc = await http.request(
            "GET", f"{fake.company}/cdc",
            params={"entities": "Customer", "changedSince": "2026-03-03T16:00:00Z"},
        )  # fmt: skip
        refused = await http.request(
            "GET", f"{fake.company}/query", allow_status=(400,),
            params={"query": "SELECT * FROM Invoice WHERE Active IN (true, false) "
                             "STARTPOSITION 1 MAXRESULTS 10"},
        )  # fmt: skip
    records = [r for page in pages for r in page.records]
    assert [(r.entity_id, r.snapshot and r.snapshot["Active"]) for r in records] == [
        ("1", True),
        ("2", False),
    ]
    assert [c["Id"] for c in plain.json("t")["QueryResponse"]["Customer"]] == ["1"]
    # Change data capture returns the deactivated record as a normal entry.
    (changes,) = cdc.json("t")["CDCResponse"][0]["QueryResponse"]
    assert [(c["Id"], c["Active"], c.get("status")) for c in changes["Customer"]] == [
        ("1", True, None),
        ("2", False, None),
    ]
    assert refused.status == 400


async def test_full_answer_is_read_entity_by_entity_and_known_ids_looked_up() -> None:
    async with FakeQuickBooks() as fake, connected(fake) as http:
        known = {("invoice", "10"), ("invoice", "11")}
        for n in range(1000):
            fake.put("Customer", str(n), T0, DisplayName=f"c{n}")
            known.add(("customer", str(n)))
        fake.put("Invoice", "10", T0, TotalAmt=1)
        fake.put("Invoice", "11", T0, TotalAmt=2)
        changed = NOW - 50 * SECOND
        for n in range(1000):
            fake.put("Customer", str(n), changed + SECOND, DisplayName=f"c{n}!")
        fake.delete("Invoice", "11", changed)  # older than every customer change
        stream = QuickBooksDeletes(fake.company, ["Customer", "Invoice"], context(known))
        pages = await walk(stream, Position(changed - 10 * SECOND), http)

    assert deletes(pages) == [("invoice", "11")]
    # Only the last page moves the checkpoint: to the time of the first (full) answer.
    assert [p.cursor_ns for p in pages[:-1]] == [None] * (len(pages) - 1)
    assert pages[-1].cursor_ns == NOW and pages[-1].next is None
    assert cdc_calls(fake) == [
        ("Customer,Invoice", "2026-03-03T17:59:00Z"),
        ("Customer", "2026-03-03T17:59:00Z"),  # full again: look the known customers up
        ("Invoice", "2026-03-03T17:59:00Z"),
    ]
    lookups = query_texts(fake)
    assert len(lookups) == 10
    assert lookups[0].startswith(
        "SELECT * FROM Customer WHERE Active IN (true, false) AND Id IN ('0', '1', '10', "
    )
    assert lookups[0].endswith(" STARTPOSITION 1 MAXRESULTS 100")


async def test_a_pass_cut_anywhere_resumes_without_losing_a_delete() -> None:
    async with FakeQuickBooks() as fake, connected(fake) as http:
        known = set()
        for n in range(1000):
            fake.put("Invoice", str(n), T0, TotalAmt=n)
            known.add(("invoice", str(n)))
        changed = NOW - 30 * SECOND
        for n in range(1000):
            if n % 250 == 7:
                fake.delete("Invoice", str(n), changed + 5 * SECOND)
            else:
                fake.put("Invoice", str(n), changed + 10 * SECOND, TotalAmt=-n)
        fake.put("Customer", "1", T0, DisplayName="Ann")
        known.add(("customer", "1"))
        fake.delete("Customer", "1", changed)  # a merged customer: CDC reports it deleted
        stream = QuickBooksDeletes(fake.company, ["Invoice", "Customer"], context(known))
        full = await walk(stream, Position(changed), http)
        expected = sorted(deletes(full))
        # Resume from every page boundary, as after a cycle whose budget ran out there.
        for index, page in enumerate(full[:-1]):
            assert page.next is not None
            rest = await walk(stream, page.next, http)
            assert sorted(deletes(full[: index + 1]) + deletes(rest)) == expected
            assert rest[-1].cursor_ns == NOW

    # The full invoice answer is looked up by id: its deletes are found twice (CDC and the
    # lookup); the engine announces a delete once (the snapshot is gone after the first).
    assert set(expected) == {("customer", "1")} | {("invoice", str(n)) for n in (7, 257, 507, 757)}


async def test_checkpoint_older_than_cdc_reaches_looks_known_ids_up() -> None:
    now = NOW + 40 * DAY
    async with FakeQuickBooks() as fake, connected(fake) as http:
        fake.now_ns = now
        fake.put("Invoice", "10", T0, TotalAmt=1)
        fake.put("Invoice", "11", T0, TotalAmt=2)
        fake.delete("Invoice", "11", T0 + DAY)  # 39 days ago: beyond CDC's reach
        fake.put("Invoice", "12", T0, TotalAmt=3)
        fake.delete("Invoice", "12", now - DAY)  # within it
        known = {("invoice", "10"), ("invoice", "11"), ("invoice", "12")}
        stream = QuickBooksDeletes(fake.company, ["Invoice"], context(known, now))
        pages = await walk(stream, Position(T0), http)

    assert sorted(deletes(pages)) == [("invoice", "11"), ("invoice", "12"), ("invoice", "12")]
    assert pages[-1].cursor_ns == now
    (cdc,) = cdc_calls(fake)  # within 30 days, not from the checkpoint
    assert at(cdc[1]) >= now - 30 * DAY
    assert query_texts(fake) == [
        "SELECT * FROM Invoice WHERE Id IN ('10', '11', '12') STARTPOSITION 1 MAXRESULTS 3"
    ]


async def test_a_lookup_answer_that_is_no_query_result_deletes_nothing() -> None:
    async with FakeQuickBooks() as fake, connected(fake) as http:
        for n in range(1000):
            fake.put("Invoice", str(n), NOW - 10 * SECOND, TotalAmt=n)
        known = {("invoice", str(n)) for n in range(1000)}
        stream = QuickBooksDeletes(fake.company, ["Invoice"], context(known))
        pages = stream.pages(Position(NOW - 60 * SECOND), http)
        first = await anext(pages)
        second = await anext(pages)  # the entity alone still fills an answer
        assert first.next is not None and second.next is not None
        fake.fail_next(200, {"Fault": {"Error": [{"Message": "busy"}], "type": "SystemFault"}})
        with pytest.raises(PollError, match="without QueryResponse"):
            await anext(pages)
        await pages.aclose()


@pytest.mark.parametrize("token", [None, {"cover": "x"}, {"entity": 1, "cover": 5}])
async def test_unusable_tokens_start_a_new_pass(token: Any) -> None:
    async with FakeQuickBooks() as fake, connected(fake) as http:
        fake.put("Invoice", "1", NOW - 5 * SECOND)
        fake.delete("Invoice", "1", NOW - 5 * SECOND)
        stream = QuickBooksDeletes(fake.company, ["Invoice"], context({("invoice", "1")}))
        pages = await walk(stream, Position(NOW - 60 * SECOND, token), http)
    assert deletes(pages) == [("invoice", "1")]
    assert len(pages) == 1 and pages[0].cursor_ns == NOW
