"""The cluster harness itself: routes, a meta leader, a replicated stream that survives the
SIGKILL of a node and catches the node up when it comes back."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from tests.support.nats_cluster import NatsCluster


async def test_a_replicated_stream_survives_a_killed_node(cluster: NatsCluster) -> None:
    await cluster.wait_meta_leader()
    nc = await nats.connect(cluster.urls, error_cb=_quiet)
    try:
        js = nc.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="HARNESS", subjects=["harness.>"], num_replicas=3))
        await js.publish("harness.one", b"1")
        info = await js.stream_info("HARNESS")
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2  # the leader and two followers

        leader = await cluster.stream_leader("HARNESS")
        victim = next(node for node in cluster.nodes if node.name == leader)
        victim.kill()
        assert not victim.alive()
        assert await cluster.wait_meta_leader() != victim.name
        assert await _publish(js, "harness.two") == 2  # a new stream leader took it

        cluster.restart(victim)
        await cluster.wait_meta_leader()
        assert len(cluster.living) == 3
        deadline = time.monotonic() + 30
        while not await _caught_up(js, victim.name):  # the restarted replica is current
            assert time.monotonic() < deadline, "the restarted node never caught up"
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def _caught_up(js: JetStreamContext, node: str) -> bool:
    info = await js.stream_info("HARNESS")
    assert info.cluster is not None
    if info.cluster.leader == node:
        return True
    return any(peer.name == node and peer.current for peer in info.cluster.replicas or [])


async def _publish(js: JetStreamContext, subject: str) -> int:
    """Publish until a stream leader acknowledges (none for a moment after a leader died)."""
    deadline = time.monotonic() + 30
    headers = {"Nats-Msg-Id": subject}  # a retry of a publish that was stored is dropped
    while True:
        try:
            return (await js.publish(subject, b"x", timeout=2, headers=headers)).seq
        except (nats.errors.Error, TimeoutError):
            assert time.monotonic() < deadline, "no stream leader took the publish"
            await asyncio.sleep(0.1)


async def _quiet(error: Exception) -> None:
    """The client's reconnect attempts to the killed node are expected."""
