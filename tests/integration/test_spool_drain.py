"""The spool's drainer against a real nats-server: events spooled while the broker is away are
stored once each, in spool order, with their original Nats-Msg-Id and request id; a refused
event goes to the rejection handler and does not block the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.contract import PublishError
from ensemble_tap.bus.embedded import free_port
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import ensure_stream, main_stream_config
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.observability import Metrics
from ensemble_tap.spool import Drainer, SpooledRecord, SpoolLog
from tests.support.configs import unique_nats
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer


def _nats_config(**values: object) -> NatsConfig:
    return unique_nats("spool", **{"publish_timeout": "1s", "reconnect_wait": "100ms", **values})


async def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` (a bound on waiting, not a speed assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[SpoolLog]:
    log = SpoolLog(tmp_path / "spool", max_bytes=1 << 30, metrics=Metrics())
    await log.open()
    yield log
    await log.close()


async def _spool_events(log: SpoolLog, cfg: NatsConfig, ids: range) -> None:
    await asyncio.gather(
        *(
            log.append(
                f"{cfg.subject_prefix}.acme.thing.{i % 3}",
                orjson.dumps({"id": i}),
                f"evt-{i}",
                f"req-{i}",
            )
            for i in ids
        )
    )


def _metric(log: SpoolLog, name: str) -> float | None:
    assert log.metrics is not None
    return log.metrics.registry.get_sample_value(name)


async def test_events_spooled_without_a_broker_are_stored_once_in_order(
    tmp_path: Path, spool: SpoolLog
) -> None:
    cfg = _nats_config()
    server = NatsServer(tmp_path / "nats", port=free_port())  # not started yet
    await _spool_events(spool, cfg, range(500))
    assert spool.metrics is not None
    broker = Broker(cfg, [server.url], spool.metrics)
    connecting = asyncio.create_task(broker.connect())
    drainer = Drainer(
        spool,
        JetStreamPublisher(broker, cfg, spool.metrics),
        metrics=spool.metrics,
        max_backoff=0.5,
    )
    drainer.start()
    try:
        await _until(lambda: drainer.waiting_for_broker, "a failed drain attempt")
        assert spool.depth_events == 500
        server.start()
        await connecting
        await ensure_stream(broker.js, main_stream_config(cfg))  # no stream until now
        drainer.wake()
        await _until(lambda: spool.depth_events == 0, "the drain")

        stored = await stored_messages(server.url, cfg.stream)
        assert [m.headers["Nats-Msg-Id"] for m in stored] == [f"evt-{i}" for i in range(500)]
        assert [m.headers["X-Request-ID"] for m in stored] == [f"req-{i}" for i in range(500)]
        assert [m.subject for m in stored] == [
            f"{cfg.subject_prefix}.acme.thing.{i % 3}" for i in range(500)
        ]
        assert [m.json()["id"] for m in stored] == list(range(500))
        assert _metric(spool, "tap_spool_drained_total") == 500

        # The same events spooled again (a sender's retry) are dropped by JetStream's dedup.
        await _spool_events(spool, cfg, range(10))
        await _until(lambda: spool.depth_events == 0, "the second drain")
        assert len(await stored_messages(server.url, cfg.stream)) == 500
        assert spool.disk_bytes == 0
    finally:
        await drainer.stop()
        connecting.cancel()
        await broker.close()
        server.stop()


async def test_a_crash_between_the_acks_and_the_cursor_stores_nothing_twice(
    tmp_path: Path, private_nats: NatsServer
) -> None:
    cfg = _nats_config()
    metrics = Metrics()
    log = SpoolLog(tmp_path / "spool", max_bytes=1 << 30, metrics=metrics)
    await log.open()
    await _spool_events(log, cfg, range(40))
    broker = Broker(cfg, [private_nats.url], metrics)
    await broker.connect()
    drainer: Drainer | None = None
    try:
        await ensure_stream(broker.js, main_stream_config(cfg))
        publisher = JetStreamPublisher(broker, cfg, metrics)
        # Published and acknowledged, then "crashed" before the cursor was written.
        for record in await log.read_batch(25):
            await publisher.publish(
                record.subject, record.payload, record.msg_id, record.request_id
            )
        await log.close()

        log = SpoolLog(tmp_path / "spool", max_bytes=1 << 30, metrics=metrics)
        await log.open()
        assert log.depth_events == 40
        drainer = Drainer(log, publisher, metrics=metrics)
        drainer.start()
        await _until(lambda: log.depth_events == 0, "the drain")
        stored = await stored_messages(private_nats.url, cfg.stream)
        assert [m.headers["Nats-Msg-Id"] for m in stored] == [f"evt-{i}" for i in range(40)]
        assert metrics.registry.get_sample_value("tap_spool_drained_total") == 40
    finally:
        if drainer is not None:
            await drainer.stop()
        await log.close()
        await broker.close()


class StopsTheBrokerMidWindow:
    """The real publisher; its ``after``-th publish first stops the broker (SIGTERM), so
    the outage lands inside a window of pipelined publishes, whatever the machine's speed."""

    def __init__(self, publisher: JetStreamPublisher, server: NatsServer, after: int) -> None:
        self.publisher = publisher
        self.server = server
        self.after = after
        self.count = 0

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        request_id: str = "",
        timeout: float | None = None,
    ) -> object:
        self.count += 1
        if self.count == self.after:
            self.server.stop()
        return await self.publisher.publish(subject, payload, msg_id, request_id, timeout)


