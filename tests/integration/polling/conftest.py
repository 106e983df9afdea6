from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.streams import DLQ_SUBJECTS, ensure_stream
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.observability import Metrics
from tests.support.nats_server import NatsServer
from tests.support.polling import DLQ_STREAM


@pytest.fixture(scope="package")
def poll_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the polling tests, with one DLQ stream shared by them (records
    are told apart by tenant); each test publishes to a stream of its own."""
    server = NatsServer(tmp_path_factory.mktemp("poll-nats")).start()
    yield server
    server.stop()


@pytest.fixture
async def nats_url(poll_nats: NatsServer) -> AsyncIterator[str]:
    from nats.js.api import StreamConfig

    broker = Broker(NatsConfig(), [poll_nats.url], Metrics())
    await broker.connect()
    try:
        await ensure_stream(broker.js, StreamConfig(name=DLQ_STREAM, subjects=[DLQ_SUBJECTS]))
    finally:
        await broker.close()
    yield poll_nats.url


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path / "data")
