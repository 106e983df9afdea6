"""The NATS state store beyond the behaviour all stores share (test_state.py): key escaping,
snapshots in the object store, fenced commits (two replicas racing on one target: only one
commit lands), the reference's checkpoint after a migration, errors."""

from __future__ import annotations

import asyncio

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ensemble_tap.poller.engine import canonical
from ensemble_tap.state import SnapshotWrite, StaleCheckpoint, StateError, StreamState, kv_keys
from ensemble_tap.state.jetstream import NatsStateStore
from tests.support.nats_server import NatsServer
from tests.support.nats_state import bucket_names, nats_store


@given(st.text())
def test_escaping_is_one_to_one_and_valid(text: str) -> None:
    token = kv_keys.escape(text)
    assert kv_keys.unescape(token) == text
    assert token and "." not in token
    assert all(c.isascii() and (c.isalnum() or c in "_-=") for c in token)


def test_escaped_parts_never_collide() -> None:
    assert kv_keys.key("a::b", "c") != kv_keys.key("a", "b::c")
    assert kv_keys.key("", "x") == "=.x"
    assert kv_keys.lease_key("hubspot::t1") == "target.hubspot=3A=3At1"


async def test_large_snapshots_go_to_the_object_store(nats_server: NatsServer) -> None:
    big = canonical({"text": "x" * 5000})
    small = canonical({"text": "y"})
    async with nats_store(nats_server.url, inline_limit=1024) as store:
        await store.commit("k", "s", [SnapshotWrite("deal", "d1", big)], StreamState(1))
        found = await store.get_snapshots("k", [("deal", "d1")])
        assert found[("deal", "d1")] == big
        # Shrinks below the limit, grows again, is deleted: the object follows.
        await store.commit("k", "s", [SnapshotWrite("deal", "d1", small)], StreamState(2))
        assert (await store.get_snapshots("k", [("deal", "d1")]))[("deal", "d1")] == small
        await store.commit("k", "s", [SnapshotWrite("deal", "d1", big)], StreamState(3))
        await store.commit("k", "s", [SnapshotWrite("deal", "d1", None)], StreamState(4))
        assert await store.get_snapshots("k", [("deal", "d1")]) == {}
        assert await store.known_entities("k", ["deal"]) == set()
        with pytest.raises(nats.js.errors.ObjectNotFoundError):
            await store._objects.get(kv_keys.snapshot_key("k", "deal", "d1"))


async def test_two_replicas_racing_on_one_target_commit_once(nats_server: NatsServer) -> None:
    """Both read the checkpoint, both finish the page: the first commit lands, the second is
    refused (it started from a revision that is no longer the last) and changes nothing."""
    buckets = bucket_names()
    async with (
        nats_store(nats_server.url, buckets=buckets) as first,
        nats_store(nats_server.url, buckets=buckets) as second,
    ):
        await first.commit("notion", "pages", [], StreamState(1))
        assert await first.load_stream("notion", "pages") == StreamState(1)
        assert await second.load_stream("notion", "pages") == StreamState(1)
        outcomes = await asyncio.gather(
            first.commit("notion", "pages", [SnapshotWrite("page", "p1", canonical({"v": 1}))],
                         StreamState(10)),
            second.commit("notion", "pages", [], StreamState(20)),
            return_exceptions=True,
        )  # fmt: skip
        landed = [o for o in outcomes if o is None]
        refused = [o for o in outcomes if isinstance(o, StaleCheckpoint)]
        assert len(landed) == 1 and len(refused) == 1, outcomes
        winner = StreamState(10) if outcomes[0] is None else StreamState(20)
        assert await first.load_stream("notion", "pages") == winner
        # The loser reads the checkpoint again and can commit on top of it.
        loser = second if outcomes[0] is None else first
        assert await loser.load_stream("notion", "pages") == winner
        await loser.commit("notion", "pages", [], StreamState(30))
        assert await first.load_stream("notion", "pages") == StreamState(30)


async def test_a_first_commit_is_fenced_too(nats_server: NatsServer) -> None:
    buckets = bucket_names()
    async with (
        nats_store(nats_server.url, buckets=buckets) as first,
        nats_store(nats_server.url, buckets=buckets) as second,
    ):
        assert await first.load_stream("k", "s") == StreamState()
        assert await second.load_stream("k", "s") == StreamState()
        await first.commit("k", "s", [], StreamState(1))
        with pytest.raises(StaleCheckpoint, match="another replica"):
            await second.commit("k", "s", [], StreamState(2))
        assert await second.load_streams("k") == {"s": StreamState(1)}
        await second.commit("k", "s", [], StreamState(2))  # load_streams read the revision


async def test_the_reference_checkpoint_starts_every_stream(nats_server: NatsServer) -> None:
    async with nats_store(nats_server.url) as store:
        assert await store.import_value(kv_keys.legacy_key("salesforce"), StreamState(7).to_json())
        assert not await store.import_value(kv_keys.legacy_key("salesforce"), b"{}")
        assert await store.load_stream("salesforce", "Account") == StreamState(7)
        await store.commit("salesforce", "Account", [], StreamState(9))
        assert await store.load_stream("salesforce", "Account") == StreamState(9)


async def test_errors_are_state_errors(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    state, large = bucket_names()
    store = await NatsStateStore.open(nc.jetstream(), replicas=1, bucket=state, large_bucket=large)
    await nc.close()
    with pytest.raises(StateError, match="state in nats: read checkpoint k/s"):
        await store.load_stream("k", "s")
    with pytest.raises(StateError):
        await store.commit("k", "s", [], StreamState())


async def test_open_is_idempotent_and_follows_the_replica_count(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        state, large = bucket_names()
        for _ in range(2):
            await NatsStateStore.open(js, replicas=1, bucket=state, large_bucket=large)
        from ensemble_tap.state.buckets import ensure_kv

        kv = await ensure_kv(js, state + "_TTL", replicas=1, ttl=5.0)
        await ensure_kv(js, state + "_TTL", replicas=1, ttl=9.0)  # changed: updated in place
        assert (await kv.status()).stream_info.config.max_age == 9.0
    finally:
        await nc.close()
