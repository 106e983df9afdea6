from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.support.nats_server import NatsServer


class _CurrentStdout:
    """structlog's default logger keeps the stdout of the moment it was first used, so lines
    of background tasks landed outside pytest's capture; this one writes to the current one."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stdout)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


structlog.configure(logger_factory=lambda *_: _CurrentStdout(), cache_logger_on_first_use=False)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One real JetStream server for the session; tests use their own stream names. It has
    a WebSocket listener too (``ws_url``)."""
    server = NatsServer(tmp_path_factory.mktemp("nats"), websocket=True).start()
    yield server
    server.stop()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of this test's own, for tests that stop or restart it."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()
