"""Run the ClickHouse sink against a real nats-server and read back what it stored."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import dlq_stream_config, ensure_stream, main_stream_config
from ensemble_tap.config.models import Config
from ensemble_tap.events import NormalizedEvent, build_envelope
from ensemble_tap.observability import Metrics
from ensemble_tap.sink import ClickHouseSink, EmbeddedBackend
from ensemble_tap.sink.jetstream import consumer_info
from tests.support.configs import make_config

FAST = {
    "flush_interval": "100ms",
    "consumer_fetch_max_wait": "100ms",
    "consumer_ack_wait": "10s",
    "insert_timeout": "5s",
}


def sink_config(nats_url: str, data_dir: Path, **clickhouse: Any) -> Config:
    """A config whose sink flushes quickly; ``clickhouse`` keys override."""
    settings: dict[str, Any] = {"backend": "embedded", **FAST, **clickhouse}
    return make_config(nats_url, str(data_dir), clickhouse=settings)


def envelope(index: int, tenant: str = "t1", **fields: Any) -> tuple[str, bytes, str]:
    """(subject, CloudEvent body, Nats-Msg-Id) of test event ``index``."""
    event = NormalizedEvent(
        provider=fields.pop("provider", "acme"),
        entity_type=fields.pop("entity_type", "deal"),
        entity_id=str(fields.pop("entity_id", index)),
        action=fields.pop("action", "updated"),
        provider_time_ns=fields.pop("time_ns", 1_764_000_000_000_000_000 + index * 1_000_000),
        provider_event_id=fields.pop("event_id", f"evt_{index}"),
        tenant_id=tenant,
        request_id=fields.pop("request_id", f"req-{index}"),
        snapshot=fields.pop("snapshot", {"n": index}),
        **fields,
    )
    env = build_envelope(event, "ensemble.tap", False)
    return env.subject, env.body, f"acme:{tenant}:{env.event_id}"


@dataclass
class Harness:
    config: Config
    broker: Broker
    publisher: JetStreamPublisher
    dlq: DeadLetterWriter
    metrics: Metrics

    def sink(self, **overrides: Any) -> ClickHouseSink:
        return ClickHouseSink(
            self.config, broker=self.broker, dlq=self.dlq, metrics=self.metrics, **overrides
        )

    async def publish(self, indexes: range, **fields: Any) -> None:
        for index in indexes:
            subject, body, msg_id = envelope(index, **fields)
            await self.publisher.publish(subject, body, msg_id=msg_id)

    async def publish_raw(self, subject: str, body: bytes, msg_id: str) -> None:
        await self.publisher.publish(subject, body, msg_id=msg_id)

    async def consumer(self) -> dict[str, Any]:
        info = await self.consumer_if_any()
        assert info is not None
        return info

    async def consumer_if_any(self) -> dict[str, Any] | None:
        return await consumer_info(
            self.broker.nc, self.config.nats.stream, self.config.clickhouse.consumer_name
        )

    async def settled(self) -> bool:
        """Every message of the stream delivered to the sink and acked (or terminated)."""
        info = await self.consumer()
        return bool(info["num_pending"] == 0 and info["num_ack_pending"] == 0)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def harness(config: Config) -> AsyncIterator[Harness]:
    """Broker, streams, publisher and DLQ writer as the app builds them."""
    metrics = Metrics()
    assert config.nats.url is not None
    broker = Broker(config.nats, [config.nats.url], metrics)
    await broker.connect()
    try:
        await ensure_stream(broker.js, main_stream_config(config.nats))
        await ensure_stream(broker.js, dlq_stream_config(config.nats))
        publisher = JetStreamPublisher(broker, config.nats, metrics)
        yield Harness(config, broker, publisher, DeadLetterWriter(publisher, metrics), metrics)
    finally:
        await broker.close()


def rows_of(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


@contextlib.contextmanager
def open_chdb(path: Path) -> Iterator[EmbeddedBackend]:
    """An embedded backend opened synchronously (for module-wide fixtures). chdb allows one
    data path per process, so it is closed before another test opens its own."""
    backend = EmbeddedBackend(path)
    backend._executor.submit(backend._open).result()
    try:
        yield backend
    finally:
        if backend._conn is not None:
            backend._executor.submit(backend._close).result()
        backend._executor.shutdown(wait=True)
