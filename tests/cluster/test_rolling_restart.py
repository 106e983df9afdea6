"""Deliverable 6 of #15: a rolling restart of three replicas under webhook load answers no
5xx and loses nothing.

Each replica in turn gets SIGTERM (``server.shutdown_delay``: ``/readyz`` 503 at once,
requests still served while the balancer's health checks move traffic away), exits, is
started again and becomes ready before the next one goes. The balancer (replicas.py)
routes to ready replicas and retries 503s and refused connections elsewhere; a connection
lost after a request was sent would be its 502. Every 202'd event must be in the stream
exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.cluster.replicas import Balancer, replica, report, stop_all, stored_copies
from tests.faults.harness import make_deliveries
from tests.support.nats_cluster import NatsCluster

# The delay is well above the balancer's reaction (a health check every 0.25 s, up to 1 s
# each), so it never routes to a replica that stopped accepting.
SERVER = {"shutdown_delay": "2500ms", "shutdown_timeout": "5s"}


async def test_a_rolling_restart_under_load_answers_no_5xx_and_loses_nothing(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    await cluster.wait_meta_leader()
    replicas = [replica(cluster, tmp_path, f"r{i}", server=SERVER) for i in range(3)]
    for service in replicas:
        service.start()
    try:
        await asyncio.gather(*(service.wait_ready() for service in replicas))
        balancer = Balancer(replicas, make_deliveries(4000, "rolling"))
        stop = asyncio.Event()
        load = asyncio.create_task(balancer.run(rate=80, stop=stop))
        for service in replicas:
            await balancer.wait_accepted_more(40)  # load before each restart
            code = await service.stop()
            assert code == 0, service.log_tail()
            service.start()
            await service.wait_ready()
        await balancer.wait_accepted_more(40)  # and after the last
        stop.set()
        await load
        report(f"rolling restart: {balancer.summary()}")

        assert balancer.server_errors() == {}, balancer.summary()
        # Without the delay a stopping replica refuses connections while still routed to
        # (10-13 over the three restarts in trials here): a balancer without retries, 502.
        assert balancer.answers["connect refused"] == 0, balancer.summary()
        assert balancer.refused == {}, balancer.refused
        copies = await stored_copies(cluster)
        assert set(copies) >= balancer.accepted  # nothing 202'd is missing
        assert {event: n for event, n in copies.items() if n > 1} == {}  # nor stored twice
        assert len(balancer.accepted) == balancer.sent
    finally:
        await stop_all(replicas)
