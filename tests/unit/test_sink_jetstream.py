"""The consumer the sink asks for, drift detection, and the parts of a delivery it reads."""

from __future__ import annotations

from typing import Any

from ensemble_tap.bus.client import TapClient
from ensemble_tap.config.models import ClickHouseConfig
from ensemble_tap.sink.jetstream import (
    Delivery,
    Puller,
    consumer_config,
    consumer_drift,
    nak_payload,
)

SECOND = 1_000_000_000


def config(**settings: Any) -> ClickHouseConfig:
    return ClickHouseConfig.model_validate({"backend": "embedded", **settings})


def test_defaults_send_only_what_is_set() -> None:
    assert consumer_config(config(), "ensemble.tap") == {
        "durable_name": "tap_clickhouse_sink",
        "deliver_policy": "all",
        "ack_policy": "explicit",
        "replay_policy": "instant",
        "filter_subject": "ensemble.tap.>",
        "ack_wait": 30 * SECOND,
        "max_ack_pending": 1000,
    }


def test_every_consumer_key() -> None:
    desired = consumer_config(
        config(
            consumer_name="sink_b",
            consumer_ack_wait="20s",
            consumer_max_ack_pending=50,
            consumer_max_deliver=4,
            consumer_backoff=["15s", "1m"],
            consumer_max_waiting=64,
            consumer_max_request_max_bytes=1_000_000,
            batch_size=50,
        ),
        "acme.events",
    )
    assert desired["durable_name"] == "sink_b"
    assert desired["filter_subject"] == "acme.events.>"
    assert desired["ack_wait"] == 20 * SECOND
    assert desired["max_ack_pending"] == 50
    assert desired["max_deliver"] == 4
    assert desired["backoff"] == [15 * SECOND, 60 * SECOND]
    assert desired["max_waiting"] == 64
    assert desired["max_bytes"] == 1_000_000


def test_zero_max_deliver_stays_unlimited_with_a_backoff() -> None:
    """The reference capped deliveries at len(backoff), losing events in long outages."""
    assert "max_deliver" not in consumer_config(config(consumer_backoff=["15s"]), "p")


def live(**fields: Any) -> dict[str, Any]:
    """A consumer config as the server returns it for the defaults."""
    base = {
        "durable_name": "tap_clickhouse_sink",
        "deliver_policy": "all",
        "ack_policy": "explicit",
        "ack_wait": 30 * SECOND,
        "max_deliver": -1,
        "filter_subject": "p.>",
        "replay_policy": "instant",
        "max_waiting": 512,
        "max_ack_pending": 1000,
        "num_replicas": 0,
    }
    return {**base, **fields}


def test_no_drift_against_server_defaults() -> None:
    assert consumer_drift(live(), consumer_config(config(), "p")) == []


def test_drift_of_every_managed_field() -> None:
    desired = consumer_config(
        config(
            consumer_ack_wait="20s",
            consumer_max_ack_pending=500,
            consumer_max_deliver=3,
            consumer_backoff=["15s"],
            consumer_max_waiting=8,
            consumer_max_request_max_bytes=10,
        ),
        "q",
    )
    assert consumer_drift(live(), desired) == [
        "filter_subject",
        "ack_wait",
        "max_ack_pending",
        "max_deliver",
        "backoff",
        "max_waiting",
        "max_bytes",
    ]


def test_a_filter_left_out_is_drift_only_against_a_filtered_consumer() -> None:
    desired = consumer_config(config(), "p")
    del desired["filter_subject"]  # the stream's only subject (ensure_consumer decides)
    assert consumer_drift(live(), desired) == ["filter_subject"]
    unfiltered = live()
    del unfiltered["filter_subject"]
    assert consumer_drift(unfiltered, desired) == []


def test_backoff_replaces_ack_wait_on_the_server() -> None:
    desired = consumer_config(config(consumer_backoff=["15s", "1m"]), "p")
    existing = live(ack_wait=15 * SECOND, backoff=[15 * SECOND, 60 * SECOND])
    assert consumer_drift(existing, desired) == []


def delivery(reply: bytes, headers: bytes | None = None) -> Delivery:
    return Delivery(b"ensemble.tap.acme.deal.updated", reply, b"{}", headers)


def test_metadata_of_both_ack_subject_forms() -> None:
    v1 = delivery(b"$JS.ACK.ENSEMBLE_TAP.tap_clickhouse_sink.3.120.7.1764000000123456789.42")
    assert v1.metadata() == (3, 120, 1_764_000_000_123_456_789, 42)
    v2 = delivery(
        b"$JS.ACK.hub.ACCOUNTHASH.ENSEMBLE_TAP.tap_clickhouse_sink.1.5.5.1764000000000000000.0.x7"
    )
    assert v2.metadata() == (1, 5, 1_764_000_000_000_000_000, 0)
    assert delivery(b"_INBOX.abc").metadata() == (1, 0, 0, 0)
    assert v1.redelivered and not v2.redelivered
    assert v1.stored_ns() == 1_764_000_000_123_456_789


def test_first_deliveries_are_told_by_their_ack_subject_prefix() -> None:
    """The sink's shortcut: only a reply without the first-delivery prefix is parsed."""
    first = Puller(
        TapClient(), stream="ENSEMBLE_TAP", consumer="tap_clickhouse_sink", max_bytes=0
    ).first_delivery
    fresh = b"$JS.ACK.ENSEMBLE_TAP.tap_clickhouse_sink.1.120.7.1764000000123456789.42"
    again = b"$JS.ACK.ENSEMBLE_TAP.tap_clickhouse_sink.12.120.7.1764000000123456789.42"
    assert fresh.startswith(first) and not delivery(fresh).redelivered
    assert not again.startswith(first) and delivery(again).redelivered


def test_headers_are_read_on_demand() -> None:
    message = delivery(
        b"r", b"NATS/1.0\r\nNats-Msg-Id: acme:t1:evt_1\r\nX-Request-ID: req-1\r\n\r\n"
    )
    assert message.header("nats-msg-id") == "acme:t1:evt_1"
    assert message.header("X-Request-ID") == "req-1"
    assert message.header("Missing") == ""
    assert delivery(b"r").header("Nats-Msg-Id") == ""


def test_nak_with_delay() -> None:
    assert nak_payload(1.5) == b'-NAK {"delay":1500000000}'
