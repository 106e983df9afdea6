"""NATS user credentials: a ``.creds`` file (a user JWT and its nkey seed, as ``nsc`` writes it).

nats-py can read such a file itself, but it loops forever on a file without a JWT block and
fails with an unrelated error on one without a seed. Here the file is parsed as the Go client
parses it (the first dash-framed block is the JWT, the second the seed), once by
``check-config`` and at start (``creds_file_problem``), then again on every connect
(``bus/creds.py``), so a rotated file is used at the next reconnect. Errors name the file and
what is wrong with it, never the seed. In ``config/`` because judging the file is part of
validating the config; it imports nothing of the service.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

# A creds file is a few hundred bytes; anything much larger is not one.
MAX_CREDS_SIZE = 64 * 1024
# The Go client's pattern: a token between two lines of at least three dashes.
_BLOCK = re.compile(rb"-{3,}[^\n]*-{3,}\r?\n([\w\-.=]+)\r?\n-{3,}[^\n]*-{3,}(?:\r?\n|\Z)")
_SEED_PREFIXES = (b"SO", b"SA", b"SU")


class CredsFileError(ValueError):
    """The creds file is missing, unreadable or not a creds file."""


@dataclass(slots=True, frozen=True)
class UserCredentials:
    jwt: bytes
    seed: bytearray  # wiped by the caller after use
    claims: dict[str, object]


def read_creds(path: str) -> UserCredentials:
    """Parse the creds file at ``path``; raises CredsFileError."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CREDS_SIZE + 1)
    except OSError as exc:
        raise CredsFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CREDS_SIZE:
        raise CredsFileError(f"{path} is not a creds file (larger than {MAX_CREDS_SIZE} bytes)")
    blocks = _BLOCK.findall(data)
    if not blocks:
        raise CredsFileError(f"{path} is not a creds file: no -----BEGIN NATS USER JWT----- block")
    jwt = bytes(blocks[0])
    claims = _user_claims(path, jwt)
    seed = bytearray(blocks[1] if len(blocks) > 1 else _bare_seed(data))
    import nkeys  # here: only a process with a creds file loads it (and PyNaCl)

    try:
        if not seed:
            raise CredsFileError(f"{path} holds no nkey seed (-----BEGIN USER NKEY SEED-----)")
        if not seed.startswith(b"SU"):
            raise CredsFileError(f"{path}: its nkey seed is not a user seed")
        try:
            key = nkeys.from_seed(seed)
            public = key.public_key.decode()
            key.wipe()
        except (nkeys.NkeysError, ValueError, binascii.Error):
            raise CredsFileError(f"{path}: its user nkey seed is not valid") from None
        if public != claims.get("sub"):
            raise CredsFileError(
                f"{path}: its nkey seed does not belong to the user of its JWT "
                f"({claims.get('sub')})"
            )
    except CredsFileError:
        wipe_seed(seed)
        raise
    return UserCredentials(jwt, seed, claims)


def creds_file_problem(path: str) -> str | None:
    """What is wrong with the creds file, for ``check-config`` and start-up (None: nothing);
    besides ``read_creds``'s checks, an expired user JWT."""
    try:
        creds = read_creds(path)
    except CredsFileError as exc:
        return str(exc)
    wipe_seed(creds.seed)
    expires = creds.claims.get("exp")
    if isinstance(expires, int | float) and expires <= datetime.now(UTC).timestamp():
        when = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
        return f"the user JWT in {path} expired at {when}"
    return None


def _user_claims(path: str, jwt: bytes) -> dict[str, object]:
    parts = jwt.split(b".")
    try:
        if len(parts) != 3:
            raise ValueError
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        raise CredsFileError(f"{path}: its first block is not a JWT") from None
    nats = claims.get("nats") if isinstance(claims, dict) else None
    kind = nats.get("type") if isinstance(nats, dict) else None
    if not isinstance(claims, dict) or (kind or claims.get("type")) != "user":
        raise CredsFileError(f"{path}: its JWT is not a NATS user JWT")
    return claims


def _bare_seed(data: bytes) -> bytes:
    """A seed on a line of its own (the Go client's fallback for a file with one block)."""
    for line in data.splitlines():
        if line.strip().startswith(_SEED_PREFIXES):
            return line.strip()
    return b""


def wipe_seed(seed: bytearray) -> None:
    """Overwrite the seed in place once it has been used."""
    seed[:] = bytes(len(seed))
