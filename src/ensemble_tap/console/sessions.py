"""Console sessions: the admin token an operator signed in with, behind a random session id.

The browser holds only the session id (an HttpOnly cookie); the token never reaches a page
or script. Sessions end ``server.console_session_ttl`` after sign-in or at sign-out.
``MemorySessions`` keeps them in this process (a restart signs everyone out); with several
admin replicas ``shared_sessions.NatsSessions`` keeps them where every replica reads them.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# Beyond this many live sessions the oldest is ended: a flood of sign-ins cannot grow memory.
MAX_SESSIONS = 1_000


@dataclass(slots=True, frozen=True, kw_only=True)
class Session:
    id: str
    token: str
    # The synchronizer token every form of this session carries (CSRF).
    csrf: str
    # What the token grants (read, replay, cancel): which actions the pages offer.
    scopes: frozenset[str]
    expires_at: float  # on the store's clock

    def can(self, scope: str) -> bool:
        return scope in self.scopes


class SessionsUnavailable(Exception):
    """The shared session store cannot be reached (NATS): the page cannot be served now."""


class SessionStore(Protocol):
    async def create(self, token: str, scopes: frozenset[str]) -> Session: ...
    async def get(self, session_id: str) -> Session | None:
        """The live session of ``session_id``; None when unknown or expired."""

    async def end(self, session_id: str) -> None: ...


def new_session(token: str, scopes: frozenset[str], expires_at: float) -> Session:
    return Session(
        id=secrets.token_urlsafe(32),
        token=token,
        csrf=secrets.token_urlsafe(32),
        scopes=scopes,
        expires_at=expires_at,
    )


class MemorySessions:
    """This process's sessions."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        # Keyed by the id's digest, so the map itself holds no usable cookie value.
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    async def create(self, token: str, scopes: frozenset[str]) -> Session:
        self._expire()
        session = new_session(token, scopes, self._clock() + self.ttl)
        self._sessions[session_key(session.id)] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    async def get(self, session_id: str) -> Session | None:
        if not session_id:
            return None
        key = session_key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[key]
            return None
        return session

    async def end(self, session_id: str) -> None:
        self._sessions.pop(session_key(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = self._clock()
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if session.expires_at > now:
                return
            del self._sessions[key]


def session_key(session_id: str) -> bytes:
    """What a store keys a session by: the id's digest, so no store holds a usable cookie."""
    return hashlib.sha256(session_id.encode()).digest()
