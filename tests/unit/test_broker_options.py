"""How NatsConfig becomes nats-py connect options (no server needed)."""

from __future__ import annotations

import ssl

from ensemble_tap.bus.connection import connect_options
from ensemble_tap.config.models import NatsConfig


def _options(servers: list[str] | None = None, **settings: object) -> dict[str, object]:
    cfg = NatsConfig.model_validate(settings)
    return connect_options(cfg, servers or ["nats://a:4222"])


def test_defaults_are_anonymous_plain_text_with_unlimited_reconnects() -> None:
    options = _options()
    assert options["name"] == "ensemble-tap"
    assert options["max_reconnect_attempts"] == -1
    assert options["reconnect_time_wait"] == 2.0
    assert options["connect_timeout"] == 5.0
    # Callbacks belong to each connection (broker, sink, tail), not to the shared options.
    for key in (
        "user",
        "password",
        "token",
        "user_credentials",
        "user_jwt_cb",
        "tls",
        "error_cb",
        "closed_cb",
    ):
        assert key not in options


def test_each_auth_mode_maps_to_its_option() -> None:
    assert _options(token="t")["token"] == "t"
    user = _options(username="u", password="p")
    assert (user["user"], user["password"]) == ("u", "p")
    creds = _options(creds_file="/etc/tap.creds")
    # Read on every connect by bus/creds.py (nats-py's own reader hangs on a bad file).
    assert callable(creds["user_jwt_cb"]) and callable(creds["signature_cb"])
    assert "user_credentials" not in creds


def test_secure_upgrades_nats_urls_to_tls_with_tls12_minimum() -> None:
    options = _options(["nats://a:4222", "nats://b:4222"], secure=True)
    assert options["servers"] == ["tls://a:4222", "tls://b:4222"]
    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_secure_upgrades_ws_urls_to_wss_as_the_go_client_does() -> None:
    options = _options(["ws://a:8080", "wss://b:8443"], secure=True)
    assert options["servers"] == ["wss://a:8080", "wss://b:8443"]
    assert isinstance(options["tls"], ssl.SSLContext)
    assert _options(["ws://a:8080"])["servers"] == ["ws://a:8080"]
    assert "tls" not in _options(["ws://a:8080"])


def test_a_tls_url_turns_tls_on_without_secure() -> None:
    assert isinstance(_options(["tls://a:4222"])["tls"], ssl.SSLContext)


def test_insecure_skip_verify_disables_verification() -> None:
    context = _options(secure=True, insecure_skip_verify=True)["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname
