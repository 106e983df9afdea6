"""A ``.creds`` file as nats-py connect callbacks, read again on every connect (parsing and
its checks: ``config/creds_file.py``)."""

from __future__ import annotations

import base64
from collections.abc import Callable

from nats.errors import Error as NatsError

from ensemble_tap.config.creds_file import CredsFileError, UserCredentials, read_creds, wipe_seed


class CredsUnusable(NatsError):
    """The creds file cannot be used at this connect. A nats error, so that nats-py's connect
    loop reports it (error callback) and retries, as for a refused login."""


def connect_callbacks(path: str) -> dict[str, Callable[..., bytes]]:
    """nats-py connect options that read ``path`` on every connect: the user JWT, and the
    server's nonce signed with the seed (the seed is wiped right after)."""

    def user_jwt() -> bytes:
        creds = _read(path)
        wipe_seed(creds.seed)
        return creds.jwt

    def sign(nonce: str) -> bytes:
        import nkeys

        creds = _read(path)
        try:
            key = nkeys.from_seed(creds.seed)
            signature: bytes = key.sign(nonce.encode())
            key.wipe()
        finally:
            wipe_seed(creds.seed)
        return base64.b64encode(signature)

    return {"user_jwt_cb": user_jwt, "signature_cb": sign}


def _read(path: str) -> UserCredentials:
    try:
        return read_creds(path)
    except CredsFileError as exc:
        raise CredsUnusable(str(exc)) from None
