"""Every validation rule of config/models.py and config/validate.py, with message and key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ensemble_tap.config import ConfigError, load_config, vault
from ensemble_tap.config.models import Config
from ensemble_tap.config.reference_semantics import EMBEDDED_BROKER
from ensemble_tap.config.validate import check
from ensemble_tap.providers import REGISTRY
from tests.support.configs import load_text, only_problem, problems_of
from tests.support.nats_operator import Operator

CREDS = "<a valid creds file>"


def yaml_of(section: str, key: str, value: str) -> str:
    return f"{section}:\n  {key}: {value}\n"


def cfg(data: dict[str, Any]) -> Config:
    return Config.model_validate(data)


def errors_of(data: dict[str, Any]) -> list[str]:
    return [str(issue) for issue in check(cfg(data), REGISTRY)[0]]


def warnings_of(data: dict[str, Any]) -> list[str]:
    errors, warnings = check(cfg(data), REGISTRY)
    assert errors == [], errors
    return [str(issue) for issue in warnings]


def test_defaults_are_valid() -> None:
    assert check(Config(), REGISTRY) == ([], [])


def test_defaults_match_the_reference() -> None:
    c = Config()
    assert c.data_dir == "./data"
    assert c.log_level == "info"
    assert c.server.port == 8080
    assert c.server.base_path == "/webhooks"
    assert c.server.read_timeout == 10
    assert c.server.read_header_timeout == 5  # fixed in the reference's http.Server
    assert c.server.idle_timeout == 60  # fixed in the reference's http.Server
    assert c.server.max_body_size == 1_048_576
    assert c.server.admin_replay_max_limit == 2000
    assert c.server.admin_replay_job_ttl == 86_400
    assert c.server.admin_replay_job_timeout == 300
    assert c.server.admin_mtls_client_cert_header == "X-Forwarded-Client-Cert"
    assert c.nats.url is None  # the embedded server
    assert c.nats.stream == "ENSEMBLE_TAP"
    assert c.nats.subject_prefix == "ensemble.tap"
    assert c.nats.max_age == 168 * 3600
    assert c.nats.dedup_window == 72 * 3600  # the reference: 2m (docs/compatibility.md)
    assert c.nats.max_reconnects == -1
    assert c.nats.publish_max_retries == 3
    assert c.nats.publish_retry_backoff == 0.1
    assert c.providers == {}
    assert c.clickhouse.enabled is False
    assert c.vault.auth_method == "kubernetes"
    assert c.state.backend == "memory"


# ------------------------------------------------------------------------------ nats.url


@pytest.mark.parametrize(
    "url",
    [
        "nats://localhost:4222",
        "tls://nats.example.com:4443",
        "nats://user:pass@10.0.0.1",
        "nats://[::1]:4222",
        "nats://a:4222, nats://b:4222,nats://c",
        "nats://h:4222/",
        "NATS://h:4222",
        "ws://h:8080/path",
        "wss://h/path/deeper",
        "ws://a,wss://b",
        "nats://h:1",
        "nats://h:65535",
    ],
)
def test_nats_url_valid(tmp_path: Path, url: str) -> None:
    assert load_text(tmp_path, yaml_of("nats", "url", f"'{url}'")).config.nats.url == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("''", "nats.url: must not be empty (leave it out to run the embedded server)"),
        ("'   '", "nats.url: must not be empty (leave it out to run the embedded server)"),
        ("'nats://a,,nats://b'", "nats.url: contains empty endpoint at index 1"),
        ("'nats://a, '", "nats.url: contains empty endpoint at index 1"),
        (
            "'http://h:4222'",
            'nats.url: endpoint "http://h:4222" has unsupported scheme "http" '
            "(expected one of nats|tls|ws|wss)",
        ),
        (
            "'localhost:4222'",
            'nats.url: endpoint "localhost:4222" has unsupported scheme "localhost" '
            "(expected one of nats|tls|ws|wss)",
        ),
        (
            "'//h:4222'",
            'nats.url: endpoint "//h:4222" has unsupported scheme "" '
            "(expected one of nats|tls|ws|wss)",
        ),
        ("'nats://'", 'nats.url: endpoint "nats://" must include a host'),
        ("'nats://:4222'", 'nats.url: endpoint "nats://:4222" must include a host'),
        (
            "'nats://h:4222/path'",
            'nats.url: endpoint "nats://h:4222/path" must not include a path for nats scheme',
        ),
        (
            "'tls://h/x'",
            'nats.url: endpoint "tls://h/x" must not include a path for tls scheme',
        ),
        ("'nats://h:0'", 'nats.url: endpoint "nats://h:0" has invalid port 0'),
        (
            "'nats://a,ws://b'",
            "nats.url: must not mix websocket and non-websocket endpoints",
        ),
        (
            "'tls://a,wss://b'",
            "nats.url: must not mix websocket and non-websocket endpoints",
        ),
    ],
)
def test_nats_url_invalid(tmp_path: Path, url: str, problem: str) -> None:
    assert only_problem(tmp_path, yaml_of("nats", "url", url)) == problem


@pytest.mark.parametrize("url", ["nats://h:70000", "nats://h:port", "nats://[::1"])
def test_nats_url_unparseable(tmp_path: Path, url: str) -> None:
    problem = only_problem(tmp_path, yaml_of("nats", "url", f"'{url}'"))
    assert problem.startswith(f'nats.url: endpoint "{url}" is invalid: ')


def test_nats_url_every_bad_endpoint_reported(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path, yaml_of("nats", "url", "'nats://ok,http://x,,nats://,nats://h/p'")
    )
    assert problems == [
        'nats.url: endpoint "http://x" has unsupported scheme "http" '
        "(expected one of nats|tls|ws|wss)",
        "nats.url: contains empty endpoint at index 2",
        'nats.url: endpoint "nats://" must include a host',
        'nats.url: endpoint "nats://h/p" must not include a path for nats scheme',
    ]


def test_nats_url_unset_means_embedded(tmp_path: Path) -> None:
    assert load_text(tmp_path, "nats:\n  stream: S\n").config.nats.url is None


# ---------------------------------------------------------------------- nats other rules


def test_dedup_window_must_not_exceed_max_age(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "nats:\n  max_age: 1m\n  dedup_window: 2m\n")
    assert problem == "nats.dedup_window: must be less than or equal to nats.max_age"


def test_dedup_window_equal_to_max_age_is_fine(tmp_path: Path) -> None:
    nats = load_text(tmp_path, "nats:\n  max_age: 1m\n  dedup_window: 60s\n").config.nats
    assert nats.max_age == nats.dedup_window == 60


def test_a_shorter_max_age_shortens_the_default_dedup_window(tmp_path: Path) -> None:
    """The 72 h default follows a shorter max_age (JetStream: window <= max_age)."""
    assert load_text(tmp_path, "nats:\n  max_age: 24h\n").config.nats.dedup_window == 86400


def test_dedup_window_minimum(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "nats:\n  dedup_window: 50ms\n")
    assert problem == "nats.dedup_window: must be at least 100ms (a JetStream limit)"
    assert load_text(tmp_path, "nats:\n  dedup_window: 100ms\n").config.nats.dedup_window == 0.1


@pytest.mark.parametrize(
    ("nats", "problems"),
    [
        ({"password": "p"}, ["nats.password: requires nats.username"]),
        (
            {"token": "t", "username": "u"},
            ["nats.token: cannot be combined with nats.username or nats.password"],
        ),
        (
            {"token": "t", "username": "u", "password": "p"},
            ["nats.token: cannot be combined with nats.username or nats.password"],
        ),
        (
            {"token": "t", "password": "p"},
            [
                "nats.password: requires nats.username",
                "nats.token: cannot be combined with nats.username or nats.password",
            ],
        ),
        (
            {"creds_file": CREDS, "token": "t"},
            [
                "nats.creds_file: cannot be combined with nats.token, nats.username, "
                "or nats.password"
            ],
        ),
        (
            {"creds_file": CREDS, "username": "u"},
            [
                "nats.creds_file: cannot be combined with nats.token, nats.username, "
                "or nats.password"
            ],
        ),
        (
            {"creds_file": CREDS, "username": "u", "password": "p"},
            [
                "nats.creds_file: cannot be combined with nats.token, nats.username, "
                "or nats.password"
            ],
        ),
    ],
)
def test_nats_auth_combinations(nats: dict[str, str], problems: list[str], creds_file: str) -> None:
    assert errors_of({"nats": _with_creds(nats, creds_file)}) == problems


@pytest.mark.parametrize(
    "nats",
    [
        {"username": "u"},
        {"username": "u", "password": "p"},
        {"token": "t"},
        {"creds_file": CREDS},
    ],
)
def test_nats_auth_single_modes_are_fine(nats: dict[str, str], creds_file: str) -> None:
    assert errors_of({"nats": _with_creds(nats, creds_file)}) == []


@pytest.fixture
def creds_file(tmp_path: Path) -> str:
    """A valid creds file (the file is read: tests/unit/test_nats_creds.py)."""
    return str(Operator().account("APP").write_creds(tmp_path / "tap.creds"))


def _with_creds(nats: dict[str, str], creds_file: str) -> dict[str, str]:
    return {key: creds_file if value == CREDS else value for key, value in nats.items()}


@pytest.mark.parametrize(
    ("nats", "problems"),
    [
        ({"insecure_skip_verify": True}, ["nats.insecure_skip_verify: requires nats.secure=true"]),
        ({"ca_file": "/ca"}, ["nats.ca_file: requires nats.secure=true"]),
        (
            {"cert_file": "/c", "key_file": "/k"},
            [
                "nats.cert_file: requires nats.secure=true",
                "nats.key_file: requires nats.secure=true",
            ],
        ),
        (
            {"secure": True, "cert_file": "/c"},
            ["nats.cert_file: nats.cert_file and nats.key_file must be configured together"],
        ),
        (
            {"secure": True, "key_file": "/k"},
            ["nats.cert_file: nats.cert_file and nats.key_file must be configured together"],
        ),
        (
            {"cert_file": "/c"},
            [
                "nats.cert_file: requires nats.secure=true",
                "nats.cert_file: nats.cert_file and nats.key_file must be configured together",
            ],
        ),
    ],
)
def test_nats_tls_flags(nats: dict[str, Any], problems: list[str]) -> None:
    assert errors_of({"nats": nats}) == problems


def test_nats_tls_complete_is_fine() -> None:
    nats = {
        "secure": True,
        "insecure_skip_verify": True,
        "ca_file": "/ca",
        "cert_file": "/c",
        "key_file": "/k",
    }
    assert errors_of({"nats": nats}) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stream", "'has space'"),
        ("stream", "'a.b'"),
        ("stream", "'a*'"),
        ("stream", "'a>'"),
        ("stream", "''"),
        ("stream", "'x/y'"),
    ],
)
def test_stream_name(tmp_path: Path, key: str, value: str) -> None:
    problem = only_problem(tmp_path, yaml_of("nats", key, value))
    assert problem.startswith("nats.stream: ")
    assert "is not a valid stream name (letters, digits, '_' and '-' only)" in problem


def test_stream_name_is_trimmed(tmp_path: Path) -> None:
    assert load_text(tmp_path, yaml_of("nats", "stream", "' My_Stream-1 '")).config.nats.stream == (
        "My_Stream-1"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ensemble.tap", "ensemble.tap"),
        ("acme", "acme"),
        ("acme.events.", "acme.events"),
        (" acme.v1 ", "acme.v1"),
        ("a-b.c_d.0", "a-b.c_d.0"),
        ("ensemble.dlqx", "ensemble.dlqx"),
        ("ensemble.other", "ensemble.other"),
    ],
)
def test_subject_prefix_valid(tmp_path: Path, value: str, expected: str) -> None:
    loaded = load_text(tmp_path, yaml_of("nats", "subject_prefix", f"'{value}'"))
    assert loaded.config.nats.subject_prefix == expected


@pytest.mark.parametrize(
    "value",
    ["", "Ensemble.Tap", "a b", "a.*", "a.>", "a..b", ".a", "a\tb", "tap.Événements", "a/b"],
)
def test_subject_prefix_syntax(tmp_path: Path, value: str) -> None:
    problem = only_problem(tmp_path, yaml_of("nats", "subject_prefix", f'"{value}"'))
    assert problem.startswith("nats.subject_prefix: ")
    assert "must be dot-separated lower-case tokens of [a-z0-9_-]" in problem


@pytest.mark.parametrize("value", ["ensemble", "ensemble.dlq", "ensemble.dlq.x", "ensemble.dlq."])
def test_subject_prefix_overlapping_dlq(tmp_path: Path, value: str) -> None:
    problem = only_problem(tmp_path, yaml_of("nats", "subject_prefix", f"'{value}'"))
    assert problem.startswith("nats.subject_prefix: ")
    assert "overlaps the dead-letter subjects ensemble.dlq.>" in problem


# ------------------------------------------------------------------------- numeric ranges


RANGES: list[tuple[str, str, str, str]] = [
    # section, key, bad value, message fragment
    ("server", "port", "0", "greater than or equal to 1"),
    ("server", "port", "65536", "less than or equal to 65535"),
    ("server", "max_body_size", "0", "greater than or equal to 1"),
    ("server", "max_body_size", "67108865", "less than or equal to 67108864"),
    ("server", "read_timeout", "0s", "greater than 0"),
    ("server", "write_timeout", "0", "greater than 0"),
    ("server", "read_header_timeout", "0s", "greater than 0"),
    ("server", "idle_timeout", "0s", "greater than 0"),
    ("server", "max_connections", "-1", "greater than or equal to 0"),
    ("server", "max_connections", "1000001", "less than or equal to 1000000"),
    ("server", "admin_replay_max_limit", "0", "greater than or equal to 1"),
    ("server", "admin_replay_max_limit", "100001", "less than or equal to 100000"),
    ("server", "admin_replay_job_ttl", "0s", "greater than 0"),
    ("server", "admin_replay_job_max_jobs", "0", "greater than or equal to 1"),
    ("server", "admin_replay_job_max_jobs", "100001", "less than or equal to 100000"),
    ("server", "admin_replay_job_timeout", "-1s", "greater than 0"),
    ("server", "admin_replay_max_concurrent_jobs", "0", "greater than or equal to 1"),
    ("server", "admin_replay_max_concurrent_jobs", "101", "less than or equal to 100"),
    ("server", "admin_replay_reason_min_length", "0", "greater than 0"),
    ("server", "admin_replay_max_queued_per_ip", "-1", "greater than or equal to 0"),
    ("server", "admin_replay_max_queued_per_ip", "100001", "less than or equal to 100000"),
    ("server", "admin_replay_max_queued_per_token", "-1", "greater than or equal to 0"),
    ("server", "admin_replay_max_queued_per_token", "100001", "less than or equal to 100000"),
    ("server", "admin_rate_limit_per_sec", "0", "greater than 0"),
    ("server", "admin_rate_limit_burst", "0", "greater than 0"),
    ("server", "admin_mtls_client_cert_header", "''", "at least 1 character"),
    ("nats", "max_age", "0s", "greater than 0"),
    ("nats", "connect_timeout", "0s", "greater than 0"),
    ("nats", "reconnect_wait", "0s", "greater than 0"),
    ("nats", "max_reconnects", "-2", "greater than or equal to -1"),
    ("nats", "startup_timeout", "0s", "greater than 0"),
    ("nats", "publish_timeout", "0s", "greater than 0"),
    ("nats", "publish_max_retries", "-1", "greater than or equal to 0"),
    ("nats", "publish_max_retries", "1001", "less than or equal to 1000"),
    ("nats", "publish_retry_backoff", "0s", "greater than 0"),
    ("nats", "stream_replicas", "0", "greater than 0"),
    ("nats", "stream_max_consumers", "-1", "greater than or equal to 0"),
    ("nats", "stream_max_msgs_per_subject", "-1", "greater than or equal to 0"),
    ("nats", "stream_max_msgs", "-1", "greater than or equal to 0"),
    ("nats", "stream_max_bytes", "-1", "greater than or equal to 0"),
    ("nats", "stream_max_msg_size", "-1", "greater than or equal to 0"),
    ("nats", "stream_max_msg_size", "2147483648", "less than or equal to 2147483647"),
    ("clickhouse", "max_open_conns", "0", "greater than 0"),
    ("clickhouse", "max_idle_conns", "-1", "greater than or equal to 0"),
    ("clickhouse", "conn_max_lifetime", "-1s", "greater than or equal to 0"),
    ("clickhouse", "batch_size", "0", "greater than 0"),
    ("clickhouse", "flush_interval", "0s", "greater than 0"),
    ("clickhouse", "consumer_max_deliver", "-2", "greater than or equal to -1"),
    ("clickhouse", "consumer_backoff", "[1s, 0s]", "greater than 0"),
]


@pytest.mark.parametrize(("section", "key", "value", "fragment"), RANGES)
def test_ranges(tmp_path: Path, section: str, key: str, value: str, fragment: str) -> None:
    problem = only_problem(tmp_path, yaml_of(section, key, value))
    assert problem.startswith(f"{section}.{key}"), problem
    assert fragment in problem


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("server", "port", "1"),
        ("server", "port", "65535"),
        ("server", "max_body_size", "67108864"),
        ("server", "max_connections", "0"),
        ("server", "max_connections", "1000000"),
        ("server", "admin_replay_max_queued_per_ip", "0"),
        ("server", "admin_replay_max_queued_per_token", "0"),
        ("server", "admin_replay_max_concurrent_jobs", "100"),
        ("nats", "max_reconnects", "-1"),
        ("nats", "max_reconnects", "0"),
        ("nats", "publish_max_retries", "0"),
        ("nats", "publish_max_retries", "1000"),
        ("nats", "stream_max_msg_size", "2147483647"),
        ("clickhouse", "max_idle_conns", "0"),
        ("clickhouse", "conn_max_lifetime", "0"),
        ("clickhouse", "consumer_max_deliver", "-1"),
    ],
)
def test_range_bounds_accepted(tmp_path: Path, section: str, key: str, value: str) -> None:
    load_text(tmp_path, yaml_of(section, key, value))


def test_range_problem_shows_the_given_value(tmp_path: Path) -> None:
    assert only_problem(tmp_path, yaml_of("server", "port", "0")) == (
        "server.port: Input should be greater than or equal to 1 (got 0)"
    )


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, yaml_of("server", "admin_token", "[not, a, string]"))
    assert problem.startswith("server.admin_token: ")
    problem = only_problem(tmp_path, yaml_of("nats", "password", "true"))
    assert problem.startswith("nats.password: ")
    assert "True" not in problem


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("port", "http", "valid integer"),
        ("port", "8080.5", "valid integer"),
        ("admin_mtls_required", "maybe", "valid boolean"),
        ("admin_rate_limit_per_sec", "fast", "valid number"),
        ("trusted_proxies", "{a: b}", "valid list"),
    ],
)
def test_wrong_types(tmp_path: Path, key: str, value: str, fragment: str) -> None:
    problem = only_problem(tmp_path, yaml_of("server", key, value))
    assert problem.startswith(f"server.{key}: ")
    assert fragment in problem


# ---------------------------------------------------------------------------- durations


def test_replay_claim_ttl(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "server:\n  admin_replay_claim_ttl: 500ms\n")
    assert problem == (
        "server.admin_replay_claim_ttl: must be at least 1s "
        "(the claim is renewed every third of it) (got '500ms')"
    )
    text = "server:\n  admin_replay_store_backend: NATS\n  admin_replay_claim_ttl: 2s\n"
    server = load_text(tmp_path, text).config.server
    assert (server.admin_replay_store_backend, server.admin_replay_claim_ttl) == ("nats", 2)
    assert Config().server.admin_replay_claim_ttl == 30


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("60", "duration 60 needs a unit, e.g. 60s or 60ms"),
        ("1.5", "duration 1.5 needs a unit"),
        ("true", "expected a duration such as 5s, got a boolean"),
        ("'5 s'", "invalid duration '5 s'"),
        ("fast", "invalid duration 'fast'"),
        ("''", "duration is empty"),
    ],
)
def test_duration_keys_need_a_unit(tmp_path: Path, value: str, fragment: str) -> None:
    problem = only_problem(tmp_path, yaml_of("nats", "connect_timeout", value))
    assert problem.startswith("nats.connect_timeout: ")
    assert fragment in problem


def test_durations_with_units(tmp_path: Path) -> None:
    nats = load_text(
        tmp_path, "nats:\n  max_age: 7d\n  connect_timeout: 1m30s\n  publish_retry_backoff: 250ms\n"
    ).config.nats
    assert nats.max_age == 604_800
    assert nats.connect_timeout == 90
    assert nats.publish_retry_backoff == 0.25


def test_connection_deadlines_and_limit(tmp_path: Path) -> None:
    server = load_text(
        tmp_path,
        "server:\n  read_header_timeout: 750ms\n  idle_timeout: 2m\n  max_connections: 0\n",
    ).config.server
    assert server.read_header_timeout == 0.75
    assert server.idle_timeout == 120
    assert server.max_connections == 0  # no limit
    assert Config().server.max_connections == 1024


def test_connection_keys_from_the_environment(tmp_path: Path) -> None:
    env = {"TAP_SERVER_READ_HEADER_TIMEOUT": "2s", "TAP_SERVER_MAX_CONNECTIONS": "64"}
    server = load_text(tmp_path, "", env).config.server
    assert (server.read_header_timeout, server.max_connections) == (2, 64)


def test_zero_duration_where_zero_is_allowed(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "clickhouse:\n  conn_max_lifetime: 0\n")
    assert loaded.config.clickhouse.conn_max_lifetime == 0


# ------------------------------------------------------------------------------- enums


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("nats", "stream_storage", "MEMORY", "memory"),
        ("nats", "stream_storage", " File ", "file"),
        ("nats", "stream_discard", "New", "new"),
        ("nats", "stream_compression", "S2", "s2"),
        ("server", "admin_replay_store_backend", "SQLite", "sqlite"),
        ("vault", "auth_method", "Token", "token"),
        ("state", "backend", "SQLITE", "sqlite"),
    ],
)
def test_enums_are_case_insensitive(
    tmp_path: Path, section: str, key: str, value: str, expected: str
) -> None:
    loaded = load_text(tmp_path, yaml_of(section, key, f"'{value}'"))
    assert getattr(getattr(loaded.config, section), key) == expected


@pytest.mark.parametrize(("value", "expected"), [("DEBUG", "debug"), ("Warning", "warning")])
def test_log_level_case_insensitive(tmp_path: Path, value: str, expected: str) -> None:
    assert load_text(tmp_path, f"log_level: {value}\n").config.log_level == expected


@pytest.mark.parametrize(
    ("text", "path", "allowed"),
    [
        ("nats:\n  stream_storage: disk\n", "nats.stream_storage", "'file' or 'memory'"),
        ("nats:\n  stream_discard: oldest\n", "nats.stream_discard", "'old' or 'new'"),
        ("nats:\n  stream_compression: gzip\n", "nats.stream_compression", "'none' or 's2'"),
        (
            "server:\n  admin_replay_store_backend: redis\n",
            "server.admin_replay_store_backend",
            "'memory', 'sqlite' or 'nats'",
        ),
        (
            "vault:\n  auth_method: ldap\n",
            "vault.auth_method",
            "'kubernetes', 'token' or 'approle'",
        ),
        ("state:\n  backend: postgres\n", "state.backend", "'memory', 'sqlite' or 'nats'"),
        ("log_level: trace\n", "log_level", "'debug', 'info', 'warning' or 'error'"),
    ],
)
def test_enum_values(tmp_path: Path, text: str, path: str, allowed: str) -> None:
    problem = only_problem(tmp_path, text)
    assert problem.startswith(f"{path}: Input should be {allowed}")


# --------------------------------------------------------------------------- server admin


def test_secondary_admin_token_requires_primary() -> None:
    assert errors_of({"server": {"admin_token_secondary": "b"}}) == [
        "server.admin_token_secondary: requires server.admin_token"
    ]


def test_admin_tokens_must_differ() -> None:
    assert errors_of({"server": {"admin_token": "same", "admin_token_secondary": "same"}}) == [
        "server.admin_token_secondary: server.admin_token and admin_token_secondary must differ"
    ]


def test_admin_token_combinations_that_are_fine() -> None:
    assert errors_of({"server": {"admin_token": "a"}}) == []
    assert errors_of({"server": {"admin_token": "a", "admin_token_secondary": "b"}}) == []
    assert errors_of({"server": {"admin_token_read": "r", "admin_token_replay": "r"}}) == []


@pytest.mark.parametrize("key", ["admin_allowed_cidrs", "trusted_proxies"])
@pytest.mark.parametrize(
    "good", ["10.0.0.0/8", "192.168.1.1", "10.1.2.3/8", "::1/128", "2001:db8::/32", "0.0.0.0/0"]
)
def test_cidrs_valid(tmp_path: Path, key: str, good: str) -> None:
    loaded = load_text(tmp_path, yaml_of("server", key, f"['{good}']"))
    assert getattr(loaded.config.server, key) == [good]


@pytest.mark.parametrize("key", ["admin_allowed_cidrs", "trusted_proxies"])
@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-a-cidr", "300.1.1.1", "::1/129", ""])
def test_cidrs_invalid(tmp_path: Path, key: str, bad: str) -> None:
    problem = only_problem(tmp_path, yaml_of("server", key, f"['10.0.0.0/8', '{bad}']"))
    assert problem == f"server.{key}: contains invalid CIDR {bad!r}"


def test_cidrs_from_comma_string_are_each_checked(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, yaml_of("server", "admin_allowed_cidrs", "'10.0.0.0/8, x'"))
    assert problem == (
        "server.admin_allowed_cidrs: contains invalid CIDR 'x' (got '10.0.0.0/8, x')"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/webhooks", "/webhooks"),
        ("webhooks/", "/webhooks"),
        ("webhooks", "/webhooks"),
        ("/webhooks/", "/webhooks"),
        ("/webhooks///", "/webhooks"),
        (" /hooks ", "/hooks"),
        ("/api/v1/hooks", "/api/v1/hooks"),
        ("/administration", "/administration"),
    ],
)
def test_base_path_normalisation(tmp_path: Path, value: str, expected: str) -> None:
    loaded = load_text(tmp_path, yaml_of("server", "base_path", f"'{value}'"))
    assert loaded.config.server.base_path == expected


@pytest.mark.parametrize("value", ["/", "", "   ", "//"])
def test_base_path_root_rejected(tmp_path: Path, value: str) -> None:
    problem = only_problem(tmp_path, yaml_of("server", "base_path", f"'{value}'"))
    assert problem.startswith(
        "server.base_path: must name a path such as /webhooks (the root path is not allowed)"
    )


@pytest.mark.parametrize("value", ["/a//b", "/a/./b", "/../x", "/a/.."])
def test_base_path_must_be_clean(tmp_path: Path, value: str) -> None:
    problem = only_problem(tmp_path, yaml_of("server", "base_path", f"'{value}'"))
    assert problem.startswith(f"server.base_path: {value!r} is not a clean path")


@pytest.mark.parametrize("value", ["/admin", "admin/", "/livez", "/readyz", "/metrics/x"])
def test_base_path_must_not_collide_with_own_routes(tmp_path: Path, value: str) -> None:
    problem = only_problem(tmp_path, yaml_of("server", "base_path", f"'{value}'"))
    assert problem.startswith(f"server.base_path: {value!r} collides with the service's own routes")


# ---------------------------------------------------------------------------- providers


@pytest.mark.parametrize("name", ["acme", "my_app", "my-app", "a1", "0x", "a" * 64])
def test_provider_name_valid(tmp_path: Path, name: str) -> None:
    loaded = load_text(tmp_path, f"providers:\n  {name}:\n    secret: s\n")
    assert name in loaded.config.providers


@pytest.mark.parametrize(
    "name", ["Acme", "ACME", "my app", "-acme", "_acme", "ac.me", "a" * 65, "ünï", "'a/b'"]
)
def test_provider_name_invalid(tmp_path: Path, name: str) -> None:
    problem = only_problem(tmp_path, f"providers:\n  {name}:\n    secret: s\n")
    key = name.strip("'")
    assert problem == (
        f"providers.{key}: provider names must be lower-case letters, digits, '_' or '-' "
        "(at most 64), because the webhook route matches the lower-cased path segment"
    )


@pytest.mark.parametrize("key", ["t1", "Tenant-A", "a.b_c-d", "0", "a" * 128])
def test_tenant_key_valid(tmp_path: Path, key: str) -> None:
    loaded = load_text(
        tmp_path, f"providers:\n  acme:\n    secret: s\n    tenants:\n      {key}: {{}}\n"
    )
    assert key in loaded.config.providers["acme"].tenants


@pytest.mark.parametrize("key", ["'-t'", "'.t'", "'_t'", "'a b'", "'a/b'", "'a:b'", "a" * 129])
def test_tenant_key_invalid(tmp_path: Path, key: str) -> None:
    problem = only_problem(
        tmp_path, f"providers:\n  acme:\n    secret: s\n    tenants:\n      {key}: {{}}\n"
    )
    bare = key.strip("'")
    assert problem == (
        f"providers.acme.tenants: tenant key {bare!r} must match "
        "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ (letters, digits, '.', '_', '-'; "
        "at most 128 characters)"
    )


def test_webhook_secret_required() -> None:
    assert errors_of({"providers": {"acme": {}}}) == [
        "providers.acme: webhook mode requires secret (base or tenant override)"
    ]
    assert errors_of({"providers": {"acme": {"mode": "webhook+poll"}}})[0] == (
        "providers.acme: webhook mode requires secret (base or tenant override)"
    )


def test_null_provider_needs_a_secret_too(tmp_path: Path) -> None:
    assert only_problem(tmp_path, "providers:\n  stripe:\n") == (
        "providers.stripe: webhook mode requires secret (base or tenant override)"
    )


def test_hubspot_secret_or_client_secret() -> None:
    assert errors_of({"providers": {"hubspot": {}}}) == [
        "providers.hubspot: webhook mode requires secret or client_secret (base or tenant override)"
    ]
    assert errors_of({"providers": {"hubspot": {"client_secret": "cs"}}}) == []
    assert errors_of({"providers": {"hubspot": {"secret": "s"}}}) == []
    assert errors_of({"providers": {"hubspot": {"client_secret": "   "}}}) != []


def test_client_secret_is_not_a_webhook_secret_for_others() -> None:
    assert errors_of({"providers": {"stripe": {"client_secret": "cs"}}}) == [
        "providers.stripe: webhook mode requires secret (base or tenant override)"
    ]


def test_tenant_only_secrets_satisfy_the_requirement() -> None:
    assert errors_of({"providers": {"acme": {"tenants": {"t1": {"secret": "s"}, "t2": {}}}}}) == []
    assert errors_of({"providers": {"hubspot": {"tenants": {"t1": {"client_secret": "cs"}}}}}) == []
    # a tenant client_secret only counts for hubspot
    assert errors_of({"providers": {"acme": {"tenants": {"t1": {"client_secret": "cs"}}}}}) == [
        "providers.acme: webhook mode requires secret (base or tenant override)"
    ]


def test_poll_mode_needs_no_webhook_secret() -> None:
    poll = {"mode": "poll", "base_url": "https://x.example.com", "access_token": "t"}
    assert errors_of({"providers": {"salesforce": poll}}) == []


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("webhook", "webhook"),
        ("WEBHOOK", "webhook"),
        ("", "webhook"),
        ("poll", "poll"),
        ("POLL", "poll"),
        (" Poll ", "poll"),
        ("webhook+poll", "webhook+poll"),
        ("Webhook + Poll", "webhook+poll"),
        ("poll+webhook", "webhook+poll"),
    ],
)
def test_mode_values(mode: str, expected: str) -> None:
    config = cfg({"providers": {"hubspot": {"mode": mode, "client_secret": "s"}}})
    assert config.providers["hubspot"].mode == expected


def test_mode_missing_is_webhook() -> None:
    provider = cfg({"providers": {"acme": {"secret": "s"}}}).providers["acme"]
    assert provider.mode == "webhook"
    assert provider.webhook_enabled
    assert not provider.poll_enabled


@pytest.mark.parametrize("mode", ["nowebhook", "polling", "webhook,poll", "push", "both"])
def test_mode_invalid(tmp_path: Path, mode: str) -> None:
    problem = only_problem(tmp_path, f"providers:\n  acme:\n    secret: s\n    mode: '{mode}'\n")
    assert problem.startswith(
        "providers.acme.mode: Input should be 'webhook', 'poll' or 'webhook+poll'"
    )


@pytest.mark.parametrize("name", ["acme", "stripe", "github", "linear", "shopify"])
@pytest.mark.parametrize("mode", ["poll", "webhook+poll"])
def test_poll_mode_only_for_pollers(name: str, mode: str) -> None:
    errors = errors_of({"providers": {name: {"mode": mode, "secret": "s"}}})
    assert errors == [
        f"providers.{name}.mode: poll mode is not supported for {name} (pollers exist for "
        "hubspot, notion, quickbooks, salesforce)"
    ]


@pytest.mark.parametrize("name", ["hubspot", "salesforce", "quickbooks", "notion"])
def test_poll_mode_is_served_without_warning(name: str) -> None:
    poll = {"mode": "poll", "base_url": "https://x.example.com", "access_token": "t"}
    if name == "quickbooks":
        poll["realm_id"] = "123"
    assert warnings_of({"providers": {name: poll}}) == []


@pytest.mark.parametrize("name", ["salesforce", "quickbooks", "notion"])
def test_generic_verifier_warning_for_poll_providers(name: str) -> None:
    assert warnings_of({"providers": {name: {"secret": "s"}}}) == [
        f"providers.{name}: receives webhooks through the generic HMAC verifier (X-Signature)"
    ]


@pytest.mark.parametrize("name", ["stripe", "github", "hubspot", "linear", "shopify", "acme"])
def test_no_warning_for_plain_webhook_providers(name: str) -> None:
    assert warnings_of({"providers": {name: {"secret": "s"}}}) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("events", ["push"]),
        ("events", "push,pull"),
        ("app_id", "123"),
        ("webhook_verifier_token", "t"),
    ],
)
def test_inert_keys_warn(key: str, value: Any) -> None:
    warnings = warnings_of({"providers": {"github": {"secret": "s", key: value}}})
    assert warnings == [f"providers.github.{key}: is accepted for compatibility but has no effect"]


def test_inert_keys_warn_through_load(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "providers:\n  hubspot:\n    client_secret: s\n    app_id: 1\n    mode: webhook+poll\n"
        "    base_url: https://api.hubapi.com\n    api_key: k\n",
    )
    assert loaded.warnings == [
        "providers.hubspot.app_id: is accepted for compatibility but has no effect",
        EMBEDDED_BROKER,
    ]


@pytest.mark.parametrize(
    ("name", "versions"),
    [
        ("hubspot", ["v3"]),
        ("hubspot", ["v1", "v2", "v3"]),
        ("github", ["sha256"]),
        ("github", ["sha1", "sha256", "sha512"]),
    ],
)
def test_signature_versions_valid(name: str, versions: list[str]) -> None:
    config = cfg({"providers": {name: {"secret": "s", "signature_versions": versions}}})
    assert check(config, REGISTRY)[0] == []
    assert config.providers[name].signature_versions == versions


@pytest.mark.parametrize(
    ("name", "versions", "allowed"),
    [
        ("hubspot", ["v4"], "v1|v2|v3"),
        ("hubspot", ["sha256"], "v1|v2|v3"),
        ("hubspot", [], "v1|v2|v3"),
        ("hubspot", "", "v1|v2|v3"),
        ("github", ["md5"], "sha1|sha256|sha512"),
        ("github", ["sha256", "v3"], "sha1|sha256|sha512"),
        ("github", [], "sha1|sha256|sha512"),
    ],
)
def test_signature_versions_invalid(name: str, versions: Any, allowed: str) -> None:
    errors = errors_of({"providers": {name: {"secret": "s", "signature_versions": versions}}})
    assert errors == [f"providers.{name}.signature_versions: must be a non-empty list of {allowed}"]


@pytest.mark.parametrize("name", ["stripe", "linear", "shopify", "acme", "salesforce"])
def test_signature_versions_only_for_hubspot_and_github(name: str) -> None:
    errors = errors_of({"providers": {name: {"secret": "s", "signature_versions": ["v3"]}}})
    assert errors == [
        f"providers.{name}.signature_versions: is only supported for hubspot and github"
    ]


def test_signature_versions_unset_is_fine() -> None:
    config = cfg({"providers": {"github": {"secret": "s", "signature_versions": None}}})
    assert config.providers["github"].signature_versions is None
    assert check(config, REGISTRY)[0] == []


# ---------------------------------------------------------------- tenant/provider ranges


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("query_per_page", "0", "greater than 0"),
        ("poll_interval", "0s", "greater than 0"),
        ("poll_interval", "60", "needs a unit"),
        ("poll_rate_limit_per_sec", "0", "greater than 0"),
        ("poll_burst", "0", "greater than 0"),
        ("poll_failure_budget", "-1", "greater than or equal to 0"),
        ("poll_circuit_break_duration", "-1s", "greater than or equal to 0"),
        ("poll_jitter_ratio", "-0.1", "greater than or equal to 0"),
        ("poll_jitter_ratio", "0.96", "less than or equal to 0.95"),
        ("poll_max_pages", "-1", "greater than or equal to 0"),
        ("poll_max_requests", "-1", "greater than or equal to 0"),
        ("poll_lookback", "-5m", "greater than or equal to 0"),
    ],
)
def test_poll_tuning_ranges(tmp_path: Path, key: str, value: str, fragment: str) -> None:
    base = f"providers:\n  hubspot:\n    mode: poll\n    {key}: {value}\n"
    problem = only_problem(tmp_path, base)
    assert problem.startswith(f"providers.hubspot.{key}: ")
    assert fragment in problem
    tenant = (
        f"providers:\n  hubspot:\n    mode: poll\n    tenants:\n      t1:\n        {key}: {value}\n"
    )
    problem = only_problem(tmp_path, tenant)
    assert problem.startswith(f"providers.hubspot.tenants.t1.{key}: ")
    assert fragment in problem


def test_poll_tuning_zero_is_allowed_where_documented(tmp_path: Path) -> None:
    provider = load_text(
        tmp_path,
        """
        providers:
          hubspot:
            mode: poll
            base_url: https://api.hubapi.com
            access_token: t
            poll_failure_budget: 0
            poll_circuit_break_duration: 0
            poll_jitter_ratio: 0
            poll_max_pages: 0
            poll_max_requests: 0
            poll_lookback: 0s
        """,
    ).config.providers["hubspot"]
    assert provider.poll_failure_budget == 0
    assert provider.poll_jitter_ratio == 0
    assert provider.poll_max_pages == 0


# ---------------------------------------------------------------------- clickhouse, vault


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("clickhouse:\n  addr: clickhouse:8123\n", "server"),
        ("clickhouse:\n  backend: embedded\n", "embedded"),
        ("clickhouse:\n  backend: SERVER\n  addr: ch\n", "server"),
    ],
)
def test_clickhouse_sink_enabled(tmp_path: Path, text: str, mode: str) -> None:
    """The sink's own rules are in tests/unit/test_sink_config.py."""
    assert load_text(tmp_path, text).config.clickhouse.mode == mode


