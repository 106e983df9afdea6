"""The console overview's last hour (admin/history.py): read from the service's own metrics
exposition, counters as rates between two samples, gauges as they are, a bounded window."""

from __future__ import annotations

from prometheus_client import generate_latest

from ensemble_tap.admin.history import SERIES, MetricsHistory, read_exposition
from ensemble_tap.observability import Metrics


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_the_exposition_is_read_into_the_totals_the_series_need() -> None:
    metrics = Metrics()
    metrics.webhooks_received.labels("acme", "202").inc(7)
    metrics.webhooks_received.labels("stripe", "401").inc(2)
    metrics.webhooks_received.labels("acme", "503").inc(1)
    metrics.publish_failures.labels("acme").inc(1)
    metrics.dlq_records.labels("verify").inc(2)
    metrics.clickhouse_consumer_lag.set(4.5)
    reading = read_exposition(exposition(metrics))
    assert reading["webhooks"] == 10
    assert (reading["webhooks_2xx"], reading["webhooks_4xx"], reading["webhooks_5xx"]) == (7, 2, 1)
    assert (reading["publish_failures"], reading["dlq_records"]) == (1, 2)
    assert reading["sink_lag_seconds"] == 4.5


def test_counters_become_rates_and_a_reset_is_a_gap_not_a_negative_rate() -> None:
    history = MetricsHistory(read=_unused, resolution=10.0, span=30.0)
    history.add({"webhooks": 100.0, "pollers": 3.0}, at=1_000.0, dlq_depth=5)
    history.add({"webhooks": 400.0, "pollers": 3.0, "pollers_paused": 1.0}, at=1_010.0)
    history.add({"webhooks": 20.0}, at=1_020.0)  # a restarted worker's counters start over
    first, second, third = history.as_json()["points"]
    assert "webhooks_per_s" not in first and first["dlq_depth"] == 5
    assert second["webhooks_per_s"] == 30.0 and second["pollers_paused"] == 1.0
    assert "dlq_depth" not in second  # unknown (NATS away), not 0
    assert "webhooks_per_s" not in third
    assert set(history.as_json()["series"]) == set(SERIES)


def test_the_window_keeps_span_over_resolution_points() -> None:
    history = MetricsHistory(read=_unused, resolution=10.0, span=30.0)
    for n in range(5):
        history.add({"webhooks": float(n)}, at=1_000.0 + 10 * n)
    answer = history.as_json()
    assert len(answer["points"]) == 3 and answer["span_seconds"] == 30.0
    assert answer["points"][-1]["time"] == "1970-01-01T00:17:20Z"


async def _unused() -> bytes:
    raise AssertionError("not sampled in these tests")
