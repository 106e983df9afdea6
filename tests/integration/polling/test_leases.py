"""Poll target leases on a real nats-server: take, renew, give back, expiry after the TTL,
spread over three in-process replicas, take-over after a holder stops renewing, and the
fence before a commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ensemble_tap.poller.leases import LeaseKeeper, LeaseLost
from ensemble_tap.poller.service import cancel_and_wait
from ensemble_tap.state.base import StateError
from ensemble_tap.state.buckets import create_if_absent, ensure_kv
from ensemble_tap.state.leases import LeaseTable
from tests.support.nats_server import NatsServer
from tests.support.polling import unique_name
from tests.support.waiting import eventually

TTL = 1.5  # shorter than state.lease_ttl allows, to keep the tests short
TARGETS = [f"notion::tenant-{n}" for n in range(7)]


@pytest.fixture
async def js_client(poll_nats: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(poll_nats.url)
    yield nc
    await nc.close()


async def tables(nc: Client, *names: str, ttl: float = TTL) -> list[LeaseTable]:
    bucket = unique_name()
    return [
        await LeaseTable.open(nc.jetstream(), replica=name, ttl=ttl, replicas=1, bucket=bucket)
        for name in names
    ]


class _ExpiresBeforeTheRead(KeyValue):
    """The real bucket, with the key's messages gone (as a ``max_age`` expiry removes them)
    between nats-py's refused create and its read of the key: the interleaving that made a
    take-over fail with "key not found" in CI."""

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        super().__init__(name=kv._name, stream=kv._stream, pre=kv._pre, js=js, direct=kv._direct)
        self.expired = 0

    async def _get(self, key: str, revision: int | None = None) -> KeyValue.Entry:
        if not self.expired:
            self.expired += 1
            await self._js.purge_stream(self._stream, subject=f"{self._pre}{key}")
        return await super()._get(key, revision)


async def test_a_create_whose_key_expires_under_it_still_creates(js_client: Client) -> None:
    js = js_client.jetstream()
    kv = await ensure_kv(js, unique_name(), replicas=1)
    await kv.put("target.x", b"old holder")
    racing = _ExpiresBeforeTheRead(kv, js)
    revision = await create_if_absent(racing, "target.x", b"new holder")
    assert racing.expired == 1
    entry = await kv.get("target.x")
    assert (entry.value, entry.revision) == (b"new holder", revision)
    with pytest.raises(KeyWrongLastSequenceError):  # present and live: refused, as before
        await create_if_absent(kv, "target.x", b"a third holder")


async def test_take_renew_give_back(js_client: Client) -> None:
    a, b = await tables(js_client, "a", "b")
    first = await a.take("hubspot", since_ns=1)
    assert first is not None
    assert await b.take("hubspot", since_ns=2) is None  # held
    renewed = await a.renew("hubspot", first, since_ns=1)
    assert renewed is not None and renewed > first
    assert await b.renew("hubspot", first, since_ns=2) is None  # an old revision: refused
    seen = await b.view()
    assert seen.leases["hubspot"].holder == "a" and seen.leases["hubspot"].since_ns == 1
    await a.release("hubspot", renewed)
    assert await b.take("hubspot", since_ns=2) is not None
    assert (await a.view()).leases["hubspot"].holder == "b"


async def test_a_renewal_that_landed_unseen_is_still_given_back(js_client: Client) -> None:
    """A renewal cancelled in flight (SIGTERM during a round) may land without its revision
    reaching the keeper: the give-back finds the lease still naming this replica."""
    a, b = await tables(js_client, "a", "b")
    first = await a.take("t", since_ns=1)
    assert first is not None
    assert await a.renew("t", first, since_ns=1) is not None  # "unseen": first is kept
    await a.release("t", first)
    assert await b.take("t", since_ns=2) is not None
    await a.release("t", first)  # b's now: left alone
    assert (await a.view()).leases["t"].holder == "b"


async def test_a_lease_not_renewed_expires_after_the_ttl(js_client: Client) -> None:
    a, b = await tables(js_client, "a", "b")
    revision = await a.take("t", since_ns=1)
    assert revision is not None
    await a.heartbeat()
    assert (await b.view()).replicas == {"a"}
    taken_at = time.monotonic()

    async def b_takes() -> bool:
        return await b.take("t", since_ns=2) is not None

    await eventually(b_takes, timeout=TTL + 3)
    assert time.monotonic() - taken_at >= TTL * 0.9  # not before the TTL (server clock)
    assert await a.renew("t", revision, since_ns=1) is None  # a's lease is gone
    assert (await b.view()).replicas == frozenset()  # a's heartbeat expired too


class Replica:
    """A keeper whose "pollers" are entries in a set."""

    def __init__(self, table: LeaseTable, *, beside: Replica | None = None) -> None:
        self.polling: set[str] = set()
        self.beside = beside  # another replica: starts of a target it still polls are noted
        self.overlaps: list[str] = []
        self.keeper = LeaseKeeper(
            table, targets=TARGETS, ttl=TTL, start=self._start, stop=self._stop
        )
        self.task = asyncio.create_task(self.keeper.run())

    async def _start(self, target: str) -> None:
        assert target not in self.polling
        if self.beside is not None and target in self.beside.polling:
            self.overlaps.append(target)
        self.polling.add(target)

    async def _stop(self, target: str) -> None:
        self.polling.remove(target)

    async def crash(self) -> None:
        """Stops renewing without giving anything back (SIGKILL)."""
        await cancel_and_wait(self.task)

    async def stop(self) -> None:
        await self.crash()
        await self.keeper.stop()


def spread_evenly(replicas: list[Replica]) -> bool:
    held = [r.polling for r in replicas]
    every = [t for polling in held for t in polling]
    share = -(-len(TARGETS) // len(replicas))
    return sorted(every) == sorted(TARGETS) and all(
        len(TARGETS) // len(replicas) <= len(p) <= share for p in held
    )


def sees_holders(viewer: Replica, replicas: list[Replica]) -> bool:
    for target in TARGETS:
        holder = viewer.keeper.holder_of(target)
        owner = next((r for r in replicas if target in r.polling), None)
        if owner is None or holder is None or holder[0] != owner.keeper.replica:
            return False
    return True


async def test_three_replicas_share_the_targets_and_take_over(js_client: Client) -> None:
    a, b, c = (Replica(t) for t in await tables(js_client, "a", "b", "c"))
    try:
        await eventually(lambda: spread_evenly([a, b, c]), timeout=10 * TTL)
        # The status side: every replica sees who holds what (as of its last round).
        await eventually(lambda: all(sees_holders(r, [a, b, c]) for r in (a, b, c)), 3 * TTL)

        # A stop (SIGTERM) gives the leases back: the others take them at their next round.
        stopped = set(c.polling)
        await c.stop()
        await eventually(lambda: spread_evenly([a, b]), timeout=3 * TTL)
        assert stopped <= a.polling | b.polling

        # A crash gives nothing back: b takes a's targets once they expired, within the TTL
        # and one round (plus the server's expiry timer and b's own round trips).
        crashed = set(a.polling)
        await a.crash()
        started = time.monotonic()
        await eventually(lambda: b.polling == set(TARGETS), timeout=TTL + TTL / 3 + 2)
        assert crashed and time.monotonic() - started >= TTL / 2
    finally:
        for replica in (a, b, c):
            if not replica.task.done():
                await replica.stop()


async def test_the_fence_refuses_a_holder_whose_lease_was_taken(js_client: Client) -> None:
    a_table, b_table = await tables(js_client, "a", "b")
    a = LeaseKeeper(a_table, targets=TARGETS[:1], ttl=TTL, start=_noop, stop=_noop)
    await a.tick()
    assert a.held() == TARGETS[:1]
    await a.confirm(TARGETS[0])  # held: the commit may go ahead
    # a stalls (a GC pause, a partition) past the TTL; b takes the target over.
    await eventually(lambda: _takes(b_table, TARGETS[0]), timeout=TTL + 3)
    with pytest.raises(LeaseLost, match="expired or was taken"):
        await a.confirm(TARGETS[0])
    with pytest.raises(LeaseLost, match="not held"):
        await a.confirm(TARGETS[0])


async def _takes(table: LeaseTable, target: str) -> bool:
    return await table.take(target, since_ns=1) is not None


async def _noop(target: str) -> None:
    return None


async def test_scans_leave_no_consumers_behind(js_client: Client) -> None:
    """Each view reads the bucket through an ordered consumer; the server drops it soon after
    (thousands of targets scan every few seconds: kept 5 minutes, they hit the server's
    consumer limit)."""
    bucket = unique_name()
    js = js_client.jetstream()
    table = await LeaseTable.open(js, replica="r1", ttl=TTL * 10, replicas=1, bucket=bucket)
    await table.heartbeat()
    for _ in range(20):
        assert (await table.view()).replicas == {"r1"}
    stream = f"KV_{bucket}"
    assert (await js.stream_info(stream)).state.consumer_count > 0

    async def all_gone() -> bool:
        info = await js.stream_info(stream)
        return info.state.consumer_count == 0

    await eventually(all_gone, 20.0, what="the scans' consumers removed by the server")


class CutOff(LeaseTable):
    """A replica whose writes stop reaching NATS once ``cut`` is set (a partition), while
    the bucket, shared with the other replicas, goes on."""

    cut = False

    async def renew(self, target: str, revision: int, since_ns: int) -> int | None:
        if self.cut:
            raise StateError(f"poll leases: renew {target}: nats: timeout")
        return await super().renew(target, revision, since_ns)

    async def heartbeat(self) -> None:
        if self.cut:
            raise StateError("poll leases: heartbeat: nats: timeout")
        await super().heartbeat()


async def test_a_cut_off_holder_halts_its_pollers_before_another_may_take_them(
    js_client: Client,
) -> None:
    bucket = unique_name()
    js = js_client.jetstream()
    cut = await CutOff.open(js, replica="a", ttl=TTL, replicas=1, bucket=bucket)
    a = Replica(cut)
    await eventually(lambda: a.polling == set(TARGETS), timeout=5 * TTL)
    cut.cut = True
    b = Replica(
        await LeaseTable.open(js, replica="b", ttl=TTL, replicas=1, bucket=bucket), beside=a
    )
    try:
        await eventually(lambda: b.polling == set(TARGETS), timeout=TTL + TTL / 3 + 3)
        assert a.polling == set()
        assert b.overlaps == []  # a had halted each poller before b could take its lease
    finally:
        for replica in (a, b):
            await replica.stop()
