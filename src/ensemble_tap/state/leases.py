"""Poll target leases in JetStream KV: which replica polls which target.

Bucket ``TAP_POLL_LEASES`` (history 1, ``max_age`` = ``state.lease_ttl``) holds a key per
target, ``target.<escaped state key>``, whose value names the holder and since when, and a
heartbeat per live replica, ``replica.<escaped id>``. A lease is taken with create-if-absent,
renewed with compare-and-set on its revision (each renewal is a new message, so its age starts
again), and given back with a delete on that revision. A holder that stops renewing loses the
lease when the server expires its last message, ``lease_ttl`` after it was written: the
expiry is the server's, so the replicas' clocks play no part (the times in the value are for
people). Heartbeats expire the same way, so a dead replica leaves the count of live ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Self

import orjson
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ensemble_tap.events import format_time_ns, now_ns, parse_rfc3339_ns
from ensemble_tap.state import kv_keys
from ensemble_tap.state.base import StateError
from ensemble_tap.state.buckets import LEASE_BUCKET, create_if_absent, ensure_kv
from ensemble_tap.state.kv_scan import scan

# JetStream's "wrong last sequence" codes (nats-py maps them for update, not for delete).
_WRONG_LAST_SEQUENCE = (10071, 10164)


@dataclass(slots=True, frozen=True)
class Lease:
    """A lease as the bucket shows it."""

    target: str  # the state key
    holder: str
    since_ns: int | None
    revision: int


@dataclass(slots=True, frozen=True)
class LeaseView:
    """Every lease and every live replica, read at one moment."""

    leases: dict[str, Lease]
    replicas: frozenset[str]


@contextlib.asynccontextmanager
async def _errors(action: str) -> AsyncIterator[None]:
    try:
        yield
    except (NatsError, TimeoutError, OSError) as exc:  # OSError: a connection lost mid-call
        raise StateError(f"poll leases: {action}: {exc or type(exc).__name__}") from exc


class LeaseTable:
    """The lease bucket as seen by one replica (``replica``: its id)."""

    def __init__(self, kv: KeyValue, *, replica: str) -> None:
        self._kv = kv
        self.replica = replica

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        replica: str,
        ttl: float,
        replicas: int,
        bucket: str = LEASE_BUCKET,
    ) -> Self:
        """Create (or find, or bring to ``ttl``) the bucket; JetStream errors propagate."""
        return cls(await ensure_kv(js, bucket, replicas=replicas, ttl=ttl), replica=replica)

    def _value(self, since_ns: int) -> bytes:
        return orjson.dumps(
            {"holder": self.replica, "since": format_time_ns(since_ns),
             "renewed": format_time_ns(now_ns())}
        )  # fmt: skip

    async def take(self, target: str, since_ns: int) -> int | None:
        """The new lease's revision, or None when another replica holds it."""
        async with _errors(f"take {target}"):
            try:
                return await create_if_absent(
                    self._kv, kv_keys.lease_key(target), self._value(since_ns)
                )
            except KeyWrongLastSequenceError:
                return None

    async def renew(self, target: str, revision: int, since_ns: int) -> int | None:
        """The renewed lease's revision, or None when it is no longer ours (expired, or
        taken by another replica since)."""
        async with _errors(f"renew {target}"):
            try:
                return await self._kv.update(
                    kv_keys.lease_key(target), self._value(since_ns), last=revision
                )
            except KeyWrongLastSequenceError:
                return None

    async def release(self, target: str, revision: int) -> None:
        """Give the lease back, unless it is no longer ours. A renewal cancelled in flight
        may have landed without its revision reaching us: a lease that still names this
        replica is given back at the revision it has now."""
        key = kv_keys.lease_key(target)
        async with _errors(f"release {target}"):
            if await self._delete(key, revision):
                return
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                return
            if _lease(target, entry.value or b"", 0).holder == self.replica:
                await self._delete(key, entry.revision or 0)

    async def _delete(self, key: str, revision: int) -> bool:
        """Delete at ``revision``; False when that is not the key's last revision."""
        try:
            await self._kv.delete(key, last=revision)
        except APIError as exc:
            if exc.err_code not in _WRONG_LAST_SEQUENCE:
                raise
            return False
        return True

    async def heartbeat(self) -> None:
        async with _errors("heartbeat"):
            await self._kv.put(kv_keys.replica_key(self.replica), b"")

    async def leave(self) -> None:
        """This replica stops: it no longer counts as live."""
        async with _errors("leave"):
            await self._kv.delete(kv_keys.replica_key(self.replica))

    async def view(self) -> LeaseView:
        async with _errors("read leases"):
            entries = await scan(self._kv, ">")
        leases: dict[str, Lease] = {}
        replicas: set[str] = set()
        for entry in entries:
            kind, _, token = entry.key.partition(".")
            name = kv_keys.unescape(token)
            if kind == "replica":
                replicas.add(name)
            elif kind == "target":
                leases[name] = _lease(name, entry.value or b"", entry.revision or 0)
        return LeaseView(leases, frozenset(replicas))


def _lease(target: str, value: bytes, revision: int) -> Lease:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    holder = data.get("holder")
    since = data.get("since")
    return Lease(
        target=target,
        holder=holder if isinstance(holder, str) else "",
        since_ns=_time(since),
        revision=revision,
    )


def _time(value: object) -> int | None:
    return parse_rfc3339_ns(value) if isinstance(value, str) else None
