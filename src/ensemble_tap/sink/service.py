"""The ClickHouse sink as one part of the service: start, stop, status, search.

Start-up only touches NATS (a connection of its own and the durable consumer); opening
ClickHouse and preparing the table happen in the background and are retried, so an
unreachable ClickHouse never stops the service from starting or ingress from being ready
(the reference refused to start). The sink's state is reported, not enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ensemble_tap.bus.client import TapClient
from ensemble_tap.bus.connection import Broker, connect_options
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics, get_logger
from ensemble_tap.sink.backends import EmbeddedBackend, ServerBackend, open_backend_for
from ensemble_tap.sink.consumer import SinkConsumer
from ensemble_tap.sink.jetstream import (
    Puller,
    consumer_config,
    consumer_info,
    ensure_consumer,
)
from ensemble_tap.sink.schema import TableRef, bootstrap
from ensemble_tap.sink.search import DEFAULT_LIMIT, EventFilters, search_events
from ensemble_tap.sink.status import SinkStatus

OPEN_RETRY_BASE, OPEN_RETRY_MAX = 0.5, 30.0
MONITOR_INTERVAL = 5.0
log = get_logger("ensemble_tap.sink")


class ClickHouseSink:
    def __init__(
        self,
        config: Config,
        *,
        broker: Broker,
        dlq: DeadLetterWriter,
        metrics: Metrics,
        backend: EmbeddedBackend | ServerBackend | None = None,
    ) -> None:
        self.config = config.clickhouse
        self.nats = config.nats
        self.broker = broker
        self.dlq = dlq
        self.metrics = metrics
        self.table = TableRef(self.config.database, self.config.table)
        self.backend = backend or open_backend_for(self.config, config.data_dir)
        self.status_info = SinkStatus(backend=self.backend.description)
        self.nc = TapClient()
        self._connected_once = False
        self._desired = consumer_config(self.config, self.nats.subject_prefix)
        self._stopping = asyncio.Event()
        self._consumer: SinkConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Connect, create or update the consumer, then run in the background. Raises
        ``ConsumerRefused`` when NATS refuses the consumer (e.g. a push consumer of the same
        name), another error when JetStream cannot answer yet: the caller retries, and a
        retry keeps the connection made by the attempt before."""
        await self._connect()
        await self._ensure_consumer()
        puller = Puller(
            self.nc,
            stream=self.nats.stream,
            consumer=self.config.consumer_name,
            max_bytes=self.config.consumer_max_request_max_bytes,
        )
        await puller.start()
        self._tasks = [
            asyncio.create_task(self._run(puller), name="clickhouse-sink"),
            asyncio.create_task(self._watch(), name="clickhouse-sink-monitor"),
        ]
        log.info(
            "clickhouse sink started",
            backend=self.backend.description,
            table=f"{self.table.database}.{self.table.table}",
            consumer=self.config.consumer_name,
        )

    async def _connect(self) -> None:
        if self._connected_once:  # by an earlier attempt of start()
            return
        # The same servers, credentials and TLS as the broker.
        options = connect_options(self.nats, self.broker.servers)
        options.update(
            name="ensemble-tap-sink",
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
        )
        try:
            await asyncio.wait_for(self.nc.connect(**options), self.nats.startup_timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = TapClient()  # a fresh client for the next attempt
            raise
        self._connected_once = True

    async def stop(self) -> None:
        """Stop pulling, insert what is buffered, close ClickHouse and the connection."""
        self._stopping.set()
        if self._consumer is not None:
            self._consumer.stopping.set()
        budget = self.config.consumer_fetch_max_wait + 2 * self.config.insert_timeout + 5
        for task in self._tasks:
            if task.get_name() == "clickhouse-sink-monitor":
                task.cancel()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=budget)
            for task in late:
                task.cancel()
        await self.backend.close()
        if self.nc.is_connected:
            with contextlib.suppress(Exception):
                await self.nc.drain()  # sends the last acks
        if self._connected_once and not self.nc.is_closed:  # never connected: nothing to close
            await self.nc.close()
        self.status_info.set("stopped")
        self.metrics.clickhouse_healthy.set(0)
        log.info("clickhouse sink stopped", rows_inserted=self.status_info.rows_inserted)

    def status(self) -> dict[str, Any]:
        return self.status_info.as_dict()

    async def ready(self) -> tuple[bool, str]:
        """Whether events are being stored, with a one-line reason; for ``/readyz`` detail
        only: ingress stays ready whatever the sink's state."""
        return self.status_info.healthy, self.status_info.summary()

    async def readiness_detail(self) -> dict[str, str]:
        return {"clickhouse": self.status_info.summary()}

    async def search(
        self, filters: EventFilters, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await search_events(
            self.backend, table=self.table, filters=filters, limit=limit, cursor=cursor
        )

    # ---------------------------------------------------------------- background

    async def _run(self, puller: Puller) -> None:
        if not await self._prepare():
            return
        self._consumer = SinkConsumer(
            self.config,
            nc=self.nc,
            puller=puller,
            backend=self.backend,
            table=self.table,
            dlq=self.dlq,
            metrics=self.metrics,
            status=self.status_info,
            ensure_consumer=self._ensure_consumer,
        )
        if self._stopping.is_set():
            self._consumer.stopping.set()
        try:
            await self._consumer.run()
        except Exception as exc:  # a bug, not an outage: report it, keep ingress running
            log.exception("clickhouse sink stopped by an error")
            self.status_info.set("failed", str(exc) or type(exc).__name__)
            self.metrics.clickhouse_healthy.set(0)

    async def _prepare(self) -> bool:
        """Open ClickHouse and bring the table up to date, retrying with growing pauses."""
        delay = OPEN_RETRY_BASE
        while not self._stopping.is_set():
            try:
                await self.backend.open()
                self.status_info.notes = await bootstrap(
                    self.backend, self.table, self.config.retention_ttl
                )
                self.status_info.backend = self.backend.description
                return True
            except Exception as exc:
                detail = f"cannot prepare {self.table.database}.{self.table.table}: {exc}"
                log.warning("clickhouse sink not ready", error=detail, retry_in=delay)
                self.status_info.set("degraded", detail)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, OPEN_RETRY_MAX)
        return False

    async def _ensure_consumer(self) -> None:
        await ensure_consumer(self.nc, self.nats.stream, self._desired)

    async def _watch(self) -> None:
        """Every few seconds: the consumer's pending counts, and a health probe when no
        insert has shown recently that ClickHouse is up."""
        while not self._stopping.is_set():
            await asyncio.sleep(MONITOR_INTERVAL)
            with contextlib.suppress(Exception):
                info = await consumer_info(self.nc, self.nats.stream, self.config.consumer_name)
                if info is not None:
                    self.status_info.pending = int(info.get("num_pending", 0))
                    self.status_info.ack_pending = int(info.get("num_ack_pending", 0))
                    self.metrics.clickhouse_consumer_pending.set(self.status_info.pending)
                    self.metrics.clickhouse_consumer_ack_pending.set(self.status_info.ack_pending)
            await self._probe()

    async def _probe(self) -> None:
        status = self.status_info
        recent = status.last_insert_at and time.time() - status.last_insert_at < MONITOR_INTERVAL
        if self._consumer is None or status.state not in ("running", "degraded") or recent:
            return
        if status.state == "degraded" and not status.detail.startswith("probe:"):
            return  # the consumer itself is handling an outage
        try:
            await asyncio.wait_for(self.backend.ping(), min(self.config.dial_timeout, 2.0) + 1)
        except Exception as exc:
            status.set("degraded", f"probe: clickhouse unavailable: {exc}")
            self.metrics.clickhouse_healthy.set(0)
        else:
            if status.state == "degraded":
                status.set("running")
                self.metrics.clickhouse_healthy.set(1)

    async def _on_disconnected(self) -> None:
        if not self._stopping.is_set():
            log.warning("clickhouse sink: nats disconnected")

    async def _on_reconnected(self) -> None:
        log.info("clickhouse sink: nats reconnected")

    async def _on_error(self, error: Exception) -> None:
        log.warning("clickhouse sink: nats error", error=str(error) or type(error).__name__)
