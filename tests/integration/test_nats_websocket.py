"""ws:// and wss:// NATS URLs against a real nats-server's WebSocket listener: the service,
the sink and `tail` connect over WebSocket, and the shortcuts of bus/client.py (pre-encoded
publishes, direct acks and deliveries, bulk acks) work on the WebSocket transport
(tests/integration/test_bus_client.py runs them one by one over both transports)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from ensemble_tap.bus.connection import Broker, BrokerConnectError
from ensemble_tap.bus.embedded import free_port
from ensemble_tap.bus.websocket import WebSocket
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.observability import Metrics
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.service_process import CLI
from tests.support.signing import generic_headers
from tests.support.sink import envelope, harness, sink_config
from tests.support.tls import Certificates, make_certificates
from tests.support.waiting import eventually

SECRET = "ws-secret"
ACME = {"acme": {"secret": SECRET}}


@pytest.fixture
def ws_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", websocket=True).start()
    yield server
    server.stop()


async def _post_webhooks(app: RunningApp, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=app.url) as client:

        async def post(index: int) -> int:
            body = b'{"id":"inv_%d"}' % index
            headers = generic_headers(SECRET, body, "invoice.paid", f"evt_{index}")
            return (await client.post("/webhooks/acme", content=body, headers=headers)).status_code

        return list(await asyncio.gather(*(post(index) for index in range(count))))


async def test_webhooks_are_published_over_websocket(ws_nats: NatsServer, tmp_path: Path) -> None:
    """Concurrent webhooks: many publishes per flush (one WebSocket message each flush) and
    their acks on the direct path."""
    app = RunningApp(make_config(ws_nats.ws_url, str(tmp_path / "data"), providers=ACME)).start()
    try:
        assert app.app.broker is not None
        assert isinstance(app.app.broker.nc._transport, WebSocket)
        statuses = await _post_webhooks(app, 60)
    finally:
        app.stop()
    assert statuses == [202] * 60
    stored = await stored_messages(ws_nats.url, "ENSEMBLE_TAP")
    assert sorted(message.json()["id"] for message in stored) == sorted(
        f"evt_{index}" for index in range(60)
    )


async def test_the_sink_consumes_and_acks_over_websocket(
    ws_nats: NatsServer, tmp_path: Path
) -> None:
    config = sink_config(ws_nats.ws_url, tmp_path, batch_size=100)
    async with harness(config) as tap:
        await tap.publish(range(250))
        sink = tap.sink()
        await sink.start()
        try:
            assert isinstance(sink.nc._transport, WebSocket)
            await eventually(lambda: sink.status_info.rows_inserted == 250)
            await eventually(tap.settled)  # every delivery acked, over WebSocket
        finally:
            await sink.stop()
    assert tap.metric("tap_clickhouse_rows_inserted_total") == 250


def test_tail_reads_over_websocket(ws_nats: NatsServer, tmp_path: Path) -> None:
    config = make_config(ws_nats.ws_url, str(tmp_path / "data"))

    async def publish_one() -> None:
        async with harness(config) as tap:
            subject, body, msg_id = envelope(7)
            await tap.publish_raw(subject, body, msg_id)

    asyncio.run(publish_one())
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"nats": {"url": ws_nats.ws_url}}))
    tail = subprocess.run(
        [CLI, "tail", "--all", "--count", "1", "--config", str(config_file)],
        capture_output=True,
        timeout=60,
    )
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.startswith(b"ensemble.tap.acme.deal.updated ")
    assert b'"id":"evt_7"' in tail.stdout


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def wss_nats(tmp_path: Path, certs: Certificates) -> Iterator[tuple[NatsServer, int]]:
    """A WebSocket listener with TLS (the test CA's server certificate); yields its port."""
    port = free_port()
    tls = f'tls {{ cert_file: "{certs.server_cert}", key_file: "{certs.server_key}" }}'
    server = NatsServer(
        tmp_path / "nats", config=f'websocket {{ listen: "127.0.0.1:{port}", {tls} }}\n'
    ).start()
    yield server, port
    server.stop()


@pytest.mark.parametrize("scheme", ["wss", "ws"])
async def test_tls_websocket_with_a_ca_file(
    wss_nats: tuple[NatsServer, int], certs: Certificates, tmp_path: Path, scheme: str
) -> None:
    """``wss://``, or ``ws://`` with ``nats.secure`` (TLS, as the Go client does)."""
    server, port = wss_nats
    nats = {"secure": True, "ca_file": str(certs.ca)}
    url = f"{scheme}://127.0.0.1:{port}"
    app = RunningApp(make_config(url, str(tmp_path / "data"), nats=nats, providers=ACME)).start()
    try:
        assert app.app.broker is not None
        transport = app.app.broker.nc._transport
        assert isinstance(transport, WebSocket)
        assert transport._using_tls
        statuses = await _post_webhooks(app, 3)
    finally:
        app.stop()
    assert statuses == [202] * 3
    assert len(await stored_messages(server.url, "ENSEMBLE_TAP")) == 3


async def test_an_untrusted_websocket_certificate_is_refused_with_the_reason(
    wss_nats: tuple[NatsServer, int],
) -> None:
    _, port = wss_nats
    url = f"wss://127.0.0.1:{port}"
    broker = Broker(
        NatsConfig.model_validate({"url": url, "connect_timeout": "1s"}), [url], Metrics()
    )
    with pytest.raises(
        BrokerConnectError, match=r"websocket handshake .* CERTIFICATE_VERIFY_FAILED"
    ):
        await broker.connect(1.0)


async def test_a_websocket_handshake_that_gets_no_answer_is_bounded_by_connect_timeout() -> None:
    """A listener that never answers the HTTP upgrade: each attempt ends after
    ``nats.connect_timeout`` (aiohttp's own limit is 5 minutes) and is retried."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        cfg = NatsConfig.model_validate({"url": url, "connect_timeout": "300ms"})
        broker = Broker(cfg, [url], Metrics())
        with pytest.raises(BrokerConnectError, match=r"handshake .* timed out after 0\.3s"):
            await broker.connect(2.0)
