"""Console sessions: the admin token an operator signed in with, kept in this process.

The browser holds only a random session id (an HttpOnly cookie); the token never leaves the
server, so no page or script can read it. Sessions end ``server.console_session_ttl`` after
sign-in, at sign-out, or when the process restarts (the operator signs in again).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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


class SessionStore:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        # Keyed by the id's digest, so the map itself holds no usable cookie value.
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    def create(self, token: str, scopes: frozenset[str]) -> Session:
        self._expire()
        session = Session(
            id=secrets.token_urlsafe(32),
            token=token,
            csrf=secrets.token_urlsafe(32),
            scopes=scopes,
            expires_at=self._clock() + self.ttl,
        )
        self._sessions[_key(session.id)] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session of ``session_id``; None when unknown or expired."""
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[key]
            return None
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = self._clock()
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if session.expires_at > now:
                return
            del self._sessions[key]


def _key(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()
