"""#15, tests on a real cluster: signed webhooks sent round-robin to three replicas while the
NATS node leading the stream is SIGKILLed and restarted. Every 202'd event is in the stream
(three replicas) exactly once; the 503s the replicas answered while the stream had no
leader are counted and reported.

A 503 is the service's documented "not stored, send again" (a publish JetStream did not
acknowledge within ``nats.publish_timeout``); the balancer sends such a delivery again, and
JetStream drops the copy of one that had been stored after all (``Nats-Msg-Id``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.cluster.replicas import STREAM, Balancer, replica, report, stop_all, stored_copies
from tests.faults.harness import make_deliveries
from tests.support.nats_cluster import NatsCluster

DOWN_FOR = 1.0  # seconds between the SIGKILL and the restart


async def test_webhooks_through_a_killed_stream_leader_are_stored_once(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    await cluster.wait_meta_leader()
    replicas = [replica(cluster, tmp_path, f"r{i}") for i in range(3)]
    for service in replicas:
        service.start()
    try:
        await asyncio.gather(*(service.wait_ready() for service in replicas))
        balancer = Balancer(replicas, make_deliveries(4000, "node-kill"))
        stop = asyncio.Event()
        load = asyncio.create_task(balancer.run(rate=100, stop=stop))
        await balancer.wait_accepted_more(150)

        leader = await cluster.stream_leader(STREAM)
        victim = next(node for node in cluster.nodes if node.name == leader)
        victim.kill()
        killed_at = time.monotonic()
        await asyncio.sleep(DOWN_FOR)
        cluster.restart(victim)
        await cluster.wait_meta_leader()
        await balancer.wait_accepted_more(300)  # the load goes on after the node is back
        stop.set()
        await load
        report(
            f"stream leader {leader} killed for {DOWN_FOR:g} s "
            f"({time.monotonic() - killed_at:.1f} s to the end of the load): {balancer.summary()}"
        )

        assert all(service.alive() for service in replicas)
        assert balancer.server_errors() == {}, balancer.summary()
        assert balancer.refused == {}, balancer.refused
        assert len(balancer.accepted) == balancer.sent
        copies = await stored_copies(cluster)
        assert balancer.accepted <= set(copies)  # nothing 202'd is lost
        assert {event: n for event, n in copies.items() if n > 1} == {}  # nor stored twice
    finally:
        await stop_all(replicas)
