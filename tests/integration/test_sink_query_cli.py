"""``ensemble-tap query``: read-only SQL on the embedded data while the service is stopped."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ensemble_tap.sink.rows import convert
from ensemble_tap.sink.schema import TableRef, bootstrap, insert_sql
from tests.support.sink import envelope, open_chdb

CLI = str(Path(sys.executable).parent / "ensemble-tap")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data of a stopped service: three events of tenant t1."""
    root = tmp_path_factory.mktemp("query")
    with open_chdb(root / "clickhouse") as backend:

        async def fill() -> None:
            table = TableRef("ensemble", "tap_events")
            await bootstrap(backend, table, 3600)
            lines = [convert(envelope(i)[1], int).line for i in range(3)]
            await backend.insert(insert_sql(table, "q"), b"\n".join(lines))

        asyncio.run(fill())
    return root


def query(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "query", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_table_output(data_dir: Path) -> None:
    result = query(
        data_dir,
        "SELECT tenant_id, count() AS events FROM ensemble.tap_events FINAL GROUP BY tenant_id",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "tenant_id" in lines[0] and "events" in lines[0]
    assert "t1" in lines[1] and "3" in lines[1]


def test_json_output(data_dir: Path) -> None:
    result = query(data_dir, "--json", "SELECT id, request_id FROM ensemble.tap_events ORDER BY id")
    assert result.returncode == 0, result.stderr
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == [
        {"id": f"evt_{i}", "request_id": f"req-{i}"} for i in range(3)
    ]


def test_writes_are_refused(data_dir: Path) -> None:
    result = query(data_dir, "DROP TABLE ensemble.tap_events")
    assert result.returncode == 1
    assert "readonly" in result.stderr.lower()
    assert query(data_dir, "--json", "SELECT count() AS n FROM ensemble.tap_events").stdout == (
        '{"n":3}\n'
    )


def test_bad_sql(data_dir: Path) -> None:
    result = query(data_dir, "SELEC 1")
    assert result.returncode == 1
    assert result.stderr.startswith("error: Code: 62.")


def test_no_data(tmp_path: Path) -> None:
    result = query(tmp_path, "SELECT 1")
    assert result.returncode == 1
    assert (
        result.stderr == f"error: no embedded ClickHouse data at {tmp_path.resolve()}/clickhouse\n"
    )


def test_data_in_use_by_another_process(data_dir: Path) -> None:
    with open_chdb(data_dir / "clickhouse"):
        result = query(data_dir, "SELECT 1")
    assert result.returncode == 1
    assert "(another process may be using it)" in result.stderr