def test_clickhouse_blank_addr_is_disabled(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "clickhouse:\n  addr: '  '\n  database: other\n")
    assert loaded.config.clickhouse.enabled is False


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("providers:\n  acme:\n    secret: vault://kv/acme#secret\n", "providers.acme.secret"),
        (
            "providers:\n  acme:\n    secret: [a, ' vault://kv/x#y']\n",
            "providers.acme.secret[1]",
        ),
        ("server:\n  admin_token: vault://kv/admin#token\n", "server.admin_token"),
        ("nats:\n  password: vault://kv/n#p\n  username: u\n", "nats.password"),
        (
            "providers:\n  acme:\n    secret: s\n    tenants:\n      t1:\n"
            "        access_token: vault://kv/t#a\n",
            "providers.acme.tenants.t1.access_token",
        ),
    ],
)
def test_vault_references_are_found_anywhere(tmp_path: Path, text: str, path: str) -> None:
    """Every reference is resolved (tests/integration/test_vault.py); without an address the
    problem says what is missing."""
    assert [found for found, _ in vault.references(yaml.safe_load(text))] == [path]
    assert problems_of(tmp_path, text) == [
        "vault.address: must be set (or VAULT_ADDR) when vault:// references are used"
    ]


def test_the_vault_section_cannot_come_from_vault(tmp_path: Path) -> None:
    text = "vault:\n  token: vault://loop\nserver:\n  admin_token: vault://kv/a#b\n"
    assert problems_of(tmp_path, text) == [
        "vault.token: the vault section cannot itself come from Vault"
    ]


