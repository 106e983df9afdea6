"""`nats.creds_file`: what check-config and start-up say about a creds file, and how it signs
a connect (no server: tests/integration/test_nats_creds.py logs in to one)."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from pathlib import Path

import nkeys
import pytest
from typer.testing import CliRunner

from ensemble_tap.bus.creds import CredsUnusable, connect_callbacks
from ensemble_tap.cli import cli
from ensemble_tap.config.creds_file import creds_file_problem, read_creds
from tests.support.configs import only_problem
from tests.support.nats_operator import Account, Operator, creds_text, new_key


@pytest.fixture(scope="module")
def account() -> Account:
    return Operator().account("APP")


def _seed_of(path: Path) -> str:
    return next(line for line in path.read_text().splitlines() if line.startswith("SU"))


def test_a_creds_file_as_nsc_writes_it_passes_and_signs_the_nonce(
    tmp_path: Path, account: Account
) -> None:
    path = account.write_creds(tmp_path / "tap.creds")
    assert creds_file_problem(str(path)) is None
    callbacks = connect_callbacks(str(path))
    jwt = callbacks["user_jwt_cb"]()
    assert jwt == read_creds(str(path)).jwt
    assert jwt.decode() in path.read_text()
    signature = base64.b64decode(callbacks["signature_cb"]("server-nonce"))
    user = nkeys.from_seed(_seed_of(path).encode())
    assert user.verify(b"server-nonce", signature)


def test_the_file_is_read_again_on_every_connect(tmp_path: Path, account: Account) -> None:
    """A rotated file is used at the next (re)connect."""
    path = account.write_creds(tmp_path / "tap.creds")
    user_jwt = connect_callbacks(str(path))["user_jwt_cb"]
    first = user_jwt()
    account.write_creds(path, name="rotated")
    assert user_jwt() != first
    path.unlink()
    with pytest.raises(CredsUnusable, match="cannot read"):
        user_jwt()


def _jwt_only(account: Account, path: Path) -> None:
    text = account.write_creds(path).read_text()
    path.write_text(text[: text.index("***")])


def _seed_only(account: Account, path: Path) -> None:
    text = account.write_creds(path).read_text()
    path.write_text(text[text.index("-----BEGIN USER NKEY SEED") :])


def _account_seed(account: Account, path: Path) -> None:
    jwt, _ = account.user("tap")
    path.write_text(creds_text(jwt, account.key.seed))


def _someone_elses_seed(account: Account, path: Path) -> None:
    jwt, _ = account.user("tap")
    path.write_text(creds_text(jwt, new_key(nkeys.PREFIX_BYTE_USER).seed))


def _account_jwt(account: Account, path: Path) -> None:
    path.write_text(creds_text(account.jwt(new_key(nkeys.PREFIX_BYTE_OPERATOR)), account.key.seed))


def _expired(account: Account, path: Path) -> None:
    account.write_creds(path, expires=time.time() - 60)


BAD_FILES: dict[str, tuple[Callable[[Account, Path], object], str]] = {
    "missing": (lambda _, path: None, "cannot read .*: No such file or directory"),
    "a directory": (lambda _, path: path.mkdir(), "cannot read .*: Is a directory"),
    "empty": (lambda _, path: path.write_text(""), "is not a creds file"),
    "a PEM key": (
        lambda _, path: path.write_text(
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
        ),
        "first block is not a JWT",
    ),
    "too large": (lambda _, path: path.write_bytes(b"-" * 70_000), "larger than 65536 bytes"),
    "without a seed": (_jwt_only, "holds no nkey seed"),
    "without a JWT": (_seed_only, "first block is not a JWT"),
    "an account seed": (_account_seed, "is not a user seed"),
    "another user's seed": (_someone_elses_seed, "does not belong to the user of its JWT"),
    "an account JWT": (_account_jwt, "is not a NATS user JWT"),
    "expired": (_expired, r"the user JWT in .* expired at 20\d\d-"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_creds_file_is_a_config_error_that_never_shows_the_seed(
    tmp_path: Path, account: Account, case: str
) -> None:
    make, message = BAD_FILES[case]
    path = tmp_path / "tap.creds"
    make(account, path)
    text = path.read_text() if path.is_file() else ""
    seeds = [line for line in text.splitlines() if line.startswith(("SU", "SA"))]
    problem = only_problem(tmp_path, f"nats:\n  creds_file: {path}\n")
    assert problem.startswith("nats.creds_file: ")
    assert re.search(message, problem), problem
    for seed in seeds:
        assert seed[2:12] not in problem


def test_check_config_names_the_key_and_the_file(tmp_path: Path, account: Account) -> None:
    creds = tmp_path / "tap.creds"
    _jwt_only(account, creds)
    config = tmp_path / "config.yaml"
    config.write_text(f"nats:\n  url: nats://127.0.0.1:4222\n  creds_file: {creds}\n")
    result = CliRunner().invoke(cli, ["check-config", "--config", str(config)])
    assert result.exit_code == 1
    assert f"nats.creds_file: {creds} holds no nkey seed" in result.output
