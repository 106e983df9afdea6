"""Every statement of the schema bootstrap and the insert, run on chdb (the real engine)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from ensemble_tap.sink.backends import BackendError, EmbeddedBackend
from ensemble_tap.sink.rows import convert
from ensemble_tap.sink.schema import (
    COLUMN_TYPES,
    SchemaError,
    TableRef,
    bootstrap,
    create_table_sql,
    current_ttl_seconds,
    insert_sql,
    quote_identifier,
    ttl_seconds,
)
from tests.support.sink import envelope, open_chdb

_names = itertools.count()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBackend]:
    with open_chdb(tmp_path_factory.mktemp("schema") / "clickhouse") as opened:
        yield opened


@pytest.fixture
def table() -> TableRef:
    return TableRef("ensemble", f"events_{next(_names)}")


async def insert(
    backend: EmbeddedBackend, table: TableRef, bodies: list[bytes], token: str
) -> None:
    lines = [convert(body, int).line for body in bodies]
    await backend.insert(insert_sql(table, token), b"\n".join(lines))


async def count(backend: EmbeddedBackend, table: TableRef, final: bool = False) -> int:
    rows = await backend.query(
        f"SELECT count() AS n FROM {table.qualified}{' FINAL' if final else ''}"
    )
    return int(rows[0]["n"])


async def engine_full(backend: EmbeddedBackend, table: TableRef) -> str:
    rows = await backend.query(
        "SELECT engine_full FROM system.tables WHERE database = {d:String} AND name = {t:String}",
        {"d": table.database, "t": table.table},
    )
    return str(rows[0]["engine_full"])


def test_identifiers_are_validated_and_backquoted() -> None:
    assert quote_identifier("tap_events") == "`tap_events`"
    assert TableRef("ensemble", "tap_events").qualified == "`ensemble`.`tap_events`"
    for bad in ("a`b", "a.b", "1a", "", "a b"):
        with pytest.raises(SchemaError):
            quote_identifier(bad)


def test_ttl_seconds() -> None:
    assert ttl_seconds(8760 * 3600) == 31_536_000
    assert ttl_seconds(90.9) == 90
    assert ttl_seconds(0.5) == 31_536_000  # below a second: the default, as the reference


def test_ttl_parsing_of_engine_full() -> None:
    assert (
        current_ttl_seconds(
            "MergeTree ORDER BY id TTL toDateTime(received_at) + "
            "toIntervalSecond(60) SETTINGS index_granularity = 8192"
        )
        == 60
    )
    assert (
        current_ttl_seconds(
            "MergeTree ORDER BY id TTL toDateTime(time) + toIntervalSecond(60) SETTINGS x = 1"
        )
        is None
    )
    assert current_ttl_seconds("MergeTree ORDER BY id SETTINGS x = 1") is None


async def test_bootstrap_creates_the_table(backend: EmbeddedBackend, table: TableRef) -> None:
    assert await bootstrap(backend, table, 3600) == []
    columns = await backend.query(
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String}",
        {"d": table.database, "t": table.table},
    )
    assert [row["name"] for row in columns] == list(COLUMN_TYPES)
    assert {row["name"]: row["type"] for row in columns}["request_id"] == "String"
    engine = await engine_full(backend, table)
    assert engine.startswith(
        "ReplacingMergeTree PARTITION BY toYYYYMM(time) ORDER BY "
        "(provider, entity_type, time, id, ifNull(tenant_id, ''))"
    )
    assert "TTL toDateTime(received_at) + toIntervalSecond(3600)" in engine
    assert await bootstrap(backend, table, 3600) == []  # idempotent


async def test_one_ddl_text(table: TableRef) -> None:
    """The statement names only validated, backquoted identifiers and a whole-second TTL."""
    sql = create_table_sql(table, 60)
    assert sql.startswith(f"CREATE TABLE IF NOT EXISTS `ensemble`.`{table.table}` (")
    assert "TTL toDateTime(received_at) + INTERVAL 60 SECOND" in sql


async def test_duplicates_collapse(backend: EmbeddedBackend, table: TableRef) -> None:
    """A redelivered event (same provider, tenant, id) is read once with FINAL and merged
    away; the same id of another tenant is another event (W-CH-14)."""
    await bootstrap(backend, table, 3600)
    one, other_tenant = envelope(1)[1], envelope(1, tenant="t2")[1]
    await insert(backend, table, [one, envelope(2)[1]], "a")
    await insert(backend, table, [one, other_tenant], "b")
    assert await count(backend, table) == 4
    assert await count(backend, table, final=True) == 3
    await backend.execute(f"OPTIMIZE TABLE {table.qualified} FINAL")
    assert await count(backend, table) == 3


async def test_insert_token_drops_a_retried_batch(
    backend: EmbeddedBackend, table: TableRef
) -> None:
    await bootstrap(backend, table, 3600)
    bodies = [envelope(i)[1] for i in range(3)]
    await insert(backend, table, bodies, "same")
    await insert(backend, table, bodies, "same")
    assert await count(backend, table) == 3


async def test_insert_sql_refuses_odd_tokens(table: TableRef) -> None:
    with pytest.raises(SchemaError):
        insert_sql(table, "x' OR 1")


async def test_values_are_stored_exactly(backend: EmbeddedBackend, table: TableRef) -> None:
    await bootstrap(backend, table, 3600)
    body = (
        b'{"specversion":"1.0","id":"e\\\\1\'","time":"2026-03-01T12:00:00.987654+02:00",'
        b'"data":{"provider":"acme","tenant_id":"","snapshot":{"n":123456789012345678901234567890}}}'
    )
    await insert(backend, table, [body], "x")
    rows = await backend.query(
        f"SELECT id, toString(time) AS time, tenant_id, snapshot FROM {table.qualified}"
    )
    assert rows == [
        {
            "id": "e\\1'",
            "time": "2026-03-01 10:00:00.987",
            "tenant_id": None,
            "snapshot": '{"n":123456789012345678901234567890}',
        }
    ]


async def test_ttl_change_is_applied(backend: EmbeddedBackend, table: TableRef) -> None:
    await bootstrap(backend, table, 3600)
    await bootstrap(backend, table, 7200)
    assert "toIntervalSecond(7200)" in await engine_full(backend, table)


async def test_ttl_runs_on_insert_time_not_event_time(
    backend: EmbeddedBackend, table: TableRef
) -> None:
    """An old event is kept after insert (the reference's TTL on ``time`` deleted it at the
    next merge, W-CH-15); a row inserted longer ago than the retention goes."""
    await bootstrap(backend, table, 86400)
    old_event = orjson.dumps(
        {"specversion": "1.0", "id": "old", "time": "1999-01-01T00:00:00Z", "data": {}}
    )
    await insert(backend, table, [old_event], "old")
    await backend.execute(
        f"INSERT INTO {table.qualified} (id, time, received_at) "
        "VALUES ('expired', now64(3), now64(3) - INTERVAL 2 DAY)"
    )
    await backend.execute(f"OPTIMIZE TABLE {table.qualified} FINAL")
    rows = await backend.query(f"SELECT id FROM {table.qualified}")
    assert rows == [{"id": "old"}]


async def test_reference_table_is_upgraded(backend: EmbeddedBackend, table: TableRef) -> None:
    """A table made by the reference: MergeTree, no request_id, TTL on event time."""
    await backend.execute("CREATE DATABASE IF NOT EXISTS ensemble")
    await backend.execute(
        f"CREATE TABLE {table.qualified} (id String, type LowCardinality(String), "
        "source LowCardinality(String), subject String, time DateTime64(3), "
        "provider LowCardinality(String), entity_type LowCardinality(String), "
        "entity_id String, action LowCardinality(String), changes String, snapshot String, "
        "provider_event_id String, tenant_id Nullable(String), "
        "received_at DateTime64(3) DEFAULT now64(3)) ENGINE = MergeTree() "
        "PARTITION BY toYYYYMM(time) ORDER BY (provider, entity_type, time, id) "
        "TTL toDateTime(time) + INTERVAL 31536000 SECOND"
    )
    notes = await bootstrap(backend, table, 31_536_000)
    assert notes == [
        f"table ensemble.{table.table} uses engine MergeTree: redelivered events are not "
        "collapsed (recreate it to get ReplacingMergeTree)"
    ]
    engine = await engine_full(backend, table)
    assert "TTL toDateTime(received_at) + toIntervalSecond(31536000)" in engine
    await insert(backend, table, [envelope(1)[1]], "ref")  # request_id exists now
    rows = await backend.query(f"SELECT request_id, toString(time) AS t FROM {table.qualified}")
    assert rows == [{"request_id": "req-1", "t": "2025-11-24 16:00:00.001"}]


async def test_statement_errors_are_backend_errors(backend: EmbeddedBackend) -> None:
    with pytest.raises(BackendError) as info:
        await backend.query("SELECT * FROM system.no_such_table")  # system: always there
    assert "UNKNOWN_TABLE" in str(info.value)
    assert info.value.unreachable is False


def test_embedded_path(tmp_path: Path) -> None:
    from ensemble_tap.sink.backends import embedded_path

    assert embedded_path(tmp_path) == tmp_path.resolve() / "clickhouse"
