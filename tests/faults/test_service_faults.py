"""``ensemble-tap serve`` SIGKILLed under load and restarted, with one process and with
worker processes: what was acknowledged is stored once, the rest is retried and stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import check
from tests.faults.scenarios import Scale, service_sigkill


@pytest.mark.parametrize("workers", [1, 2])
async def test_service_sigkill_and_restart(tmp_path: Path, workers: int) -> None:
    check(await service_sigkill(tmp_path, Scale(), workers=workers))