def test_vault_section_itself_is_accepted(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "vault:\n  address: https://vault:8200\n  auth_method: token\n  token: hvs.x\n",
    )
    assert loaded.config.vault.address == "https://vault:8200"


# ---------------------------------------------------------------- many problems at once


def test_many_model_problems_reported_together(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        log_level: loud
        server:
          port: 0
          prot: 1
          base_path: /
        nats:
          stream_storage: disk
          max_age: 60
        providers:
          acme:
            secret: s
            poll_jitter_ratio: 2
        """,
    )
    assert [problem.split(":", 1)[0] for problem in problems] == [
        "log_level",
        "server.port",
        "server.base_path",
        "server.prot",
        "providers.acme.poll_jitter_ratio",
        "nats.max_age",
        "nats.stream_storage",
    ]


def test_many_rule_problems_reported_together(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        server:
          admin_token_secondary: x
        nats:
          url: http://x
          password: p
          insecure_skip_verify: true
        providers:
          Bad:
            secret: s
          stripe: {}
          linear:
            secret: s
            mode: poll
          github:
            secret: s
            signature_versions: [md5]
        clickhouse:
          addr: ch:0
        """,
    )
    assert problems == [
        'nats.url: endpoint "http://x" has unsupported scheme "http" '
        "(expected one of nats|tls|ws|wss)",
        "nats.password: requires nats.username",
        "nats.insecure_skip_verify: requires nats.secure=true",
        "server.admin_token_secondary: requires server.admin_token",
        "providers.Bad: provider names must be lower-case letters, digits, '_' or '-' "
        "(at most 64), because the webhook route matches the lower-cased path segment",
        "providers.stripe: webhook mode requires secret (base or tenant override)",
        "providers.linear.mode: poll mode is not supported for linear (pollers exist for "
        "hubspot, notion, quickbooks, salesforce)",
        "providers.github.signature_versions: must be a non-empty list of sha1|sha256|sha512",
        'clickhouse.addr: entry "ch:0" has invalid port: port 0 must be in range 1..65535',
    ]


def test_every_problem_starts_with_its_key_path(tmp_path: Path) -> None:
    text = (
        "nats:\n  url: ''\n  token: t\n  username: u\n"
        "server:\n  admin_token: a\n  admin_token_secondary: a\n"
    )
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={}, providers=REGISTRY)
    for problem in info.value.problems:
        assert problem.split(":", 1)[0] in {
            "nats.url",
            "nats.token",
            "server.admin_token_secondary",
        }
    assert len(info.value.problems) == 3
