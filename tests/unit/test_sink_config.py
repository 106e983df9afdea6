"""clickhouse.*: when the sink runs, and every rule with its key path and message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ensemble_tap.config.clickhouse_addr import clickhouse_endpoints
from ensemble_tap.config.models import ClickHouseConfig, Config
from ensemble_tap.config.reference_semantics import EMBEDDED_BROKER
from ensemble_tap.config.validate import check
from ensemble_tap.providers import REGISTRY
from tests.support.configs import load_text, only_problem, problems_of


def errors(**clickhouse: Any) -> list[str]:
    return [
        str(issue)
        for issue in check(Config.model_validate({"clickhouse": clickhouse}), REGISTRY)[0]
    ]


def warnings(**clickhouse: Any) -> list[str]:
    found, warned = check(Config.model_validate({"clickhouse": clickhouse}), REGISTRY)
    assert found == [], found
    return [str(issue) for issue in warned]


# ------------------------------------------------------------------------------ enabling


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({}, None),
        ({"addr": "  "}, None),
        ({"addr": "ch"}, "server"),
        ({"addr": "ch", "backend": "server"}, "server"),
        ({"backend": "embedded"}, "embedded"),
        ({"backend": " Embedded "}, "embedded"),
    ],
)
def test_mode(settings: dict[str, Any], mode: str | None) -> None:
    config = ClickHouseConfig.model_validate(settings)
    assert config.mode == mode
    assert config.enabled is (mode is not None)


def test_unknown_backend(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "clickhouse:\n  backend: native\n")
    assert problem.startswith("clickhouse.backend: Input should be '', 'server' or 'embedded'")


def test_disabled_sink_checks_nothing() -> None:
    assert errors(batch_size=5000, consumer_ack_wait="1s") == []


def test_server_backend_needs_an_address() -> None:
    assert errors(backend="server") == [
        "clickhouse.addr: is required when clickhouse.backend is server"
    ]


def test_embedded_backend_takes_no_address() -> None:
    assert errors(backend="embedded", addr="ch:8123") == [
        "clickhouse.addr: must be empty when clickhouse.backend is embedded"
    ]


# ------------------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    ("addr", "secure", "expected"),
    [
        ("ch", False, [("ch", 8123)]),
        ("ch", True, [("ch", 8443)]),
        ("ch:9123, 10.0.0.2:8124", False, [("ch", 9123), ("10.0.0.2", 8124)]),
        ("[::1]:8123,[fe80::1]", False, [("::1", 8123), ("fe80::1", 8123)]),
    ],
)
def test_endpoints(addr: str, secure: bool, expected: list[tuple[str, int]]) -> None:
    assert errors(addr=addr, secure=secure) == []
    assert clickhouse_endpoints(addr, secure) == expected


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        ("a,,b", "clickhouse.addr: must not contain empty entries"),
        ("a,", "clickhouse.addr: must not contain empty entries"),
        (
            "http://ch:8123",
            'clickhouse.addr: entry "http://ch:8123" must be host:port (no scheme or path; '
            "clickhouse.secure selects https)",
        ),
        (":8123", 'clickhouse.addr: entry ":8123" must be host:port'),
        ("::1", 'clickhouse.addr: entry "::1" must be host:port (IPv6 addresses in brackets)'),
        (
            "ch:http",
            'clickhouse.addr: entry "ch:http" has invalid port: port "http" must be numeric',
        ),
        (
            "ch:65536",
            'clickhouse.addr: entry "ch:65536" has invalid port: '
            "port 65536 must be in range 1..65535",
        ),
    ],
)
def test_bad_addresses(addr: str, message: str) -> None:
    assert errors(addr=addr) == [message]


@pytest.mark.parametrize(
    ("settings", "http_port"),
    [({"addr": "ch:9000"}, 8123), ({"addr": "ch:9440", "secure": True}, 8443)],
)
def test_a_native_protocol_port_is_an_error_naming_the_http_port(
    settings: dict[str, Any], http_port: int
) -> None:
    """The reference's addr was the native protocol; the sink cannot work on that port."""
    entry, port = settings["addr"], settings["addr"].split(":")[1]
    assert errors(**settings) == [
        f'clickhouse.addr: entry "{entry}" uses port {port}, ClickHouse\'s native protocol; '
        f"the sink speaks ClickHouse's HTTP interface: use port {http_port}"
    ]


# ------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize("key", ["database", "table"])
@pytest.mark.parametrize("value", ["ensemble.x", "1abc", "a-b", "a`b", "''", "tap events"])
def test_identifiers(tmp_path: Path, key: str, value: str) -> None:
    problem = only_problem(tmp_path, f"clickhouse:\n  {key}: {value}\n")
    assert problem.startswith(f"clickhouse.{key}: ")
    assert "must be a plain identifier" in problem


@pytest.mark.parametrize("value", ["a.b", "a b", "a*", "a>", "a/b", "a\\\\b"])
def test_consumer_name(tmp_path: Path, value: str) -> None:
    problem = only_problem(tmp_path, f'clickhouse:\n  consumer_name: "{value}"\n')
    assert problem.startswith("clickhouse.consumer_name: ")
    assert "not a valid JetStream consumer name" in problem


# ---------------------------------------------------------------------------------- tls


def test_tls_keys_require_secure() -> None:
    assert errors(
        addr="ch",
        insecure_skip_verify=True,
        tls_server_name="ch.internal",
        ca_file="ca.pem",
        cert_file="c.pem",
        key_file="k.pem",
    ) == [
        "clickhouse.insecure_skip_verify: requires clickhouse.secure=true",
        "clickhouse.tls_server_name: requires clickhouse.secure=true",
        "clickhouse.ca_file: requires clickhouse.secure=true",
        "clickhouse.cert_file: requires clickhouse.secure=true",
        "clickhouse.key_file: requires clickhouse.secure=true",
    ]


