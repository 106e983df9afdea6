"""The broker fails under load: SIGKILL, down longer than the publish budget, absent at
start. Senders retry until a 2xx: nothing is lost, nothing is stored twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import check
from tests.faults.scenarios import (
    SPOOL_CONFIG,
    Scale,
    broker_absent_at_start,
    broker_outage,
    broker_sigkill,
    spool_sigkill,
)


async def test_broker_sigkill_mid_load(tmp_path: Path) -> None:
    check(await broker_sigkill(tmp_path, Scale()))


@pytest.mark.parametrize("spool", sorted(SPOOL_CONFIG))
async def test_broker_down_longer_than_the_publish_budget(tmp_path: Path, spool: bool) -> None:
    check(await broker_outage(tmp_path, Scale(), spool=spool))


async def test_broker_absent_at_start(tmp_path: Path) -> None:
    check(await broker_absent_at_start(tmp_path, Scale()))


async def test_sigkill_while_spooling_loses_nothing(tmp_path: Path) -> None:
    check(await spool_sigkill(tmp_path, Scale()))
