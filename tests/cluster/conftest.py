"""Fixtures of the cluster tier: a 3-node nats-server cluster per test (each test makes its
own streams and kills its own nodes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.replicas import FIGURES
from tests.support.nats_cluster import NatsCluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """Three nodes, started together; JetStream may still be electing its meta leader."""
    nodes = NatsCluster(tmp_path / "nats").start()
    try:
        yield nodes
    finally:
        nodes.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures the cluster tests reported (replicas.report), after every run."""
    if FIGURES:
        terminalreporter.write_sep("-", "cluster figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
