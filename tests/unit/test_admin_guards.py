"""Admin guards: token slots and scopes, fingerprints, token buckets, and which address is
the requester's (proxy headers only from trusted proxies)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from typing import Any

import pytest

from ensemble_tap.admin import guards
from ensemble_tap.admin.guards import (
    IDLE_BUCKET_SECONDS,
    ClientAddress,
    Principal,
    Scope,
    TokenAuthenticator,
    TokenBucketLimiter,
    admin_enabled,
    fingerprint,
    in_networks,
    retry_after_seconds,
)
from ensemble_tap.config.models import ServerConfig

TOKENS = {
    "primary": "tok-primary",
    "secondary": "tok-secondary",
    "read": "tok-read",
    "replay": "tok-replay",
    "cancel": "tok-cancel",
}
ALL_SLOTS = ServerConfig(
    admin_token=TOKENS["primary"],
    admin_token_secondary=TOKENS["secondary"],
    admin_token_read=TOKENS["read"],
    admin_token_replay=TOKENS["replay"],
    admin_token_cancel=TOKENS["cancel"],
)
# slot → scopes it grants (docs/operations.md, "Tokens and roles")
GRANTS = {
    "primary": {Scope.READ, Scope.REPLAY, Scope.CANCEL},
    "secondary": {Scope.READ, Scope.REPLAY, Scope.CANCEL},
    "read": {Scope.READ},
    "replay": {Scope.READ, Scope.REPLAY},
    "cancel": {Scope.READ, Scope.CANCEL},
}


# --- tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize("slot", list(TOKENS))
@pytest.mark.parametrize("scope", list(Scope))
def test_role_matrix(slot: str, scope: Scope) -> None:
    principal = TokenAuthenticator(ALL_SLOTS).authenticate(TOKENS[slot], scope)
    if scope in GRANTS[slot]:
        assert principal == Principal(slot, fingerprint(TOKENS[slot]))
    else:
        assert principal is None


def test_tokens_are_trimmed_and_blank_never_matches() -> None:
    server = ServerConfig(admin_token="  tok-primary \t", admin_token_read="   ")
    auth = TokenAuthenticator(server)
    assert auth.authenticate(" tok-primary ", Scope.CANCEL) == Principal(
        "primary", fingerprint("tok-primary")
    )
    for presented in ("", "   ", "tok-primar", "tok-primary-x", "TOK-PRIMARY"):
        assert auth.authenticate(presented, Scope.READ) is None


def test_the_first_matching_slot_is_reported() -> None:
    """A token configured in two slots reports the first slot that grants the scope."""
    shared = "same-value"
    server = ServerConfig(admin_token_read=shared, admin_token_replay=shared)
    auth = TokenAuthenticator(server)
    assert auth.authenticate(shared, Scope.READ) == Principal("read", fingerprint(shared))
    assert auth.authenticate(shared, Scope.REPLAY) == Principal("replay", fingerprint(shared))
    assert auth.authenticate(shared, Scope.CANCEL) is None


@pytest.mark.parametrize("presented", ["tok-primary", "tok-cancel", "wrong", "x" * 5000])
def test_every_configured_slot_is_compared_in_constant_time(
    presented: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No early exit on a match, and only equal-length digests are compared, so timing
    tells nothing about which slot (or how much of a token) matched."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # what guards calls
    TokenAuthenticator(ALL_SLOTS).authenticate(presented, Scope.READ)
    assert len(compared) == len(TOKENS)
    assert all(len(a) == len(b) == 32 for a, b in compared)
    assert {a for a, _ in compared} == {hashlib.sha256(presented.encode()).digest()}


def test_fingerprint_is_a_short_stable_hash_never_the_token() -> None:
    assert fingerprint(" secret ") == hashlib.sha256(b"secret").hexdigest()[:16]
    assert fingerprint("secret") == fingerprint("secret ")
    assert len(fingerprint("a")) == 16
    assert fingerprint("a") != fingerprint("b")
    assert "secret" not in fingerprint("secret")


def test_admin_is_enabled_by_any_non_blank_slot() -> None:
    assert not admin_enabled(ServerConfig())
    assert not admin_enabled(ServerConfig(admin_token="  ", admin_token_cancel="\t"))
    for key in ("admin_token", "admin_token_read", "admin_token_replay", "admin_token_cancel"):
        assert admin_enabled(ServerConfig(**{key: "t"}))


# --- token buckets -------------------------------------------------------------------------


class Monotonic:
    """Stands in for the ``time`` module of guards.py."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    fake = Monotonic()
    monkeypatch.setattr(guards, "time", fake)
    return fake


