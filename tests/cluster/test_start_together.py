"""Deliverable 5 of #15: replicas started at the same moment against a cluster that is
still coming up all become ready, whatever their siblings and the cluster are doing.

The three nodes' pods do not all start at once either: the third node starts only after
the replicas, so until it is there a stream of three replicas cannot be placed ("no
suitable peers for placement"), and the replicas race each other to create the same streams
and the same durable consumer. Meanwhile each serves ``/livez`` 200 and ``/readyz`` 503 with
the reason."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import nats

from tests.cluster.replicas import STREAM, replica, stop_all
from tests.faults.harness import make_deliveries
from tests.support.clickhouse_http import ClickHouseHttp
from tests.support.nats_cluster import NatsCluster
from tests.support.service_process import ServiceProcess

SINK = {"flush_interval": "100ms", "consumer_fetch_max_wait": "100ms"}


async def test_three_replicas_started_together_all_become_ready(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats")
    late = cluster.nodes[2]
    clickhouse = ClickHouseHttp(tmp_path / "chdb").start()
    replicas = [
        replica(cluster, tmp_path, f"r{index}", clickhouse={"addr": clickhouse.addr, **SINK})
        for index in range(3)
    ]
    try:
        for node in cluster.nodes[:2]:
            node.spawn()
        for service in replicas:  # together with the nodes: nothing is elected yet
            service.start()
        await _not_ready_because(replicas[0], "no suitable peers for placement")
        assert all(service.alive() for service in replicas)

        cluster.restart(late)
        await asyncio.gather(*(service.wait_ready(90) for service in replicas))

        async with httpx.AsyncClient(timeout=10) as client:
            for service, delivery in zip(replicas, make_deliveries(3, "together"), strict=True):
                answer = await client.post(
                    f"{service.url}/webhooks/acme", content=delivery.body, headers=delivery.headers
                )
                assert answer.status_code == 202, answer.text
        info = await _stream_info(cluster)
        assert info["replicas"] == 3 and info["consumers"] == 1  # one durable, shared
        for service in replicas:
            assert "tap runtime failed" not in service.log.read_text()
    finally:
        await stop_all(replicas)
        cluster.stop()
        clickhouse.close()


async def _not_ready_because(service: ServiceProcess, reason: str, timeout: float = 60) -> None:
    """Until ``/readyz`` says that JetStream set-up waits for ``reason`` (the replica live
    all along)."""
    deadline = time.monotonic() + timeout
    last = "not listening yet"
    async with httpx.AsyncClient(base_url=service.url, timeout=2) as client:
        while True:
            assert service.alive(), f"the replica exited:\n{service.log_tail()}"
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                assert (await client.get("/livez")).status_code == 200
                ready = await client.get("/readyz")
                assert ready.status_code == 503, ready.text
                last = str(ready.json()["error"])
                if "setting up stream" in last and reason in last:
                    return
            assert time.monotonic() < deadline, f"not ready for another reason: {last}"
            await asyncio.sleep(0.05)


async def _stream_info(cluster: NatsCluster) -> dict[str, int]:
    nc = await nats.connect(cluster.urls)
    try:
        info = await nc.jetstream(timeout=5).stream_info(STREAM)
    finally:
        await nc.close()
    assert info.cluster is not None
    return {
        "replicas": 1 + len(info.cluster.replicas or []),
        "consumers": info.state.consumer_count,
    }
