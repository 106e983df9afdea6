"""vault:// references against a real Vault-API server (OpenBao in dev mode): KV v2 and v1,
#key and the default key, each token source, AppRole, a namespace, errors that name the key and
the Vault path but never a secret, Vault down at start, and a served instance whose signing
secret comes from Vault."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import hvac
import pytest

from ensemble_tap.config import ConfigError
from ensemble_tap.config import vault as vault_module
from ensemble_tap.config.models import Config
from tests.support.app import RunningApp
from tests.support.configs import load_text
from tests.support.nats_server import NatsServer
from tests.support.openbao import ROOT_TOKEN, OpenBao
from tests.support.signing import generic_headers
from tests.support.tokenreview import TokenReviewAPI

STRIPE = "whsec_from_vault_0001"
OTHER = "a-value-that-must-never-be-printed"


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = OpenBao(tmp_path_factory.mktemp("openbao")).start()
    try:
        client = server.client()
        secret = {"stripe": STRIPE, "value": "default-key-value", "other": OTHER}
        client.secrets.kv.v2.create_or_update_secret(path="team/tap", secret=secret)
        client.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
        client.write_data("kv1/tap", data={"github": "gh-from-kv1", "port": 9999})
        # A KV v1 secret with a key named "data": not to be taken for KV v2's wrapping.
        client.write_data("kv1/shaped", data={"data": {"inner": "v"}, "other": "kept"})
        yield server
    finally:
        server.stop()


def load(tmp_path: Path, text: str, **env: str) -> Config:
    return load_text(tmp_path, text, env).config


def providers(bao: OpenBao, extra: str = "") -> str:
    return (
        f"vault:\n  address: {bao.address}\n  auth_method: token\n{extra}"
        "providers:\n"
        "  stripe:\n    secret: [vault://secret/data/team/tap#stripe, plain-second]\n"
        "  github:\n    secret: vault://kv1/tap#github\n"
        "  acme:\n    secret: vault://secret/data/team/tap\n"  # no #key: the key "value"
    )


def test_kv2_kv1_keys_and_the_default_key(bao: OpenBao, tmp_path: Path) -> None:
    config = load(tmp_path, providers(bao, f"  token: {ROOT_TOKEN}\n"))
    assert config.providers["stripe"].secret == [STRIPE, "plain-second"]
    assert config.providers["github"].secret == ["gh-from-kv1"]
    assert config.providers["acme"].secret == ["default-key-value"]


def test_a_kv1_secret_with_a_data_key_is_not_taken_for_kv2(bao: OpenBao, tmp_path: Path) -> None:
    text = providers(bao, f"  token: {ROOT_TOKEN}\n").replace(
        "vault://kv1/tap#github", "vault://kv1/shaped#other"
    )
    assert load(tmp_path, text).providers["github"].secret == ["kept"]


def test_token_from_a_file_and_from_the_environment(bao: OpenBao, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(ROOT_TOKEN + "\n")
    from_file = load(tmp_path, providers(bao, f"  token_file: {token_file}\n"))
    from_env = load(tmp_path, providers(bao), VAULT_TOKEN=ROOT_TOKEN)
    assert (
        from_file.providers["stripe"].secret[0] == from_env.providers["stripe"].secret[0] == STRIPE
    )


def test_address_from_vault_addr_and_every_string_may_be_a_reference(
    bao: OpenBao, tmp_path: Path
) -> None:
    text = (
        "vault:\n  auth_method: token\n"
        "server:\n  admin_token: vault://secret/data/team/tap#other\n"
        "nats:\n  url: nats://127.0.0.1:4222\n  password: vault://kv1/tap#port\n  username: u\n"
    )
    config = load(tmp_path, text, VAULT_ADDR=bao.address, VAULT_TOKEN=ROOT_TOKEN)
    assert config.server.admin_token == OTHER
    assert config.nats.password == "9999"  # numbers as text, as the reference wrote them


def test_approle(bao: OpenBao, tmp_path: Path) -> None:
    client = bao.client()
    if "approle/" not in client.sys.list_auth_methods():
        client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy(
        "tap-read", 'path "secret/data/team/*" { capabilities = ["read"] }'
    )
    client.auth.approle.create_or_update_approle("tap", token_policies=["tap-read"])
    role_id = client.auth.approle.read_role_id("tap")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("tap")["data"]["secret_id"]
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(secret_id)
    text = (
        f"vault:\n  address: {bao.address}\n  auth_method: approle\n"
        f"  approle_role_id: {role_id}\n  approle_secret_id_file: {secret_file}\n"
        "providers:\n  stripe:\n    secret: vault://secret/data/team/tap#stripe\n"
    )
    tokens = len(client.auth.token.list_accessors()["data"]["keys"])
    assert load(tmp_path, text).providers["stripe"].secret == [STRIPE]
    assert load(tmp_path, text).providers["stripe"].secret == [STRIPE]  # a reload logs in again
    assert len(client.auth.token.list_accessors()["data"]["keys"]) == tokens  # both revoked
    # The role's policy does not cover kv1: the error says so and names both paths.
    denied = text + "  github:\n    secret: vault://kv1/tap#github\n"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, denied)
    assert info.value.problems == [
        "providers.github.secret: cannot read vault://kv1/tap: permission denied"
    ]


def test_a_namespace(bao: OpenBao, tmp_path: Path) -> None:
    bao.client().sys.create_namespace("team-a")
    scoped = bao.client(namespace="team-a")
    scoped.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    time.sleep(0.2)  # the new mount is ready a moment later
    scoped.secrets.kv.v2.create_or_update_secret(path="tap", secret={"stripe": "ns-secret"})
    text = (
        f"vault:\n  address: {bao.address}\n  namespace: team-a\n  auth_method: token\n"
        f"  token: {ROOT_TOKEN}\n"
        "providers:\n  stripe:\n    secret: vault://secret/data/tap#stripe\n"
    )
    assert load(tmp_path, text).providers["stripe"].secret == ["ns-secret"]


def test_missing_keys_and_paths_name_the_key_and_the_vault_path_never_a_secret(
    bao: OpenBao, tmp_path: Path
) -> None:
    text = (
        f"vault:\n  address: {bao.address}\n  auth_method: token\n  token: {ROOT_TOKEN}\n"
        "providers:\n"
        "  stripe:\n    secret: vault://secret/data/team/tap#missing\n"
        "  github:\n    secret: vault://secret/data/nowhere#x\n"
        "  acme:\n    secret: 'vault://secret/data/team/tap#'\n"
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.problems == [
        "providers.acme.secret: vault://secret/data/team/tap# names an empty key"
    ]
    text = text.replace("  acme:\n    secret: 'vault://secret/data/team/tap#'\n", "")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.problems == [
        "providers.stripe.secret: vault://secret/data/team/tap#missing not found: the secret "
        "has no key 'missing'",
        "providers.github.secret: cannot read vault://secret/data/nowhere: no secret at this path",
    ]
    assert OTHER not in str(info.value) and STRIPE not in str(info.value)


def test_a_value_from_vault_is_never_quoted_by_a_rule(bao: OpenBao, tmp_path: Path) -> None:
    """A rule that quotes what it refuses (``got '…'``) quotes no Vault value, whatever the
    key is called: here the secret lands in ``server.host`` and ``log_level``."""
    text = (
        f"vault:\n  address: {bao.address}\n  auth_method: token\n  token: {ROOT_TOKEN}\n"
        "log_level: vault://secret/data/team/tap#stripe\n"
        "server:\n  port: vault://secret/data/team/tap#other\n"
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert len(info.value.problems) == 2
    assert STRIPE not in str(info.value) and OTHER not in str(info.value)
    assert all("<value from vault>" in problem for problem in info.value.problems)
    plain = text.replace("vault://secret/data/team/tap#stripe", "loud")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, plain)
    assert any("'loud'" in problem for problem in info.value.problems)  # a file value is quoted


def test_a_wrong_token_is_refused(bao: OpenBao, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, providers(bao, "  token: not-a-token\n"))
    [problem] = info.value.problems
    assert problem.startswith("vault.auth_method: token login refused: ")
    assert "not-a-token" not in problem


def test_vault_down_at_start_is_refused_after_a_bounded_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vault_module, "CONNECT_BACKOFF", 0.05)
    from ensemble_tap.bus.embedded import free_port

    address = f"http://127.0.0.1:{free_port()}"
    text = (
        f"vault:\n  address: {address}\n  auth_method: token\n  token: t\n"
        "providers:\n  stripe:\n    secret: vault://secret/data/team/tap#stripe\n"
    )
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert time.monotonic() - started < 5
    assert info.value.problems == [
        f"vault.address: Vault at {address} not reachable after 3 attempts: ConnectionError"
    ]


def test_a_tls_failure_is_reported_at_once_not_retried(bao: OpenBao, tmp_path: Path) -> None:
    """https:// to a plain-HTTP listener: the handshake fails, and no retry can heal it."""
    address = bao.address.replace("http://", "https://")
    text = providers(bao, f"  token: {ROOT_TOKEN}\n").replace(bao.address, address)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    [problem] = info.value.problems
    assert problem.startswith(f"vault.address: TLS with Vault at {address} failed: ")
    assert "not reachable after" not in problem


