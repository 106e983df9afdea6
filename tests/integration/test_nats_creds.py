"""`nats.creds_file` against a real nats-server in operator (JWT) mode: the operator, account
and user JWTs are minted by the test (tests/support/nats_operator.py) and preloaded into the
server's memory resolver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ensemble_tap.bus.connection import Broker, BrokerConnectError
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.observability import Metrics
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.jetstream import stored_messages
from tests.support.nats_operator import Operator
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers

SECRET = "creds-secret"


@dataclass
class OperatorServer:
    server: NatsServer
    creds: dict[str, Path]  # by the user's standing with the server


@pytest.fixture
def operator_server(tmp_path: Path) -> Iterator[OperatorServer]:
    operator = Operator()
    app = operator.account("APP")
    stranger = operator.account("STRANGER", trusted=False)
    creds = {
        "valid": app.write_creds(tmp_path / "tap.creds"),
        "revoked": app.write_creds(tmp_path / "revoked.creds", revoked=True),
        "expired": app.write_creds(tmp_path / "expired.creds", expires=1_700_000_000),
        "of an unknown account": stranger.write_creds(tmp_path / "stranger.creds"),
    }
    config = operator.server_config()  # after the revocation: the account JWT lists it
    server = NatsServer(tmp_path / "nats", websocket=True, config=config).start()
    yield OperatorServer(server, creds)
    server.stop()


@pytest.mark.parametrize("transport", ["tcp", "websocket"])
async def test_the_service_logs_in_with_a_creds_file_and_stores_a_webhook(
    operator_server: OperatorServer, tmp_path: Path, transport: str
) -> None:
    server = operator_server.server
    creds = operator_server.creds["valid"]
    url = server.url if transport == "tcp" else server.ws_url
    config = make_config(
        url,
        str(tmp_path / "data"),
        nats={"creds_file": str(creds)},
        providers={"acme": {"secret": SECRET}},
    )
    app = RunningApp(config).start()
    try:
        body = b'{"id":"inv_1"}'
        async with httpx.AsyncClient(base_url=app.url) as client:
            response = await client.post(
                "/webhooks/acme",
                content=body,
                headers=generic_headers(SECRET, body, "invoice.paid", "evt_creds"),
            )
    finally:
        app.stop()
    assert response.status_code == 202, response.text
    [stored] = await stored_messages(server.url, "ENSEMBLE_TAP", user_credentials=str(creds))
    assert stored.subject == "ensemble.tap.acme.invoice.paid"
    assert stored.json()["id"] == "evt_creds"


async def test_anonymous_clients_are_refused(operator_server: OperatorServer) -> None:
    """The server really is in JWT mode: no credentials, no connection."""
    with pytest.raises(BrokerConnectError, match="Authorization Violation"):
        await _connect(operator_server.server.url, None)


@pytest.mark.parametrize("user", ["revoked", "expired", "of an unknown account"])
async def test_a_user_the_server_does_not_accept_is_refused_with_its_reason(
    operator_server: OperatorServer, user: str
) -> None:
    """Past the start-up budget, the error says why: the server's refusal, not a timeout.
    (An expired JWT is caught by check-config already: tests/unit/test_nats_creds.py.)"""
    with pytest.raises(BrokerConnectError, match=r"within 1s: nats: 'Authorization Violation'"):
        await _connect(operator_server.server.url, operator_server.creds[user])


async def _connect(url: str, creds: Path | None) -> None:
    settings = {"url": url, "connect_timeout": "1s", "reconnect_wait": "200ms"}
    if creds is not None:
        settings["creds_file"] = str(creds)
    cfg = NatsConfig.model_validate(settings)
    broker = Broker(cfg, [url], Metrics())
    await broker.connect(1.0)
    await broker.close()
