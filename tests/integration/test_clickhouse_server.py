"""The clickhouse-connect path: the sink against a ClickHouse HTTP interface.

The server is tests/support/clickhouse_http.py — the HTTP interface served over chdb — so the
driver, its requests, TLS and authentication are real, and so is the SQL engine. Outages
are real too: the adapter stops listening and drops its connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ensemble_tap.bus.embedded import free_port
from ensemble_tap.sink import EventFilters
from tests.support.clickhouse_http import ClickHouseHttp, server_tls_context
from tests.support.nats_server import NatsServer
from tests.support.sink import harness, sink_config
from tests.support.tls import Certificates, make_certificates
from tests.support.waiting import eventually

PASSWORD = "s3cret"


@pytest.fixture
def clickhouse(tmp_path: Path) -> Iterator[ClickHouseHttp]:
    server = ClickHouseHttp(tmp_path / "chdb", password=PASSWORD).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def stored(clickhouse: ClickHouseHttp) -> int:
    return int(clickhouse.sql("SELECT count() AS n FROM ensemble.tap_events FINAL")[0]["n"])


def server_settings(clickhouse: ClickHouseHttp, **extra: str) -> dict[str, str]:
    return {"backend": "", "addr": clickhouse.addr, "password": PASSWORD, **extra}


async def test_events_reach_the_server(
    private_nats: NatsServer, tmp_path: Path, clickhouse: ClickHouseHttp
) -> None:
    config = sink_config(private_nats.url, tmp_path, **server_settings(clickhouse))
    async with harness(config) as tap:
        await tap.publish(range(120))
        sink = tap.sink()
        await sink.start()
        try:
            await eventually(tap.settled)
            events, _ = await sink.search(EventFilters(request_id="req-3"))
            assert [event["id"] for event in events] == ["evt_3"]
        finally:
            await sink.stop()
    assert stored(clickhouse) == 120
    inserts = [r for r in clickhouse.requests if r.query.startswith("INSERT INTO")]
    assert inserts and all(r.body_size > 0 for r in inserts)
    assert all("insert_deduplication_token = '" in r.query for r in inserts)
    assert sink.status()["backend"] == f"clickhouse http://127.0.0.1:{clickhouse.port}"


async def test_outage_backs_off_then_catches_up(
    private_nats: NatsServer, tmp_path: Path, clickhouse: ClickHouseHttp
) -> None:
    config = sink_config(private_nats.url, tmp_path, **server_settings(clickhouse))
    async with harness(config) as tap:
        sink = tap.sink()
        await sink.start()
        try:
            await tap.publish(range(50))
            await eventually(lambda: sink.status_info.rows_inserted == 50)
            clickhouse.stop()
            await tap.publish(range(50, 100))
            await eventually(lambda: tap.metric("tap_clickhouse_insert_failures_total") == 1)
            await eventually(lambda: "unavailable" in sink.status_info.detail)
            assert sink.status_info.state == "degraded"
            assert (await sink.readiness_detail())["clickhouse"].startswith("degraded: ")
            clickhouse.start()
            await eventually(tap.settled)
            await eventually(lambda: sink.status()["state"] == "running")
        finally:
            await sink.stop()
        # One failed insert, then probes only: no insert storm against a down server.
        assert tap.metric("tap_clickhouse_insert_failures_total") == 1
        assert tap.metric("tap_clickhouse_redeliveries_total") >= 1
    assert stored(clickhouse) == 100


async def test_unreachable_at_start_is_not_fatal(
    private_nats: NatsServer, tmp_path: Path, clickhouse: ClickHouseHttp
) -> None:
    """The reference refused to start without ClickHouse (W-CH-10)."""
    clickhouse.stop()
    config = sink_config(private_nats.url, tmp_path, **server_settings(clickhouse))
    async with harness(config) as tap:
        await tap.publish(range(10))
        sink = tap.sink()
        await sink.start()
        try:
            await eventually(lambda: "cannot prepare" in sink.status_info.detail)
            assert sink.status_info.state == "degraded"
            clickhouse.start()
            await eventually(tap.settled)
        finally:
            await sink.stop()
    assert stored(clickhouse) == 10


async def test_failover_to_the_next_address(
    private_nats: NatsServer, tmp_path: Path, clickhouse: ClickHouseHttp
) -> None:
    addr = f"127.0.0.1:{free_port()},{clickhouse.addr}"
    config = sink_config(private_nats.url, tmp_path, **server_settings(clickhouse, addr=addr))
    async with harness(config) as tap:
        await tap.publish(range(5))
        sink = tap.sink()
        await sink.start()
        try:
            await eventually(tap.settled)
        finally:
            await sink.stop()
    assert stored(clickhouse) == 5


async def test_wrong_password_is_reported(
    private_nats: NatsServer, tmp_path: Path, clickhouse: ClickHouseHttp
) -> None:
    settings = server_settings(clickhouse, password="wrong")
    async with harness(sink_config(private_nats.url, tmp_path, **settings)) as tap:
        sink = tap.sink()
        await sink.start()
        try:
            await eventually(lambda: "Authentication failed" in sink.status_info.detail)
        finally:
            await sink.stop()


async def test_tls_with_client_certificate(
    private_nats: NatsServer, tmp_path: Path, certs: Certificates
) -> None:
    tls = server_tls_context(certs.server_cert, certs.server_key, client_ca=certs.ca)
    server = ClickHouseHttp(tmp_path / "chdb", password=PASSWORD, tls=tls).start()
    try:
        settings = server_settings(
            server,
            secure="true",
            ca_file=str(certs.ca),
            cert_file=str(certs.client_cert),
            key_file=str(certs.client_key),
            tls_server_name="localhost",
        )
        async with harness(sink_config(private_nats.url, tmp_path, **settings)) as tap:
            await tap.publish(range(7))
            sink = tap.sink()
            await sink.start()
            try:
                await eventually(tap.settled)
            finally:
                await sink.stop()
        assert stored(server) == 7
        assert sink.status()["backend"].startswith("clickhouse https://")
    finally:
        server.close()


async def test_tls_refuses_an_unknown_server_certificate(
    private_nats: NatsServer, tmp_path: Path, certs: Certificates
) -> None:
    tls = server_tls_context(certs.server_cert, certs.server_key)
    server = ClickHouseHttp(tmp_path / "chdb", password=PASSWORD, tls=tls).start()
    try:
        settings = server_settings(server, secure="true")  # system roots only
        async with harness(sink_config(private_nats.url, tmp_path, **settings)) as tap:
            sink = tap.sink()
            await sink.start()
            try:
                await eventually(lambda: "CERTIFICATE_VERIFY_FAILED" in sink.status_info.detail)
            finally:
                await sink.stop()
    finally:
        server.close()
