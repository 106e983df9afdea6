"""Prometheus metrics (names and labels of the reference's catalogue) and JSON logging."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# The Go client's default buckets; prometheus_client's defaults differ.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class Metrics:
    """Every metric of the service, registered on one registry (one per app instance)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self._webhook_metrics(r)
        self._nats_metrics(r)
        self._admin_metrics(r)
        self._sink_metrics(r)
        self._spool_metrics(r)
        self._reconcile_metrics(r)

    def _webhook_metrics(self, r: CollectorRegistry) -> None:
        """Webhook handling, its HTTP connections and secret reloads."""
        self.webhooks_received = Counter(
            "tap_webhooks_received_total",
            "Webhook requests by provider and outcome.",
            ["provider", "status"],
            registry=r,
        )
        self.webhook_duration = Histogram(
            "tap_webhooks_processing_duration_seconds",
            "Webhook handling latency.",
            ["provider"],
            buckets=BUCKETS,
            registry=r,
        )
        self.verification_failures = Counter(
            "tap_webhooks_verification_failures_total",
            "Webhook signature verification failures.",
            ["provider"],
            registry=r,
        )
        self.vault_refreshes = Counter(
            "tap_vault_refresh_total",
            "Secret reloads (SIGHUP or vault.refresh_interval) by result: success or failure "
            "(the running secrets stay).",
            ["result"],
            registry=r,
        )
        self.webhook_internal_errors = Counter(
            "tap_webhooks_internal_errors_total",
            "Webhook requests that failed on an unexpected error (a bug), by provider.",
            ["provider"],
            registry=r,
        )
        # The HTTP server's connections (serving.TapHttpProtocol); not in the reference.
        self.http_connections_open = Gauge(
            "tap_http_connections_open",
            "HTTP connections open (with server.workers: summed over processes).",
            registry=r,
        )
        self.http_connections_closed = Counter(
            "tap_http_connections_closed_total",
            "HTTP connections closed or refused by the server, by reason.",
            ["reason"],
            registry=r,
        )

    def _nats_metrics(self, r: CollectorRegistry) -> None:
        """Publishing to JetStream, its advisories and the dead-letter stream."""
        self.events_published = Counter(
            "tap_events_published_total",
            "Events published to NATS by provider/entity/action.",
            ["provider", "entity_type", "action"],
            registry=r,
        )
        self.publish_failures = Counter(
            "tap_events_publish_failures_total",
            "NATS publish failures by provider.",
            ["provider"],
            registry=r,
        )
        self.dedup_hits = Counter(
            "tap_events_dedup_hits_total",
            "Events deduplicated by NATS in the dedup window.",
            ["provider"],
            registry=r,
        )
        self.publish_retries = Counter(
            "tap_nats_publish_retries_total",
            "NATS publish retries by retry classification.",
            ["reason"],
            registry=r,
        )
        self.publish_retry_delay = Histogram(
            "tap_nats_publish_retry_delay_seconds",
            "Applied retry delay before a NATS publish retry attempt.",
            buckets=BUCKETS,
            registry=r,
        )
        self.advisories = Counter(
            "tap_jetstream_advisories_total",
            "JetStream advisory events observed by advisory kind.",
            ["kind"],
            registry=r,
        )
        self.nats_connected = Gauge(
            "tap_nats_connected",
            "NATS connection status (1 connected, 0 disconnected).",
            registry=r,
        )
        self.dlq_records = Counter(
            "tap_dlq_records_total",
            "Dead-letter records written, by stage.",
            ["stage"],
            registry=r,
        )
        self.dlq_write_failures = Counter(
            "tap_dlq_write_failures_total",
            "Dead-letter records that could not be written, by stage.",
            ["stage"],
            registry=r,
        )
        self.dlq_dropped = Counter(
            "tap_dlq_dropped_total",
            "Dead-letter records not written on purpose (rate limit), by stage.",
            ["stage"],
            registry=r,
        )

    def _admin_metrics(self, r: CollectorRegistry) -> None:
        """The admin API and its replay jobs."""
        self.admin_requests = Counter(
            "tap_admin_requests_total",
            "Admin API requests by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.admin_duration = Histogram(
            "tap_admin_request_duration_seconds",
            "Admin API request latency by endpoint and outcome.",
            ["endpoint", "outcome"],
            buckets=BUCKETS,
            registry=r,
        )
        self.admin_jobs = Counter(
            "tap_admin_replay_jobs_total",
            "Replay job lifecycle events by stage.",
            ["stage"],
            registry=r,
        )
        self.admin_jobs_in_flight = Gauge(
            "tap_admin_replay_jobs_in_flight",
            "Replay jobs currently holding a concurrency slot.",
            registry=r,
        )

    def _sink_metrics(self, r: CollectorRegistry) -> None:
        """The ClickHouse sink."""
        # ClickHouse sink. Its failures have their own counter: the reference counted them
        # as tap_events_publish_failures_total{provider="clickhouse"}.
        self.clickhouse_dedup_skipped = Counter(
            "tap_clickhouse_dedup_skipped_total",
            "Rows skipped by ClickHouse sink due to idempotency dedupe checks.",
            registry=r,
        )
        self.clickhouse_insert_failures = Counter(
            "tap_clickhouse_insert_failures_total",
            "ClickHouse sink batches whose insert failed (their messages are redelivered).",
            registry=r,
        )
        self.clickhouse_rows_inserted = Counter(
            "tap_clickhouse_rows_inserted_total",
            "Rows inserted into ClickHouse by the sink.",
            registry=r,
        )
        self.clickhouse_batch_size = Histogram(
            "tap_clickhouse_batch_size_rows",
            "Rows per ClickHouse sink insert.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
            registry=r,
        )
        self.clickhouse_flush_duration = Histogram(
            "tap_clickhouse_flush_duration_seconds",
            "Time to insert one ClickHouse sink batch.",
            buckets=BUCKETS,
            registry=r,
        )
        self.clickhouse_poison = Counter(
            "tap_clickhouse_poison_total",
            "Messages the ClickHouse sink cannot store, sent to the DLQ, by reason.",
            ["reason"],
            registry=r,
        )
        self.clickhouse_redeliveries = Counter(
            "tap_clickhouse_redeliveries_total",
            "Messages the ClickHouse sink received more than once.",
            registry=r,
        )
        self.clickhouse_fetch_errors = Counter(
            "tap_clickhouse_fetch_errors_total",
            "Failed pulls from the ClickHouse sink's JetStream consumer.",
            registry=r,
        )
        self.clickhouse_consumer_pending = Gauge(
            "tap_clickhouse_consumer_pending_messages",
            "Messages in the stream not yet delivered to the ClickHouse sink.",
            registry=r,
        )
        self.clickhouse_consumer_ack_pending = Gauge(
            "tap_clickhouse_consumer_ack_pending_messages",
            "Messages delivered to the ClickHouse sink and not yet acknowledged.",
            registry=r,
        )
        self.clickhouse_consumer_lag = Gauge(
            "tap_clickhouse_consumer_lag_seconds",
            "Age (since stored in JetStream) of the oldest event of the last inserted batch.",
            registry=r,
        )
        self.clickhouse_healthy = Gauge(
            "tap_clickhouse_sink_healthy",
            "ClickHouse sink state (1 inserting normally, 0 starting, degraded or stopped).",
            registry=r,
        )

    def _spool_metrics(self, r: CollectorRegistry) -> None:
        """The local spool."""
        # The local spool (server.spool, ensemble_tap/spool); not in the reference.
        self.spool_depth_events = Gauge(
            "tap_spool_depth_events",
            "Events in the local spool not yet published to JetStream.",
            registry=r,
        )
        self.spool_depth_bytes = Gauge(
            "tap_spool_depth_bytes",
            "Bytes of the local spool's files on disk (bounded by server.spool.max_bytes).",
            registry=r,
        )
        self.spool_oldest_age = Gauge(
            "tap_spool_oldest_age_seconds",
            "Age of the oldest event in the local spool (0 when it is empty).",
            registry=r,
        )
        self.spool_spooled = Counter(
            "tap_spool_spooled_total",
            "Events written to the local spool (fsync'd) while JetStream was unreachable.",
            registry=r,
        )
        self.spool_drained = Counter(
            "tap_spool_drained_total",
            "Spooled events published to JetStream by the drainer.",
            registry=r,
        )
        self.spool_corrupt_records = Counter(
            "tap_spool_corrupt_records_total",
            "Damaged spool regions skipped or torn tails truncated (each counts once).",
            registry=r,
        )
        self.spool_rejected = Counter(
            "tap_spool_rejected_total",
            "Events the local spool refused because it was full (answered 503).",
            registry=r,
        )
        self.spool_dropped = Counter(
            "tap_spool_dropped_total",
            "Spooled events the broker refused for good that could not be dead-lettered.",
            registry=r,
        )

    def _reconcile_metrics(self, r: CollectorRegistry) -> None:
        """``webhook+poll``: the webhook path and the poller share the versions they saw."""
        self.reconciled_events = Counter(
            "tap_reconciled_events_total",
            "Changes a webhook+poll poller published because no webhook brought them, by provider.",
            ["provider"],
            registry=r,
        )
        self.reconcile_versions_lost = Counter(
            "tap_reconcile_versions_lost_total",
            "Versions seen by webhooks that were not recorded for the poller, by reason "
            "(full: buffer full, error: the state store failed).",
            ["reason"],
            registry=r,
        )


def configure_logging(level: str = "info") -> None:
    """JSON lines on stdout; ``level`` is debug, info, warning or error."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("msg"),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.ERROR)),
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )


def _dumps(data: Any, **_: Any) -> bytes:
    return orjson.dumps(data, default=str)


def get_logger(name: str) -> Any:
    return structlog.get_logger(component=name)
