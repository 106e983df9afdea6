"""Admin request guards, in the reference's order: CIDR allowlist, client certificate,
rate limits (per IP, then per presented token), token authentication with scopes.

The requester IP is the TCP peer unless the peer is a trusted proxy (``server.trusted_proxies``);
only then are ``X-Forwarded-For``/``X-Real-IP`` and the client-certificate header believed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ensemble_tap.config.models import ServerConfig

IDLE_BUCKET_SECONDS = 15 * 60
MAX_BUCKETS = 10_000
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Scope(StrEnum):
    READ = "read"
    REPLAY = "replay"
    CANCEL = "cancel"


# Slot name → (config key, scopes). Order decides which slot a matching token is reported as.
_SLOTS: tuple[tuple[str, str, frozenset[Scope]], ...] = (
    ("primary", "admin_token", frozenset(Scope)),
    ("secondary", "admin_token_secondary", frozenset(Scope)),
    ("read", "admin_token_read", frozenset({Scope.READ})),
    ("replay", "admin_token_replay", frozenset({Scope.READ, Scope.REPLAY})),
    ("cancel", "admin_token_cancel", frozenset({Scope.READ, Scope.CANCEL})),
)


def slot_scopes() -> list[tuple[str, frozenset[Scope]]]:
    """Every token slot and the scopes it grants, in slot order (for the OpenAPI document)."""
    return [(name, scopes) for name, _, scopes in _SLOTS]


def slots_granting(scope: Scope) -> list[str]:
    """The token slots that grant ``scope``, in slot order."""
    return [name for name, _, scopes in _SLOTS if scope in scopes]


def admin_enabled(server: ServerConfig) -> bool:
    return any(getattr(server, key).strip() for _, key, _ in _SLOTS)


def fingerprint(token: str) -> str:
    """A short, stable identity for a token (first 16 hex of its SHA-256); never the token."""
    return hashlib.sha256(token.strip().encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Principal:
    slot: str
    token_fingerprint: str


class TokenAuthenticator:
    def __init__(self, server: ServerConfig) -> None:
        self.replace(server)

    def replace(self, server: ServerConfig) -> None:
        """Take ``server``'s tokens (secret_reload); one assignment, so a request is checked
        against the old tokens or the new ones."""
        self._slots = [
            (name, hashlib.sha256(getattr(server, key).strip().encode()).digest(), scopes)
            for name, key, scopes in _SLOTS
            if getattr(server, key).strip()
        ]

    def authenticate(self, presented: str, scope: Scope) -> Principal | None:
        """The slot whose token equals ``presented`` and grants ``scope`` (constant time)."""
        token = presented.strip()
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for name, expected, scopes in self._slots:
            equal = hmac.compare_digest(digest, expected)
            if equal and scope in scopes and found is None:
                found = Principal(name, fingerprint(token))
        return found


class TokenBucketLimiter:
    """Token buckets keyed by string, LRU-bounded; buckets idle for 15 minutes are dropped."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        self._expire(now)
        tokens, updated = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait

    def _expire(self, now: float) -> None:
        while self._buckets:
            key, (_, updated) = next(iter(self._buckets.items()))
            if now - updated <= IDLE_BUCKET_SECONDS:
                return
            del self._buckets[key]


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


class ClientAddress:
    """Resolves the requester IP and whether proxy-supplied headers may be believed."""

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self.trusted = [ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies]

    def is_trusted(self, address: str) -> bool:
        ip = _parse_ip(address)
        return ip is not None and any(ip in network for network in self.trusted)

    def requester_ip(self, peer: str, headers: Mapping[str, str]) -> str:
        """The peer, or — when the peer is a trusted proxy — the right-most untrusted hop of
        ``X-Forwarded-For`` (the left-most when every hop is trusted), else ``X-Real-IP``."""
        if not self.is_trusted(peer):
            return peer
        forwarded = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",")]
        hops = [hop for hop in forwarded if hop]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        if hops:  # the client itself is inside a trusted range: it is the first hop
            return hops[0]
        real_ip = headers.get("x-real-ip", "").strip()
        return real_ip or peer


def in_networks(address: str, networks: Sequence[IPNetwork]) -> bool:
    ip = _parse_ip(address)
    return ip is not None and any(ip in network for network in networks)


def _parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