async def test_a_broker_outage_mid_drain_keeps_order_and_stores_each_once(
    tmp_path: Path, spool: SpoolLog, private_nats: NatsServer
) -> None:
    cfg = _nats_config()
    assert spool.metrics is not None
    await _spool_events(spool, cfg, range(3000))
    broker = Broker(cfg, [private_nats.url], spool.metrics)
    await broker.connect()
    await ensure_stream(broker.js, main_stream_config(cfg))
    publisher = StopsTheBrokerMidWindow(
        JetStreamPublisher(broker, cfg, spool.metrics), private_nats, after=1000
    )
    drainer = Drainer(spool, publisher, metrics=spool.metrics, max_backoff=0.5)
    drainer.start()
    try:
        await _until(lambda: drainer.waiting_for_broker, "a failed drain attempt")
        assert spool.depth_events > 0
        private_nats.start()
        await _until(lambda: spool.depth_events == 0, "the drain")
        stored = await stored_messages(private_nats.url, cfg.stream)
        assert [m.headers["Nats-Msg-Id"] for m in stored] == [f"evt-{i}" for i in range(3000)]
    finally:
        await drainer.stop()
        await broker.close()


@pytest.mark.parametrize("recorded", [True, False])
async def test_an_event_the_broker_refuses_goes_to_the_handler_and_the_rest_flows(
    spool: SpoolLog, private_nats: NatsServer, recorded: bool
) -> None:
    cfg = _nats_config(stream_max_msg_size=512)
    metrics = spool.metrics
    assert metrics is not None
    await spool.append(f"{cfg.subject_prefix}.a.b.c", b'{"n":1}', "small-1")
    await spool.append(f"{cfg.subject_prefix}.a.b.c", b'{"pad":"%s"}' % (b"x" * 2048), "big")
    await spool.append(f"{cfg.subject_prefix}.a.b.c", b'{"n":2}', "small-2")
    handed: list[tuple[SpooledRecord, PublishError]] = []

    async def on_rejected(record: SpooledRecord, error: PublishError) -> bool:
        handed.append((record, error))
        return recorded  # False: the dead-letter write failed, try again later

    broker = Broker(cfg, [private_nats.url], metrics)
    await broker.connect()
    await ensure_stream(broker.js, main_stream_config(cfg))
    drainer = Drainer(
        spool,
        JetStreamPublisher(broker, cfg, metrics),
        on_rejected=on_rejected,
        metrics=metrics,
        min_backoff=0.01,
        max_backoff=0.05,
        reject_attempts=3,
    )
    drainer.start()
    try:
        await _until(lambda: spool.depth_events == 0, "the drain")
        stored = await stored_messages(private_nats.url, cfg.stream)
        assert [m.headers["Nats-Msg-Id"] for m in stored] == ["small-1", "small-2"]
        assert {record.msg_id for record, _ in handed} == {"big"}
        assert all(not error.unavailable for _, error in handed)
        assert len(handed) == (1 if recorded else 3)
        dropped = metrics.registry.get_sample_value("tap_spool_dropped_total")
        assert dropped == (0 if recorded else 1)
        assert metrics.registry.get_sample_value("tap_spool_drained_total") == 2
    finally:
        await drainer.stop()
        await broker.close()
