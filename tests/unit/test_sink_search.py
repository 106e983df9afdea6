"""search_events: every filter, newest first, cursor pagination, on chdb."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ensemble_tap.sink.backends import EmbeddedBackend
from ensemble_tap.sink.rows import convert
from ensemble_tap.sink.schema import TableRef, bootstrap, insert_sql
from ensemble_tap.sink.search import (
    EventFilters,
    InvalidSearch,
    decode_cursor,
    encode_cursor,
    search_events,
)
from tests.support.sink import envelope, open_chdb

TABLE = TableRef("ensemble", "search_events")
BASE = datetime(2025, 11, 24, 16, 0, tzinfo=UTC)  # envelope(i) happened at BASE + i ms


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBackend]:
    with open_chdb(tmp_path_factory.mktemp("search") / "clickhouse") as opened:
        yield opened


@pytest.fixture(scope="module")
def stored(backend: EmbeddedBackend) -> EmbeddedBackend:
    """30 events of tenant t1, 10 of t2 (provider beta, ids shared with t1), one odd id,
    and a redelivered copy of event 0."""

    async def fill() -> None:
        await bootstrap(backend, TABLE, 3600)
        bodies = [envelope(i)[1] for i in range(30)]
        bodies += [
            envelope(i, tenant="t2", provider="beta", request_id=f"req-b{i}")[1] for i in range(10)
        ]
        bodies.append(envelope(99, event_id="odd \\ 'id'\t`x`", request_id="r\\1")[1])
        lines = [convert(body, int).line for body in bodies]
        await backend.insert(insert_sql(TABLE, "all"), b"\n".join(lines))
        await backend.insert(insert_sql(TABLE, "again"), convert(envelope(0)[1], int).line)

    asyncio.run(fill())
    return backend


async def ids(backend: EmbeddedBackend, **filters: object) -> list[str]:
    wanted = EventFilters(**filters)  # type: ignore[arg-type]
    events, _ = await search_events(backend, table=TABLE, filters=wanted, limit=1000)
    return [event["id"] for event in events]


async def test_newest_first_and_each_event_once(stored: EmbeddedBackend) -> None:
    assert await ids(stored, tenant="t1", provider="acme") == [
        "odd \\ 'id'\t`x`",  # event 99, the newest
        *(f"evt_{i}" for i in range(29, -1, -1)),
    ]


async def test_event_shape(stored: EmbeddedBackend) -> None:
    events, cursor = await search_events(
        stored, table=TABLE, filters=EventFilters(request_id="req-7")
    )
    assert cursor is None
    assert events == [
        {
            "id": "evt_7",
            "type": "ensemble.tap.acme.deal.updated",
            "source": "tap/acme/t1",
            "subject": "deal/7",
            "time": "2025-11-24T16:00:00.007Z",
            "provider": "acme",
            "entity_type": "deal",
            "entity_id": "7",
            "action": "updated",
            "changes": None,
            "snapshot": {"n": 7},
            "provider_event_id": "evt_7",
            "tenant_id": "t1",
            "request_id": "req-7",
            "received_at": events[0]["received_at"],
        }
    ]
    assert events[0]["received_at"].endswith("Z")


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"id": "evt_3"}, ["evt_3", "evt_3"]),
        ({"id": "evt_3", "tenant": "t2"}, ["evt_3"]),
        ({"provider": "beta", "entity_id": "4"}, ["evt_4"]),
        ({"type": "ensemble.tap.beta.deal.updated", "tenant": "t2", "entity_id": "9"}, ["evt_9"]),
        ({"request_id": "r\\1"}, ["odd \\ 'id'\t`x`"]),
        ({"id": "odd \\ 'id'\t`x`"}, ["odd \\ 'id'\t`x`"]),
        ({"id": "evt_3' OR '1'='1"}, []),
        ({"tenant": ""}, []),
        ({"provider": "nobody"}, []),
    ],
)
async def test_filters(
    stored: EmbeddedBackend, filters: dict[str, str], expected: list[str]
) -> None:
    assert await ids(stored, **filters) == expected


async def test_time_window(stored: EmbeddedBackend) -> None:
    since = BASE + timedelta(milliseconds=5)
    until = BASE + timedelta(milliseconds=8)
    assert await ids(stored, tenant="t1", since=since, until=until) == ["evt_7", "evt_6", "evt_5"]
    naive = since.replace(tzinfo=None)  # naive datetimes are UTC
    assert await ids(stored, tenant="t1", since=naive, until=until) == ["evt_7", "evt_6", "evt_5"]
    berlin = timezone(timedelta(hours=1))
    assert await ids(stored, tenant="t1", until=until.astimezone(berlin), since=since) == [
        "evt_7",
        "evt_6",
        "evt_5",
    ]


async def test_pages_cover_everything_once(stored: EmbeddedBackend) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        events, cursor = await search_events(
            stored, table=TABLE, filters=EventFilters(), limit=7, cursor=cursor
        )
        seen += [f"{event['tenant_id']}/{event['id']}" for event in events]
        pages += 1
        if cursor is None:
            break
    assert pages == 6  # 41 events
    assert len(seen) == len(set(seen)) == 41
    everything, _ = await search_events(stored, table=TABLE, filters=EventFilters(), limit=100)
    assert seen == [f"{event['tenant_id']}/{event['id']}" for event in everything]


async def test_exact_last_page_has_no_cursor(stored: EmbeddedBackend) -> None:
    events, cursor = await search_events(
        stored, table=TABLE, filters=EventFilters(tenant="t2"), limit=10
    )
    assert len(events) == 10 and cursor is None


async def test_no_match_is_an_empty_page(stored: EmbeddedBackend) -> None:
    assert await search_events(stored, table=TABLE, filters=EventFilters(id="none")) == ([], None)


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_limit_bounds(stored: EmbeddedBackend, limit: int) -> None:
    with pytest.raises(InvalidSearch, match="limit must be between 1 and 1000"):
        await search_events(stored, table=TABLE, filters=EventFilters(), limit=limit)


@pytest.mark.parametrize(
    "cursor", ["", "!!!", "bm90IGpzb24", "WzEsMiwzXQ", "WyJ4IiwiYSIsImIiLCJjIl0"]
)
async def test_bad_cursor(stored: EmbeddedBackend, cursor: str) -> None:
    with pytest.raises(InvalidSearch, match="invalid cursor"):
        await search_events(stored, table=TABLE, filters=EventFilters(), cursor=cursor)


def test_cursor_round_trip() -> None:
    cursor = encode_cursor(1_700_000_000_123, provider="acme", tenant="", event_id="evt_'1")
    assert "=" not in cursor
    assert decode_cursor(cursor) == (1_700_000_000_123, "acme", "", "evt_'1")


async def test_no_table_yet_is_an_empty_page(backend: EmbeddedBackend) -> None:
    for table in (TableRef("ensemble", "not_created"), TableRef("nowhere", "tap_events")):
        assert await search_events(backend, table=table, filters=EventFilters()) == ([], None)
