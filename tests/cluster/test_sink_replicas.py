"""Deliverable 4 of #15: two sink-role replicas share the durable pull consumer, and each
event lands in ClickHouse once.

Both replicas start together (racing to create the consumer and the table) against the
cluster (streams with three replicas) and a ClickHouse server backend (the HTTP interface
over chdb, tests/support/clickhouse_http.py). Events are published while both pull; at the
end the table holds one row per event, and both replicas inserted some of them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import nats
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.replicas import STREAM, replica, report, stop_all
from tests.support.clickhouse_http import ClickHouseHttp
from tests.support.nats_cluster import NatsCluster
from tests.support.service_process import ServiceProcess
from tests.support.sink import FAST, envelope

EVENTS = 2000
TABLE = "ensemble.tap_events"
SINK = {**FAST, "batch_size": 100, "consumer_fetch_batch_size": 50}


async def test_two_sink_replicas_store_each_event_once(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    await cluster.wait_meta_leader()
    clickhouse = ClickHouseHttp(tmp_path / "chdb").start()
    sinks = [
        replica(
            cluster, tmp_path, f"sink{i}", ("sink",), clickhouse={"addr": clickhouse.addr, **SINK}
        )
        for i in range(2)
    ]
    try:
        for service in sinks:
            service.start()
        await asyncio.gather(*(service.wait_ready() for service in sinks))

        await _publish(cluster, EVENTS)
        deadline = time.monotonic() + 60
        while _rows(clickhouse)["rows"] < EVENTS or not await _settled(cluster):
            assert time.monotonic() < deadline, f"not stored: {_rows(clickhouse)}"
            await asyncio.sleep(0.1)

        assert _rows(clickhouse) == {"rows": EVENTS, "ids": EVENTS}  # once each
        inserted = [await _rows_inserted(service) for service in sinks]
        report(f"sink replicas: rows inserted per replica {inserted}")
        assert sum(inserted) == EVENTS
        assert all(count > 0 for count in inserted), inserted  # both pulled from the consumer
    finally:
        await stop_all(sinks)
        clickhouse.close()


async def _publish(cluster: NatsCluster, count: int) -> None:
    """``count`` events in bursts while the sinks pull (each acknowledged by the stream)."""
    nc = await nats.connect(cluster.urls)
    try:
        js = nc.jetstream(timeout=10)
        for start in range(0, count, 100):
            acks = []
            for index in range(start, min(start + 100, count)):
                subject, body, msg_id = envelope(index)
                acks.append(js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}))
            await asyncio.gather(*acks)
            await asyncio.sleep(0.02)
    finally:
        await nc.close()


async def _settled(cluster: NatsCluster) -> bool:
    """The shared consumer has nothing pending or unacknowledged."""
    nc = await nats.connect(cluster.urls)
    try:
        info = await nc.jetstream(timeout=5).consumer_info(STREAM, "tap_clickhouse_sink")
    finally:
        await nc.close()
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def _rows(clickhouse: ClickHouseHttp) -> dict[str, int]:
    """Rows and distinct event ids in the table (none while no sink has created it yet)."""
    [exists] = clickhouse.sql(f"EXISTS TABLE {TABLE}")
    if not int(exists["result"]):
        return {"rows": 0, "ids": 0}
    [row] = clickhouse.sql(f"SELECT count() AS rows, uniqExact(id) AS ids FROM {TABLE}")
    return {"rows": int(row["rows"]), "ids": int(row["ids"])}


async def _rows_inserted(service: ServiceProcess) -> int:
    async with httpx.AsyncClient(base_url=service.url) as client:
        text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tap_clickhouse_rows_inserted_total":
                return int(sample.value)
    raise AssertionError("tap_clickhouse_rows_inserted_total not exposed")
