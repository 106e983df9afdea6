"""Console sessions every admin replica reads: a JetStream KV bucket, used when the admin
replicas share their replay jobs (``server.admin_replay_store_backend: nats``), so that an
operator signed in through one replica is signed in on all of them.

A session is stored under the SHA-256 of its id with its expiry and scopes; its admin token
and CSRF token are stored XORed with SHAKE-256 of the session id, a pad of its own for every
session that only the browser's cookie can rebuild: NATS (and whoever reads its streams)
never holds a usable admin token, CSRF token or session id. The bucket's ``max_age`` is the
session TTL, so ended sessions leave nothing behind; sign-out removes the key at once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson

from ensemble_tap.bus.buckets import BUCKET_UNAVAILABLE, Bucket, BucketOnFirstUse
from ensemble_tap.console.sessions import Session, SessionsUnavailable, new_session, session_key

_PAD = b"ensemble-tap console session token\x00"
T = TypeVar("T")


def _pad(session_id: str, size: int) -> bytes:
    return hashlib.shake_256(_PAD + session_id.encode()).digest(size)


def _xor(data: bytes, pad: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, pad, strict=True))


def _name(session_id: str) -> str:
    return "s." + session_key(session_id).hex()


class NatsSessions:
    def __init__(
        self,
        open_bucket: Callable[[], Awaitable[Bucket]],
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self._bucket = BucketOnFirstUse(open_bucket)
        self._clock = clock  # wall clock: replicas compare expiries written by others

    async def create(self, token: str, scopes: frozenset[str]) -> Session:
        session = new_session(token, scopes, self._clock() + self.ttl)
        secrets = orjson.dumps([token, session.csrf])
        record = {
            "secrets": _xor(secrets, _pad(session.id, len(secrets))).hex(),
            "scopes": sorted(scopes),
            "expires_at": session.expires_at,
        }
        bucket = await self._opened()
        await _available(bucket.create(_name(session.id), orjson.dumps(record)))
        return session

    async def get(self, session_id: str) -> Session | None:
        if not session_id:
            return None
        bucket = await self._opened()
        entry = await _available(bucket.get(_name(session_id)))
        if entry is None:
            return None
        try:
            record = orjson.loads(entry.value)
            hidden = bytes.fromhex(record["secrets"])
            token, csrf = orjson.loads(_xor(hidden, _pad(session_id, len(hidden))))
            session = Session(
                id=session_id,
                token=str(token),
                csrf=str(csrf),
                scopes=frozenset(str(scope) for scope in record["scopes"]),
                expires_at=float(record["expires_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None  # not a record this service wrote: no session
        if session.expires_at <= self._clock():
            return None  # the bucket's max_age removes it
        return session

    async def end(self, session_id: str) -> None:
        if session_id:
            bucket = await self._opened()
            await _available(bucket.remove(_name(session_id)))

    async def _opened(self) -> Bucket:
        return await _available(self._bucket())


async def _available(operation: Awaitable[T]) -> T:
    try:
        return await operation
    except BUCKET_UNAVAILABLE as exc:
        why = str(exc) or type(exc).__name__
        raise SessionsUnavailable(f"console sessions unavailable (NATS): {why}") from exc
