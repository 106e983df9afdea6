"""``vault://<path>#<key>`` references: any string of the config (list items included) may name
a secret in Vault (or OpenBao); they are read once per load, after ``${VAR}`` expansion and
``TAP_*`` overrides and before validation, so resolved values are validated like any other.

The path is Vault's HTTP API path (KV v2: ``secret/data/team/tap``; KV v1: ``kv/team/tap``);
without ``#key`` the key is ``value``. Each distinct path is read once. Errors name the config
key path and the Vault path, never a secret value.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import requests
from hvac import exceptions as vault_errors
from pydantic import ValidationError

from ensemble_tap.config.models import VaultConfig

PREFIX = "vault://"
DEFAULT_KEY = "value"
REQUEST_TIMEOUT = 5.0
# Vault unreachable at start: this many attempts, waiting 1 s then 2 s between them (≈ 3 s
# plus the request timeouts), then the config is refused and the service does not start.
CONNECT_ATTEMPTS = 3
CONNECT_BACKOFF = 1.0


class VaultError(Exception):
    """A problem reading references; ``problems`` are ``<key path>: <what>`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Reference:
    path: str
    key: str

    def __str__(self) -> str:
        return f"{self.path}#{self.key}"


def parse_reference(text: str) -> Reference:
    """``vault://secret/data/x#key`` → Reference; ValueError with the reason when malformed."""
    body = text.strip()[len(PREFIX) :]
    path, hashed, key = body.partition("#")
    path = path.strip().strip("/")
    if not path:
        raise ValueError("a vault:// reference needs a path")
    if hashed and not key.strip():
        raise ValueError(f"vault://{path}# names an empty key")
    return Reference(path, key.strip() if hashed else DEFAULT_KEY)


def references(tree: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(key path, text) of every string in ``tree`` that is a reference."""
    if isinstance(tree, str):
        if tree.strip().startswith(PREFIX):
            yield path, tree
    elif isinstance(tree, dict):
        for key, item in tree.items():
            yield from references(item, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            yield from references(item, f"{path}[{index}]")


def resolve_tree(
    tree: dict[str, Any],
    env: Mapping[str, str],
    client_factory: Callable[..., hvac.Client] = hvac.Client,
    attempts: int = CONNECT_ATTEMPTS,
) -> dict[str, Any]:
    """``tree`` with every reference replaced by its secret; raise VaultError listing every
    reference that could not be read (and why). Vault is not contacted without references."""
    found = list(references(tree))
    if not found:
        return tree
    settings = vault_settings(tree)
    parsed: dict[str, Reference] = {}
    problems: list[str] = []
    for key_path, text in found:
        if key_path.startswith("vault."):
            problems.append(f"{key_path}: the vault section cannot itself come from Vault")
            continue
        try:
            parsed[key_path] = parse_reference(text)
        except ValueError as exc:
            problems.append(f"{key_path}: {exc}")
    if problems:
        raise VaultError(problems)
    client = connect(settings, env, client_factory, attempts)
    secrets: dict[str, dict[str, Any] | str] = {}  # path → its data, or why it cannot be read
    try:
        for reference in parsed.values():
            if reference.path not in secrets:
                secrets[reference.path] = read(client, reference.path)
    finally:
        if settings.auth_method != "token":
            _revoke_login(client)
    values: dict[str, str] = {}
    for key_path, reference in parsed.items():
        data = secrets[reference.path]
        if isinstance(data, str):
            problems.append(f"{key_path}: cannot read vault://{reference.path}: {data}")
        elif reference.key not in data:
            problems.append(f"{key_path}: vault://{reference} not found: the secret has no "
                            f"key {reference.key!r}")  # fmt: skip
        else:
            value = as_text(data[reference.key])
            if value is None:
                problems.append(f"{key_path}: vault://{reference} is not a text value")
            else:
                values[key_path] = value
    if problems:
        raise VaultError(problems)
    resolved: dict[str, Any] = _substituted(tree, values, "")
    return resolved


def _revoke_login(client: hvac.Client) -> None:
    """A login's token is needed for one load only (every reload logs in again): revoked
    at once, so reloads leave no live tokens behind in Vault. A failed revoke is harmless:
    the token then ends at its TTL."""
    with contextlib.suppress(vault_errors.VaultError, requests.exceptions.RequestException):
        client.auth.token.revoke_self()


def vault_settings(tree: dict[str, Any]) -> VaultConfig:
    section = tree.get("vault") or {}
    try:
        return VaultConfig.model_validate(section)
    except ValidationError as exc:
        raise VaultError(
            [f"vault.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        ) from None


def connect(
    settings: VaultConfig,
    env: Mapping[str, str],
    client_factory: Callable[..., hvac.Client],
    attempts: int = CONNECT_ATTEMPTS,
) -> hvac.Client:
    """An authenticated client; retries an unreachable Vault ``attempts`` times."""
    address = settings.address.strip() or env.get("VAULT_ADDR", "").strip()
    if not address:
        raise VaultError(
            ["vault.address: must be set (or VAULT_ADDR) when vault:// references are used"]
        )
    ca_file = settings.ca_file.strip() or env.get("VAULT_CACERT", "").strip()
    verify: bool | str = False if settings.insecure_skip_verify else (ca_file or True)
    client = client_factory(
        url=address,
        namespace=settings.namespace.strip() or env.get("VAULT_NAMESPACE", "").strip() or None,
        verify=verify,
        timeout=REQUEST_TIMEOUT,
    )
    for attempt in range(attempts):
        try:
            login(client, settings, env)
            return client
        except requests.exceptions.SSLError as exc:  # a certificate does not heal: no retry
            raise VaultError(
                [f"vault.address: TLS with Vault at {address} failed: {_tls_reason(exc)}"]
            ) from None
        except requests.exceptions.RequestException as exc:
            if attempt + 1 == attempts:
                raise VaultError(
                    [
                        f"vault.address: Vault at {address} not reachable after {attempts} "
                        f"attempts: {type(exc).__name__}"
                    ]
                ) from None
            time.sleep(CONNECT_BACKOFF * 2**attempt)
    raise AssertionError("unreachable")


def login(client: hvac.Client, settings: VaultConfig, env: Mapping[str, str]) -> None:
    method = settings.auth_method
    try:
        if method == "token":
            client.token = token_of(settings, env)
            client.auth.token.lookup_self()  # a wrong token fails here, not at the first read
        elif method == "approle":
            if not settings.approle_role_id.strip():
                raise VaultError(
                    ["vault.approle_role_id: must be set for vault.auth_method=approle"]
                )
            secret_id = read_file(settings.approle_secret_id_file, "vault.approle_secret_id_file")
            client.auth.approle.login(
                role_id=settings.approle_role_id.strip(),
                secret_id=secret_id,
                mount_point=settings.approle_mount_path.strip("/"),
            )
        else:
            if not settings.kubernetes_role.strip():
                raise VaultError(
                    ["vault.kubernetes_role: must be set for vault.auth_method=kubernetes"]
                )
            jwt = read_file(settings.kubernetes_jwt_file, "vault.kubernetes_jwt_file")
            client.auth.kubernetes.login(
                role=settings.kubernetes_role.strip(),
                jwt=jwt,
                mount_point=settings.kubernetes_mount_path.strip("/"),
            )
    except vault_errors.VaultError as exc:
        raise VaultError([f"vault.auth_method: {method} login refused: {_reason(exc)}"]) from None


def token_of(settings: VaultConfig, env: Mapping[str, str]) -> str:
    if settings.token.strip():
        return settings.token.strip()
    if settings.token_file.strip():
        return read_file(settings.token_file, "vault.token_file")
    if env.get("VAULT_TOKEN", "").strip():
        return env["VAULT_TOKEN"].strip()
    raise VaultError(["vault.token: vault.token, vault.token_file or VAULT_TOKEN must be set "
                      "for vault.auth_method=token"])  # fmt: skip


def read_file(name: str, key: str) -> str:
    try:
        text = Path(name.strip()).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise VaultError([f"{key}: cannot read {name}: {exc.strerror}"]) from None
    if not text:
        raise VaultError([f"{key}: {name} is empty"])
    return text


def read(client: hvac.Client, path: str) -> dict[str, Any] | str:
    """The secret's key/value data (KV v2 unwrapped), or why it cannot be read."""
    try:
        response = client.read(path)
    except vault_errors.Forbidden:
        return "permission denied"
    except vault_errors.VaultError as exc:
        return _reason(exc)
    except requests.exceptions.RequestException as exc:
        return f"Vault not reachable: {type(exc).__name__}"
    if not isinstance(response, dict) or not isinstance(response.get("data"), dict):
        return "no secret at this path"
    data: dict[str, Any] = response["data"]
    # KV v2 answers {"data": {...values}, "metadata": {...}}; anything else is a KV v1 secret,
    # even one that has a key named "data".
    if data.keys() == {"data", "metadata"} and isinstance(data["data"], dict):
        inner: dict[str, Any] = data["data"]
        return inner
    return data


def as_text(value: Any) -> str | None:
    """Strings as they are, numbers and booleans as Go's formatting writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _tls_reason(exc: BaseException) -> str:
    """The innermost error's text: ssl's own (``[SSL: CERTIFICATE_VERIFY_FAILED] …``)."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return str(exc) or type(exc).__name__


def _reason(exc: Exception) -> str:
    """Vault's own error texts name paths and policies, never secret values."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)[:300]
    return type(exc).__name__


def _substituted(tree: Any, values: dict[str, str], path: str) -> Any:
    if path in values:
        return values[path]
    if isinstance(tree, dict):
        return {
            k: _substituted(v, values, f"{path}.{k}" if path else str(k)) for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [_substituted(v, values, f"{path}[{i}]") for i, v in enumerate(tree)]
    return tree