def test_tls_details() -> None:
    assert errors(addr="ch", secure=True, tls_server_name="a b", cert_file="c.pem") == [
        "clickhouse.tls_server_name: must not contain whitespace",
        "clickhouse.cert_file: clickhouse.cert_file and clickhouse.key_file must be configured "
        "together",
    ]


def test_username_required_for_a_server() -> None:
    assert errors(addr="ch", username=" ") == [
        "clickhouse.username: must not be empty when the sink uses a server"
    ]


# --------------------------------------------------------------------------------- pool


def test_default_idle_is_clamped_to_a_smaller_pool() -> None:
    """The reference rejected max_open_conns: 1 because of the default max_idle_conns: 2."""
    assert errors(addr="ch", max_open_conns=1) == []
    assert ClickHouseConfig(max_open_conns=1).effective_max_idle_conns == 1


def test_explicit_idle_above_the_pool_is_an_error() -> None:
    assert errors(addr="ch", max_open_conns=1, max_idle_conns=2) == [
        "clickhouse.max_idle_conns: must be less than or equal to clickhouse.max_open_conns"
    ]


def test_explicit_zeroes(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "clickhouse:\n  addr: ch\n  max_idle_conns: 0\n  conn_max_lifetime: 0\n"
        "  consumer_max_waiting: 0\n  consumer_max_request_max_bytes: 0\n",
    ).config.clickhouse
    assert (cfg.max_idle_conns, cfg.conn_max_lifetime) == (0, 0)


def test_durations_need_units(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "clickhouse:\n  flush_interval: 2\n")
    assert problem == "clickhouse.flush_interval: duration 2 needs a unit, e.g. 2s or 2ms (got 2)"


# ----------------------------------------------------------------------------- consumer


def test_backoff_rules() -> None:
    assert errors(
        backend="embedded",
        consumer_backoff=["20s", "15s"],
        consumer_max_deliver=1,
    ) == [
        "clickhouse.consumer_backoff: must be non-decreasing",
        "clickhouse.consumer_max_deliver: must be at least len(clickhouse.consumer_backoff) (2) "
        "when both are set (a JetStream rule)",
    ]


@pytest.mark.parametrize("max_deliver", [-1, 0, 2, 5])
def test_max_deliver_with_backoff_accepted(max_deliver: int) -> None:
    assert (
        errors(
            backend="embedded", consumer_backoff=["20s", "30s"], consumer_max_deliver=max_deliver
        )
        == []
    )


def test_batch_must_fit_in_flight_limit() -> None:
    assert errors(backend="embedded", batch_size=2000, consumer_max_ack_pending=1000) == [
        "clickhouse.batch_size: must be less than or equal to clickhouse.consumer_max_ack_pending "
        "(JetStream stops delivering before a full batch is buffered)"
    ]


def test_timing_relations() -> None:
    assert errors(
        backend="embedded",
        consumer_ack_wait="5s",
        consumer_fetch_max_wait="5s",
        flush_interval="6s",
        insert_timeout="5s",
    ) == [
        "clickhouse.consumer_fetch_max_wait: must be less than clickhouse.consumer_ack_wait",
        "clickhouse.flush_interval: must be less than clickhouse.consumer_ack_wait",
        "clickhouse.insert_timeout: must be less than clickhouse.consumer_ack_wait",
    ]
    assert errors(backend="embedded", consumer_ack_wait="10s", insert_timeout="9s") == [
        "clickhouse.insert_timeout: clickhouse.insert_timeout + clickhouse.flush_interval must "
        "be less than clickhouse.consumer_ack_wait"
    ]


def test_backoff_first_step_is_the_ack_wait() -> None:
    """JetStream replaces ack_wait by backoff[0]; the reference ignored that (W-CH-2)."""
    assert ClickHouseConfig(consumer_backoff=["3s", "10s"]).effective_ack_wait == 3.0
    assert errors(backend="embedded", consumer_backoff=["3s", "10s"]) == [
        "clickhouse.insert_timeout: must be less than clickhouse.consumer_backoff[0]"
    ]


def test_ack_wait_beside_backoff_warns(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "clickhouse:\n  backend: embedded\n  consumer_ack_wait: 40s\n"
        "  consumer_backoff: [30s, 1m]\n",
    )
    assert loaded.warnings == [
        "clickhouse.consumer_ack_wait: has no effect while clickhouse.consumer_backoff is set: "
        "JetStream uses consumer_backoff[0] as the ack wait",
        EMBEDDED_BROKER,
    ]


def test_finite_max_deliver_warns() -> None:
    assert warnings(backend="embedded", consumer_max_deliver=5) == [
        "clickhouse.consumer_max_deliver: messages still failing after this many deliveries "
        "(e.g. during a long ClickHouse outage) are never inserted; 0 (unlimited) is "
        "recommended for the sink"
    ]


def test_server_keys_warn_with_the_embedded_backend() -> None:
    assert warnings(backend="embedded", password="x", secure=True) == [
        "clickhouse.password: has no effect with clickhouse.backend=embedded",
        "clickhouse.secure: has no effect with clickhouse.backend=embedded",
    ]


def test_every_problem_is_reported(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        clickhouse:
          addr: "a:0,b"
          username: ""
          insecure_skip_verify: true
          batch_size: 5000
          consumer_backoff: [1s, 500ms]
        """,
    )
    assert [problem.split(":", 1)[0] for problem in problems] == [
        "clickhouse.addr",
        "clickhouse.username",
        "clickhouse.insecure_skip_verify",
        "clickhouse.consumer_backoff",
        "clickhouse.batch_size",
        "clickhouse.flush_interval",
        "clickhouse.insert_timeout",
    ]
