"""Merging the metrics of several processes into one exposition."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ensemble_tap.observability import Metrics
from ensemble_tap.workers.metrics import MetricsEndpoint, fetch_exposition, merge_expositions
from tests.support.configs import load_text, only_problem


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_counters_and_histograms_add_up_and_connection_state_takes_the_worst() -> None:
    primary, worker = Metrics(), Metrics()
    primary.webhooks_received.labels("acme", "accepted").inc(3)
    worker.webhooks_received.labels("acme", "accepted").inc(4)
    worker.webhooks_received.labels('we"ird\\name\n', "rejected").inc()
    primary.webhook_duration.labels("acme").observe(0.004)
    worker.webhook_duration.labels("acme").observe(0.2)
    primary.clickhouse_rows_inserted.inc(7)  # only the primary has it: unchanged
    primary.nats_connected.set(1)
    worker.nats_connected.set(0)

    merged = _samples(
        merge_expositions([generate_latest(primary.registry), generate_latest(worker.registry)])
    )

    accepted = (("provider", "acme"), ("status", "accepted"))
    assert merged[("tap_webhooks_received_total", accepted)] == 7
    weird = (("provider", 'we"ird\\name\n'), ("status", "rejected"))
    assert merged[("tap_webhooks_received_total", weird)] == 1
    bucket = "tap_webhooks_processing_duration_seconds_bucket"
    assert merged[(bucket, (("le", "0.005"), ("provider", "acme")))] == 1
    assert merged[(bucket, (("le", "+Inf"), ("provider", "acme")))] == 2
    count = merged[("tap_webhooks_processing_duration_seconds_count", (("provider", "acme"),))]
    assert count == 2
    assert merged[("tap_clickhouse_rows_inserted_total", ())] == 7
    assert merged[("tap_nats_connected", ())] == 0


def test_spool_depth_adds_up_and_its_age_is_the_oldest_of_any_process() -> None:
    primary, worker = Metrics(), Metrics()
    primary.spool_depth_events.set(2)
    worker.spool_depth_events.set(3)
    primary.spool_oldest_age.set(4.0)
    worker.spool_oldest_age.set(9.5)

    merged = _samples(
        merge_expositions([generate_latest(primary.registry), generate_latest(worker.registry)])
    )

    assert merged[("tap_spool_depth_events", ())] == 5
    assert merged[("tap_spool_oldest_age_seconds", ())] == 9.5


def test_one_exposition_merges_to_itself() -> None:
    metrics = Metrics()
    metrics.events_published.labels("acme", "deal", "updated").inc(2)
    text = generate_latest(metrics.registry)
    assert _samples(merge_expositions([text])) == _samples(text)


async def test_a_worker_endpoint_serves_its_registry_and_a_missing_one_is_skipped(
    tmp_path: Path,
) -> None:
    metrics = Metrics()
    metrics.dedup_hits.labels("acme").inc(5)
    endpoint = MetricsEndpoint(metrics.registry, tmp_path / "w.sock")
    await endpoint.start()
    try:
        text = await fetch_exposition(tmp_path / "w.sock")
    finally:
        await endpoint.stop()
    assert text is not None
    assert _samples(text)[("tap_events_dedup_hits_total", (("provider", "acme"),))] == 5
    assert not (tmp_path / "w.sock").exists()
    assert await fetch_exposition(tmp_path / "w.sock") is None


def test_workers_setting(tmp_path: Path) -> None:
    assert load_text(tmp_path, "{}").config.server.workers == 1
    assert load_text(tmp_path, "{}", {"TAP_SERVER_WORKERS": "4"}).config.server.workers == 4
    assert "server.workers" in only_problem(tmp_path, "server:\n  workers: 0\n")
