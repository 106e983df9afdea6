"""Operator-mode (decentralised JWT) NATS auth minted in the test: an operator, its system
account, accounts with JetStream, users and their ``.creds`` files, and the nats-server config
that trusts them (``operator``, ``resolver: MEMORY``, ``resolver_preload``).

Made with the ``nkeys`` package and the NATS JWT v2 format (docs.nats.io, "JWT"; the Go
``nats-io/jwt`` library): a header ``{"typ":"JWT","alg":"ed25519-nkey"}``, claims naming the
issuer's and the subject's public nkeys plus a ``nats`` object per kind, base64url without
padding, signed with the issuer's nkey. (The ``nats-jwt`` package on PyPI writes the account's
JetStream memory limit as ``memory_storage`` where the server reads ``mem_storage``, and pins
old ``pytz``; a page of code here is simpler.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys

UNLIMITED = -1


def new_key(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def public(key: nkeys.KeyPair) -> str:
    return str(key.public_key.decode())


def encode_jwt(
    claims: dict[str, Any], issuer: nkeys.KeyPair, issued_at: float | None = None
) -> str:
    """Sign ``claims`` (which hold ``sub``, ``name`` and ``nats``) as ``issuer``."""
    body = {**claims, "iat": int(time.time() if issued_at is None else issued_at)}
    body["iss"] = public(issuer)
    body["jti"] = ""
    # As the Go library: the id is the SHA-512/256 of the claims without it, base32.
    digest = hashlib.new("sha512_256", json.dumps(body).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    signed = f"{header}.{_b64(json.dumps(body).encode())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def creds_text(user_jwt: str, user_seed: bytes) -> str:
    """A ``.creds`` file as ``nsc`` writes it."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


@dataclass
class Account:
    name: str
    key: nkeys.KeyPair
    jetstream: bool = True
    revocations: dict[str, int] = field(default_factory=dict)

    def jwt(self, operator: nkeys.KeyPair) -> str:
        limits: dict[str, Any] = {
            "subs": UNLIMITED,
            "data": UNLIMITED,
            "payload": UNLIMITED,
            "imports": UNLIMITED,
            "exports": UNLIMITED,
            "wildcards": True,
            "conn": UNLIMITED,
            "leaf": UNLIMITED,
        }
        if self.jetstream:
            limits |= {
                "mem_storage": UNLIMITED,
                "disk_storage": UNLIMITED,
                "streams": UNLIMITED,
                "consumer": UNLIMITED,
            }
        nats: dict[str, Any] = {"type": "account", "version": 2, "limits": limits}
        if self.revocations:
            nats["revocations"] = self.revocations
        return encode_jwt({"sub": public(self.key), "name": self.name, "nats": nats}, operator)

    def user(
        self, name: str, expires: float | None = None, issued_at: float | None = None
    ) -> tuple[str, nkeys.KeyPair]:
        """A user JWT signed by this account, and the user's key."""
        key = new_key(nkeys.PREFIX_BYTE_USER)
        nats = {
            "type": "user",
            "version": 2,
            "pub": {},
            "sub": {},
            "subs": -1,
            "data": -1,
            "payload": -1,
        }
        claims: dict[str, Any] = {"sub": public(key), "name": name, "nats": nats}
        if expires is not None:
            claims["exp"] = int(expires)
        return encode_jwt(claims, self.key, issued_at), key

    def write_creds(
        self, path: Path, name: str = "tap", expires: float | None = None, revoked: bool = False
    ) -> Path:
        """A ``.creds`` file for a new user; ``revoked``: listed in this account's revocations
        (mint the account's JWT after this call), which cover JWTs issued up to that time."""
        now = time.time()
        jwt, key = self.user(name, expires, issued_at=now - 60 if revoked else None)
        if revoked:
            self.revocations[public(key)] = int(now)
        path.write_text(creds_text(jwt, key.seed))
        return path


@dataclass
class Operator:
    """An operator, its system account and the accounts it signs."""

    key: nkeys.KeyPair = field(default_factory=lambda: new_key(nkeys.PREFIX_BYTE_OPERATOR))
    system: Account = field(
        default_factory=lambda: Account("SYS", new_key(nkeys.PREFIX_BYTE_ACCOUNT), False)
    )
    trusted: list[Account] = field(default_factory=list)

    def account(self, name: str, trusted: bool = True) -> Account:
        """A new account with JetStream; ``trusted=False``: signed by this operator but not
        preloaded into the server, so the server does not know it."""
        account = Account(name, new_key(nkeys.PREFIX_BYTE_ACCOUNT))
        if trusted:
            self.trusted.append(account)
        return account

    def server_config(self) -> str:
        """The auth part of a nats-server config file."""
        operator = encode_jwt(
            {
                "sub": public(self.key),
                "name": "tap-test-operator",
                "nats": {
                    "type": "operator",
                    "version": 2,
                    "system_account": public(self.system.key),
                },
            },
            self.key,
        )
        preload = "\n".join(
            f'  {public(account.key)}: "{account.jwt(self.key)}"'
            for account in (self.system, *self.trusted)
        )
        return (
            f'operator: "{operator}"\n'
            f'system_account: "{public(self.system.key)}"\n'
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n{preload}\n}}\n"
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