def test_no_reference_means_vault_is_not_contacted(tmp_path: Path) -> None:
    text = "vault:\n  address: http://127.0.0.1:1\n  auth_method: token\nproviders: {}\n"
    assert load(tmp_path, text).providers == {}


def test_a_served_instance_verifies_with_the_secret_from_vault(
    bao: OpenBao, private_nats: NatsServer, tmp_path: Path
) -> None:
    text = (
        f"data_dir: {tmp_path / 'data'}\nlog_level: error\n"
        f"nats:\n  url: {private_nats.url}\n"
        f"vault:\n  address: {bao.address}\n  auth_method: token\n  token: {ROOT_TOKEN}\n"
        "providers:\n  acme:\n    secret: vault://secret/data/team/tap#stripe\n"
    )
    app = RunningApp(load(tmp_path, text)).start()
    try:
        body = b'{"id":"1"}'
        good = httpx.post(
            f"{app.url}/webhooks/acme", content=body,
            headers=generic_headers(STRIPE, body, "deal.updated", "evt-vault-1"),
        )  # fmt: skip
        bad = httpx.post(
            f"{app.url}/webhooks/acme", content=body,
            headers=generic_headers("vault://secret/data/team/tap#stripe", body, "deal.updated"),
        )  # fmt: skip
    finally:
        app.stop()
    assert (good.status_code, bad.status_code) == (202, 401)


