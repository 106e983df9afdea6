"""NATS authentication modes and TLS/mTLS against a real nats-server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ensemble_tap.bus.connection import Broker, BrokerConnectError
from ensemble_tap.bus.embedded import free_port, nats_server_binary
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.observability import Metrics
from tests.support.tls import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _run_server(tmp_path: Path, body: str) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "server.conf"
    config.write_text(f'listen: "127.0.0.1:{port}"\n{body}\n')
    process = subprocess.Popen([nats_server_binary(), "-c", str(config)])
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def tls_token_server(tmp_path: Path, certs: Certificates) -> Iterator[str]:
    yield from _run_server(
        tmp_path,
        f'tls {{ cert_file: "{certs.server_cert}", key_file: "{certs.server_key}" }}\n'
        'authorization { token: "s3cret-token" }',
    )


@pytest.fixture
def mtls_user_server(tmp_path: Path, certs: Certificates) -> Iterator[str]:
    yield from _run_server(
        tmp_path,
        f'tls {{ cert_file: "{certs.server_cert}", key_file: "{certs.server_key}", '
        f'ca_file: "{certs.ca}", verify: true }}\n'
        'authorization { users: [ { user: "tap", password: "pw" } ] }',
    )


async def _connects(url: str, startup_timeout: str = "10s", **settings: object) -> None:
    cfg = NatsConfig.model_validate(
        {"url": url, "startup_timeout": startup_timeout, "connect_timeout": "2s", **settings}
    )
    broker = Broker(cfg, [url], Metrics())
    await broker.connect(cfg.startup_timeout)
    try:
        assert broker.is_connected
        await broker.nc.flush()
    finally:
        await broker.close()


async def test_token_over_tls_with_a_ca_file(tls_token_server: str, certs: Certificates) -> None:
    await _connects(tls_token_server, token="s3cret-token", secure=True, ca_file=str(certs.ca))


async def test_wrong_token_fails_within_the_startup_timeout(
    tls_token_server: str, certs: Certificates
) -> None:
    with pytest.raises(BrokerConnectError):
        await _connects(
            tls_token_server, "1500ms", token="wrong", secure=True, ca_file=str(certs.ca)
        )


async def test_user_password_with_a_client_certificate(
    mtls_user_server: str, certs: Certificates
) -> None:
    await _connects(
        mtls_user_server,
        username="tap",
        password="pw",
        secure=True,
        ca_file=str(certs.ca),
        cert_file=str(certs.client_cert),
        key_file=str(certs.client_key),
    )


async def test_mtls_server_refuses_a_client_without_certificate(
    mtls_user_server: str, certs: Certificates
) -> None:
    with pytest.raises(BrokerConnectError):
        await _connects(
            mtls_user_server,
            "1500ms",
            username="tap",
            password="pw",
            secure=True,
            ca_file=str(certs.ca),
        )


async def test_untrusted_server_certificate_is_refused(tls_token_server: str) -> None:
    with pytest.raises(BrokerConnectError):
        await _connects(tls_token_server, "1500ms", token="s3cret-token", secure=True)


async def test_insecure_skip_verify_accepts_an_untrusted_certificate(
    tls_token_server: str,
) -> None:
    await _connects(tls_token_server, token="s3cret-token", secure=True, insecure_skip_verify=True)
