"""Names in JetStream KV: any text as a valid key token, and the keys of the poll state.

KV keys allow ``[-/_=.a-zA-Z0-9]`` with ``.`` separating tokens. A part (state key, stream,
entity type or id: any text) keeps ``[A-Za-z0-9_-]`` and writes every other UTF-8 byte as
``=XX``, so ``hubspot::t1`` is ``hubspot=3A=3At1``; an empty part is a lone ``=``, which no
escaped text can be. The mapping is one to one, so distinct parts never share a key.
"""

from __future__ import annotations

import re

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPE = re.compile(r"=([0-9A-F]{2})")


def escape(text: str) -> str:
    """One KV key token for ``text``."""
    if not text:
        return "="
    return "".join(chr(b) if b in _SAFE else f"={b:02X}" for b in text.encode())


def unescape(escaped: str) -> str:
    if escaped == "=":
        return ""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), escaped).encode("latin-1").decode()


def key(*parts: str) -> str:
    return ".".join(escape(part) for part in parts)


def checkpoint_key(state_key: str, stream: str) -> str:
    return f"cp.{key(state_key, stream)}"


def legacy_key(state_key: str) -> str:
    """The reference's single checkpoint of a state key (migrated from SQLite)."""
    return f"legacy.{key(state_key)}"


def snapshot_key(state_key: str, entity_type: str, entity_id: str) -> str:
    return f"snap.{key(state_key, entity_type, entity_id)}"


def token_key(state_key: str) -> str:
    return f"tok.{key(state_key)}"


def lease_key(state_key: str) -> str:
    return f"target.{key(state_key)}"


def replica_key(replica: str) -> str:
    return f"replica.{key(replica)}"