async def test_a_renewable_token_is_renewed_before_it_expires(bao: OpenBao) -> None:
    from ensemble_tap.config.models import VaultConfig
    from ensemble_tap.vault_renewal import TokenRenewal, renewal_wanted

    token = bao.client().auth.token.create(ttl="3s", renewable=True, policies=["default"])
    short = token["auth"]["client_token"]
    settings = VaultConfig(address=bao.address, auth_method="token", token=short)
    assert renewal_wanted(settings, {})
    renewal = TokenRenewal(settings, {})
    renewal.start()
    try:
        await asyncio.sleep(5)  # past the 3 s it had at creation
    finally:
        await renewal.stop()
    assert renewal.renewals >= 2
    checker = hvac.Client(url=bao.address, token=short)
    assert checker.auth.token.lookup_self()["data"]["ttl"] > 0  # still alive


def test_kubernetes_auth_through_the_tokenreview_api(bao: OpenBao, tmp_path: Path) -> None:
    """OpenBao's kubernetes auth method asks the (stand-in) TokenReview API about the pod's
    service-account token; the service logs in with it as the reference does."""
    api = TokenReviewAPI().start()
    try:
        ca = tmp_path / "ca.pem"  # the method wants a CA even for an http:// API host
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=k8s-stand-in", "-keyout", str(tmp_path / "k.pem"), "-out", str(ca)],
            check=True, capture_output=True,
        )  # fmt: skip
        client = bao.client()
        client.sys.enable_auth_method("kubernetes", path="k8s")
        client.write(
            "auth/k8s/config", kubernetes_host=api.url, disable_local_ca_jwt=True,
            token_reviewer_jwt="reviewer", kubernetes_ca_cert=ca.read_text(),
        )  # fmt: skip
        client.sys.create_or_update_policy(
            "tap-k8s", 'path "secret/data/team/*" { capabilities = ["read"] }'
        )
        client.write(
            "auth/k8s/role/tap", bound_service_account_names="ensemble-tap",
            bound_service_account_namespaces="tap", policies="tap-k8s", ttl="1h",
        )  # fmt: skip
        jwt_file = tmp_path / "token"
        jwt_file.write_text(api.issue("tap", "ensemble-tap"))
        text = (
            f"vault:\n  address: {bao.address}\n  auth_method: kubernetes\n"
            f"  kubernetes_role: tap\n  kubernetes_mount_path: /k8s/\n"
            f"  kubernetes_jwt_file: {jwt_file}\n"
            "providers:\n  stripe:\n    secret: vault://secret/data/team/tap#stripe\n"
        )
        assert load(tmp_path, text).providers["stripe"].secret == [STRIPE]
        assert api.reviews[-1]["spec"]["token"] == jwt_file.read_text()
        jwt_file.write_text(api.issue("other", "someone-else"))  # not bound to the role
        with pytest.raises(ConfigError) as info:
            load(tmp_path, text)
        assert info.value.problems == [
            "vault.auth_method: kubernetes login refused: service account name not authorized"
        ]
    finally:
        api.stop()
