"""Console sessions shared by admin replicas (``server.admin_replay_store_backend: nats``):
two ``NatsSessions`` on two connections to one real nats-server, one bucket. A session made
through one is read, and ended, through the other; what NATS holds is no usable token or
session id; sessions expire on their TTL (and the bucket drops them); an unreachable NATS is
an error of its own, not "signed out"."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest

from ensemble_tap.bus.buckets import Bucket, open_bucket
from ensemble_tap.console.sessions import SessionsUnavailable, session_key
from ensemble_tap.console.shared_sessions import NatsSessions
from tests.support.nats_server import NatsServer

TOKEN = "tok-admin-0123456789abcdef"
Replicas = Callable[..., Awaitable[tuple[NatsSessions, NatsSessions]]]


@pytest.fixture
async def replicas(nats_server: NatsServer) -> AsyncIterator[Replicas]:
    """``await replicas(ttl, clock)``: two replicas' session stores over one fresh bucket."""
    name = f"T{uuid.uuid4().hex[:12]}_CONSOLE_SESSIONS"
    connections = [await nats.connect(nats_server.url) for _ in range(2)]

    async def make(ttl: float = 60.0, clock: Callable[[], float] | None = None) -> Any:
        stores = []
        for nc in connections:

            async def opened(nc: Any = nc) -> Bucket:
                return await open_bucket(nc.jetstream(), name, replicas=1, max_age=ttl)

            stores.append(NatsSessions(opened, ttl, clock) if clock else NatsSessions(opened, ttl))
        return stores[0], stores[1]

    yield make
    await connections[0].jetstream().delete_key_value(name)
    for nc in connections:
        await nc.close()


async def test_a_session_made_on_one_replica_is_read_and_ended_on_the_other(
    replicas: Replicas,
) -> None:
    a, b = await replicas()
    made = await a.create(TOKEN, frozenset({"read", "replay"}))
    seen = await b.get(made.id)
    assert seen == made  # token, CSRF token, scopes and expiry
    await b.end(made.id)
    assert await a.get(made.id) is None
    assert await b.get("") is None
    assert await b.get("not-a-session") is None


async def test_nats_holds_no_token_csrf_token_or_session_id(
    replicas: Replicas, nats_server: NatsServer
) -> None:
    a, _ = await replicas()
    made = await a.create(TOKEN, frozenset({"read"}))
    bucket = await a._opened()
    stored = [entry async for entry in bucket.snapshot("s.")]
    assert len(stored) == 1
    raw = stored[0].key.encode() + stored[0].value
    for secret in (TOKEN, made.id, made.csrf):
        assert secret.encode() not in raw and secret.encode().hex().encode() not in raw


async def test_a_session_ends_after_its_ttl_on_every_replica(replicas: Replicas) -> None:
    now = [1_000_000.0]
    a, b = await replicas(60.0, lambda: now[0])
    made = await a.create(TOKEN, frozenset({"read"}))
    now[0] += 59.9
    assert await b.get(made.id) == made
    now[0] += 0.2
    assert await b.get(made.id) is None


async def test_the_bucket_drops_sessions_after_the_ttl(replicas: Replicas) -> None:
    a, _ = await replicas(1.0)
    made = await a.create(TOKEN, frozenset({"read"}))
    bucket = await a._opened()
    assert await bucket.get("s." + session_key(made.id).hex()) is not None
    await asyncio.sleep(1.5)
    assert [entry async for entry in bucket.snapshot("s.")] == []


async def test_nats_out_of_reach_is_unavailable_not_signed_out() -> None:
    async def unreachable() -> Bucket:
        raise TimeoutError("nats: timeout")

    sessions = NatsSessions(unreachable, 60.0)
    with pytest.raises(SessionsUnavailable, match="console sessions unavailable"):
        await sessions.get("some-session")