def test_bucket_allows_a_burst_then_refills_at_the_rate(clock: Monotonic) -> None:
    limiter = TokenBucketLimiter(rate=2.0, burst=3)
    assert [limiter.take("k") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("k") == pytest.approx(0.5)
    clock.now += 0.25
    assert limiter.take("k") == pytest.approx(0.25)  # the wait shrinks as time passes
    clock.now += 0.25
    assert limiter.take("k") == 0
    clock.now += 3600  # refill never exceeds the burst
    assert [limiter.take("k") for _ in range(4)][3] > 0


def test_buckets_are_independent_per_key(clock: Monotonic) -> None:
    limiter = TokenBucketLimiter(rate=1.0, burst=1)
    assert limiter.take("replay_dlq|ip|10.0.0.1") == 0
    assert limiter.take("replay_dlq|ip|10.0.0.1") > 0
    assert limiter.take("replay_dlq|ip|10.0.0.2") == 0
    assert limiter.take("poller_status|ip|10.0.0.1") == 0


@pytest.mark.parametrize(
    ("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (2.0, 2), (9.5, 10)]
)
def test_retry_after_is_the_wait_rounded_up_and_at_least_one(wait: float, header: int) -> None:
    assert retry_after_seconds(wait) == header


def test_retry_after_follows_the_real_refill_time(clock: Monotonic) -> None:
    limiter = TokenBucketLimiter(rate=0.1, burst=1)
    limiter.take("k")
    assert retry_after_seconds(limiter.take("k")) == 10
    clock.now += 7
    assert retry_after_seconds(limiter.take("k")) == 3


def test_least_recently_used_buckets_are_dropped_beyond_the_bound(
    clock: Monotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guards, "MAX_BUCKETS", 3)
    limiter = TokenBucketLimiter(rate=0.0001, burst=1)
    for key in "abc":
        assert limiter.take(key) == 0
    assert limiter.take("a") > 0  # "a" is now the most recently used: order b, c, a
    assert limiter.take("d") == 0  # a fourth bucket drops "b"
    assert len(limiter._buckets) == 3
    assert limiter.take("c") > 0  # still remembered: order a, d, c
    assert limiter.take("b") == 0  # forgotten, so it starts full again (drops "a")
    assert limiter.take("d") > 0
    assert limiter.take("a") == 0


def test_idle_buckets_expire(clock: Monotonic) -> None:
    limiter = TokenBucketLimiter(rate=0.0001, burst=1)
    limiter.take("idle")
    limiter.take("busy")
    clock.now += IDLE_BUCKET_SECONDS - 1
    assert limiter.take("busy") > 0  # used again: stays
    clock.now += 2
    assert limiter.take("busy") > 0
    assert set(limiter._buckets) == {"busy"}  # "idle" was dropped on this charge
    assert limiter.take("idle") == 0  # and comes back full


def test_bucket_refills_on_the_real_clock() -> None:
    limiter = TokenBucketLimiter(rate=20.0, burst=1)
    assert limiter.take("k") == 0
    wait = limiter.take("k")
    assert 0 < wait <= 0.05
    time.sleep(0.1)
    assert limiter.take("k") == 0


# --- requester address ---------------------------------------------------------------------


def _headers(**values: str) -> dict[str, str]:
    return {key.replace("_", "-"): value for key, value in values.items()}


def test_without_trusted_proxies_the_peer_is_the_requester() -> None:
    addresses = ClientAddress([])
    spoofed = _headers(x_forwarded_for="10.1.2.3", x_real_ip="10.1.2.4")
    assert addresses.requester_ip("192.0.2.10", spoofed) == "192.0.2.10"
    assert not addresses.is_trusted("127.0.0.1")


def test_proxy_headers_from_an_untrusted_peer_are_ignored() -> None:
    addresses = ClientAddress(["10.0.0.0/8"])
    spoofed = _headers(x_forwarded_for="10.1.2.3", x_real_ip="10.1.2.4")
    assert addresses.requester_ip("192.0.2.10", spoofed) == "192.0.2.10"


@pytest.mark.parametrize(
    ("headers", "requester"),
    [
        (_headers(x_forwarded_for="198.51.100.7"), "198.51.100.7"),
        # A client can prepend anything: the right-most hop not added by our proxies counts.
        (_headers(x_forwarded_for="10.9.9.9, 203.0.113.9, 198.51.100.7"), "198.51.100.7"),
        (_headers(x_forwarded_for="203.0.113.9, 198.51.100.7, 10.0.0.3"), "198.51.100.7"),
        (_headers(x_forwarded_for=" , 198.51.100.7 ,, 127.0.0.1 "), "198.51.100.7"),
        # Every hop is one of ours: the client is the first of them.
        (_headers(x_forwarded_for="10.0.0.5, 10.0.0.3"), "10.0.0.5"),
        (_headers(x_real_ip=" 198.51.100.1 "), "198.51.100.1"),
        (_headers(x_forwarded_for="198.51.100.7", x_real_ip="198.51.100.1"), "198.51.100.7"),
        (_headers(x_forwarded_for=""), "127.0.0.1"),
        ({}, "127.0.0.1"),
    ],
)
def test_from_a_trusted_proxy_the_right_most_untrusted_hop_is_the_requester(
    headers: dict[str, str], requester: str
) -> None:
    addresses = ClientAddress(["127.0.0.0/8", "10.0.0.0/8"])
    assert addresses.is_trusted("127.0.0.1")
    assert addresses.requester_ip("127.0.0.1", headers) == requester


def test_ipv6_proxies() -> None:
    addresses = ClientAddress(["::1/128", "fd00::/8"])
    assert addresses.is_trusted("::1") and addresses.is_trusted("[fd00::1]")
    headers = _headers(x_forwarded_for="2001:db8::1, fd00::2")
    assert addresses.requester_ip("::1", headers) == "2001:db8::1"
    assert addresses.requester_ip("2001:db8::9", headers) == "2001:db8::9"


@pytest.mark.parametrize(
    ("address", "inside"),
    [
        ("10.1.2.3", True),
        ("10.1.2.3 ", True),
        ("11.0.0.1", False),
        ("2001:db8::5", True),
        ("[2001:db8::5]", True),
        ("not-an-ip", False),
        ("", False),
    ],
)
def test_in_networks(address: str, inside: bool) -> None:
    networks: list[Any] = [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    ]
    assert in_networks(address, networks) is inside
