"""Poller metrics: the reference's names and labels, plus cycle outcomes and durations.

The gauges (stuck, consecutive failures, checkpoint lag, open circuit) are computed from the
status registry when Prometheus scrapes, instead of by a refresh loop every 15 s: always
current, and nothing to schedule. With leases (``state.backend: nats``) a replica reports the
gauges of the targets it polls only, so each target has one reporter across the replicas.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ensemble_tap.observability import BUCKETS
from ensemble_tap.poller.status import StatusRegistry

CYCLE_BUCKETS = (*BUCKETS, 30.0, 60.0, 120.0, 300.0)


class PollerMetrics:
    def __init__(self, registry: CollectorRegistry, status: StatusRegistry) -> None:
        labels = ["provider", "tenant"]
        self.requests = Counter(
            "tap_poller_fetch_requests_total",
            "Upstream API requests issued by pollers by provider and tenant.",
            labels,
            registry=registry,
        )
        self.pages = Counter(
            "tap_poller_fetch_pages_total",
            "Poller response pages processed by provider and tenant.",
            labels,
            registry=registry,
        )
        self.truncated = Counter(
            "tap_poller_fetch_truncated_total",
            "Poll cycles truncated due to configured fetch page/request budgets.",
            labels,
            registry=registry,
        )
        self.cycles = Counter(
            "tap_poller_cycles_total",
            "Poll cycles by provider, tenant and outcome (success, failure).",
            [*labels, "outcome"],
            registry=registry,
        )
        self.cycle_duration = Histogram(
            "tap_poller_cycle_duration_seconds",
            "Poll cycle duration by provider.",
            ["provider"],
            buckets=CYCLE_BUCKETS,
            registry=registry,
        )
        self.records = Counter(
            "tap_poller_records_total",
            "Records read by pollers by provider and result "
            "(created, updated, deleted, unchanged, skipped, dead_lettered, known).",
            ["provider", "result"],
            registry=registry,
        )
        self.token_refreshes = Counter(
            "tap_poller_token_refreshes_total",
            "OAuth token refreshes by provider, tenant and outcome.",
            [*labels, "outcome"],
            registry=registry,
        )
        registry.register(StatusCollector(status))


class StatusCollector(Collector):
    def __init__(self, status: StatusRegistry) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        labels = ["provider", "tenant"]
        stuck = GaugeMetricFamily(
            "tap_poller_stuck",
            "Poller stuck state (1 stuck, 0 healthy) by provider and tenant.",
            labels=labels,
        )
        failures = GaugeMetricFamily(
            "tap_poller_consecutive_failures",
            "Current consecutive poller failures by provider and tenant.",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "tap_poller_checkpoint_lag_seconds",
            "Seconds between now and the oldest stream checkpoint by provider and tenant.",
            labels=labels,
        )
        circuit = GaugeMetricFamily(
            "tap_poller_circuit_open",
            "Poller circuit breaker open (1) or closed (0) by provider and tenant.",
            labels=labels,
        )
        paused = GaugeMetricFamily(
            "tap_poller_paused",
            "Poller paused by an operator (1) or not (0) by provider and tenant.",
            labels=labels,
        )
        now = self.status.clock.now_ns()
        for entry in self.status.entries():
            if not entry.reported_here:  # the replica polling it reports it
                continue
            key = [entry.provider.strip(), entry.tenant_id.strip()]
            paused.add_metric(key, 0.0 if entry.control is None else 1.0)
            stuck.add_metric(key, 1.0 if entry.stuck(now) else 0.0)
            failures.add_metric(key, float(entry.consecutive_failures))
            circuit.add_metric(key, 0.0 if entry.circuit == "closed" else 1.0)
            checkpoint = entry.checkpoint_ns
            if checkpoint is not None:
                lag.add_metric(key, max(0, now - checkpoint) / 1e9)
        yield stuck
        yield failures
        yield lag
        yield circuit
        yield paused
