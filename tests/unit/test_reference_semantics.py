"""Values a reference config may hold whose meaning differs here are warned about, naming the
key and the difference (and never quoting a secret)."""

from __future__ import annotations

from pathlib import Path

from ensemble_tap.config.reference_semantics import EMBEDDED_BROKER
from tests.support.configs import load_text

URL = "nats:\n  url: nats://127.0.0.1:4222\n"


def test_a_config_without_such_values_has_no_warning(tmp_path: Path) -> None:
    assert load_text(tmp_path, URL + "providers:\n  stripe:\n    secret: whsec_1\n").warnings == []


def test_an_unbraced_variable_is_named_but_the_value_is_not_quoted(tmp_path: Path) -> None:
    text = URL + "providers:\n  stripe:\n    secret: [s3cr$ET_PART, '${PRICE}', 'a$$b']\n"
    warnings = load_text(tmp_path, text, {"PRICE": "9"}).warnings
    assert warnings == [
        "providers.stripe.secret[0]: $ET_PART is kept as written (only ${ET_PART} is expanded; "
        "the reference expanded $NAME too)"
    ]
    assert "s3cr" not in warnings[0]


def test_zeros_the_reference_read_as_defaults(tmp_path: Path) -> None:
    text = (
        "nats:\n  url: nats://127.0.0.1:4222\n  max_reconnects: 0\n  publish_max_retries: 0\n"
        "server:\n  admin_replay_max_queued_per_ip: 0\n  admin_replay_max_queued_per_token: 0\n"
        "providers:\n  hubspot:\n    client_secret: s\n    mode: webhook+poll\n"
        "    access_token: t\n    base_url: https://api.hubapi.com\n    poll_failure_budget: 0\n"
        "    tenants:\n      acme:\n        poll_failure_budget: 0\n"
    )
    warnings = load_text(tmp_path, text).warnings
    assert [warning.split(": 0 means ")[0] for warning in warnings] == [
        "nats.max_reconnects",
        "nats.publish_max_retries",
        "server.admin_replay_max_queued_per_ip",
        "server.admin_replay_max_queued_per_token",
        "providers.hubspot.poll_failure_budget",
        "providers.hubspot.tenants.acme.poll_failure_budget",
    ]
    assert warnings[0] == (
        "nats.max_reconnects: 0 means no reconnect after a disconnect; the reference read 0 as "
        "-1 (reconnect forever): set -1 for that"
    )


def test_no_nats_url_runs_the_embedded_server_and_says_so(tmp_path: Path) -> None:
    assert load_text(tmp_path, "log_level: info\n").warnings == [EMBEDDED_BROKER]
