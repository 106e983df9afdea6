"""The ClickHouse sink under faults: its process SIGKILLed mid-drain, the ClickHouse server
down for a while. Every accepted event ends up in the table once."""

from __future__ import annotations

from pathlib import Path

from tests.faults.harness import check
from tests.faults.scenarios import Scale, clickhouse_outage, sink_sigkill


async def test_sink_sigkill_mid_drain(tmp_path: Path) -> None:
    check(await sink_sigkill(tmp_path, Scale()))


async def test_clickhouse_down_then_back(tmp_path: Path) -> None:
    check(await clickhouse_outage(tmp_path, Scale()))
