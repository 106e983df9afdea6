"""The events table: its DDL (one text for chdb and a ClickHouse server) and bootstrap.

``ReplacingMergeTree`` keyed only by the event's own fields, ending in its id and tenant: a
redelivered or re-published event has the same key, so merges keep one copy and ``FINAL``
reads each event once. No lookup of existing ids is needed before an insert (the reference
scanned the whole table per flush).

The TTL runs on ``received_at`` (insert time), not on the event's own ``time``: a back-filled
event whose time is older than the retention would otherwise be deleted right after insert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ensemble_tap.config.models import IDENTIFIER_RE
from ensemble_tap.observability import get_logger
from ensemble_tap.sink.backends import Backend

log = get_logger("ensemble_tap.sink")

# Insert order of the columns (received_at is left to its default).
COLUMNS = (
    "id",
    "type",
    "source",
    "subject",
    "time",
    "provider",
    "entity_type",
    "entity_id",
    "action",
    "changes",
    "snapshot",
    "provider_event_id",
    "tenant_id",
    "request_id",
)
# Every column with its type; a column missing from an existing table is added.
COLUMN_TYPES = {
    "id": "String",
    "type": "LowCardinality(String)",
    "source": "LowCardinality(String)",
    "subject": "String",
    "time": "DateTime64(3, 'UTC')",
    "provider": "LowCardinality(String)",
    "entity_type": "LowCardinality(String)",
    "entity_id": "String",
    "action": "LowCardinality(String)",
    "changes": "String",
    "snapshot": "String",
    "provider_event_id": "String",
    "tenant_id": "Nullable(String)",
    "request_id": "String",
    "received_at": "DateTime64(3, 'UTC') DEFAULT now64(3)",
}
DEFAULT_TTL_SECONDS = 365 * 86400
# Insert de-duplication by token needs a window on non-replicated tables (replicated ones
# have one by default).
DEDUP_WINDOW = 1000
_TTL_SECONDS = re.compile(r"toIntervalSecond\((\d+)\)")


class SchemaError(RuntimeError):
    pass


def quote_identifier(name: str) -> str:
    """A validated identifier in backquotes; anything else is refused, never escaped."""
    if not IDENTIFIER_RE.match(name):
        raise SchemaError(f"invalid ClickHouse identifier {name!r}")
    return f"`{name}`"


@dataclass(frozen=True, slots=True)
class TableRef:
    database: str
    table: str

    @property
    def qualified(self) -> str:
        return f"{quote_identifier(self.database)}.{quote_identifier(self.table)}"


def ttl_seconds(retention: float) -> int:
    seconds = int(retention)
    return seconds if seconds > 0 else DEFAULT_TTL_SECONDS


def ttl_expression(seconds: int) -> str:
    return f"toDateTime(received_at) + INTERVAL {seconds} SECOND"


def create_database_sql(ref: TableRef) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {quote_identifier(ref.database)}"


def create_table_sql(ref: TableRef, ttl: int) -> str:
    columns = ",\n".join(f"    {name} {kind}" for name, kind in COLUMN_TYPES.items())
    return (
        f"CREATE TABLE IF NOT EXISTS {ref.qualified} (\n{columns},\n"
        "    INDEX idx_id id TYPE bloom_filter GRANULARITY 4,\n"
        "    INDEX idx_request_id request_id TYPE bloom_filter GRANULARITY 4,\n"
        "    INDEX idx_entity_id entity_id TYPE bloom_filter GRANULARITY 4\n"
        ")\n"
        "ENGINE = ReplacingMergeTree\n"
        "PARTITION BY toYYYYMM(time)\n"
        "ORDER BY (provider, entity_type, time, id, ifNull(tenant_id, ''))\n"
        f"TTL {ttl_expression(ttl)}\n"
        f"SETTINGS index_granularity = 8192, non_replicated_deduplication_window = {DEDUP_WINDOW}"
    )


def modify_ttl_sql(ref: TableRef, ttl: int) -> str:
    return f"ALTER TABLE {ref.qualified} MODIFY TTL {ttl_expression(ttl)}"


def add_column_sql(ref: TableRef, name: str) -> str:
    return f"ALTER TABLE {ref.qualified} ADD COLUMN IF NOT EXISTS {name} {COLUMN_TYPES[name]}"


def insert_sql(ref: TableRef, dedup_token: str) -> str:
    """The batch insert. A retry of the same batch (e.g. after a timeout whose insert did
    commit) carries the same token and is dropped by ClickHouse; RFC 3339 event times with
    offsets are parsed by ClickHouse itself (``best_effort``)."""
    if not dedup_token.isalnum():
        raise SchemaError("the insert deduplication token must be alphanumeric")
    return (
        f"INSERT INTO {ref.qualified} ({', '.join(COLUMNS)}) "
        f"SETTINGS insert_deduplication_token = '{dedup_token}', "
        "date_time_input_format = 'best_effort', optimize_on_insert = 0, "
        "input_format_parallel_parsing = 0 "
        "FORMAT JSONCompactEachRow"
    )


TABLE_INFO_SQL = (
    "SELECT engine, engine_full FROM system.tables "
    "WHERE database = {database:String} AND name = {table:String}"
)
COLUMNS_SQL = (
    "SELECT name FROM system.columns WHERE database = {database:String} AND table = {table:String}"
)


def current_ttl_seconds(engine_full: str) -> int | None:
    """Seconds of a ``received_at`` TTL in ``system.tables.engine_full``; None for another TTL."""
    _, found, clause = engine_full.partition(" TTL ")
    if not found:
        return None
    clause = clause.split(" SETTINGS ", 1)[0]
    match = _TTL_SECONDS.search(clause)
    if "received_at" not in clause or match is None:
        return None
    return int(match.group(1))


async def bootstrap(backend: Backend, ref: TableRef, retention: float) -> list[str]:
    """Create the database and table, then bring an existing table up to date: add missing
    columns and apply a changed TTL. Returns notes about what cannot be changed in place."""
    ttl = ttl_seconds(retention)
    params = {"database": ref.database, "table": ref.table}
    name = f"{ref.database}.{ref.table}"
    await backend.execute(create_database_sql(ref))
    await backend.execute(create_table_sql(ref, ttl))
    rows = await backend.query(TABLE_INFO_SQL, params)
    if not rows:
        raise SchemaError(f"table {name} not found after creating it")
    engine, engine_full = str(rows[0]["engine"]), str(rows[0]["engine_full"])
    if engine == "Distributed":
        # A cluster's tables are managed by its operators (docs/clickhouse.md): inserts go
        # through the Distributed table, TTL and columns live on the local tables.
        return [f"table {name} is Distributed: columns and TTL are not managed by the sink"]
    present = {row["name"] for row in await backend.query(COLUMNS_SQL, params)}
    for column in COLUMN_TYPES:
        if column not in present:
            await backend.execute(add_column_sql(ref, column))
            log.info("clickhouse column added", table=name, column=column)
    if current_ttl_seconds(engine_full) != ttl:
        await backend.execute(modify_ttl_sql(ref, ttl))
        log.info("clickhouse ttl applied", table=name, seconds=ttl)
    notes: list[str] = []
    if "ReplacingMergeTree" not in engine:
        notes.append(
            f"table {name} uses engine {engine}: redelivered events are not collapsed "
            "(recreate it to get ReplacingMergeTree)"
        )
    for note in notes:
        log.warning("clickhouse table", detail=note)
    return notes
