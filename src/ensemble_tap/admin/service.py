"""``build_admin``: the admin API and its replay machinery, built from the config.

The one place the admin is wired: the service (``app.TapApp``) builds it with a running
broker, ``make openapi`` (``admin/openapi.py``) with an unconnected one to read its routes,
and the in-process tests with a broker on a test nats-server.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from ensemble_tap import __version__
from ensemble_tap.admin.errors import install_error_handlers
from ensemble_tap.admin.guarded import GuardChain
from ensemble_tap.admin.guards import TokenAuthenticator
from ensemble_tap.admin.history import MetricsHistory
from ensemble_tap.admin.jobs import JobRegistry, Limits, MemoryJobStore
from ensemble_tap.admin.live_tail import LiveStreams
from ensemble_tap.admin.nats_jobs import NatsJobs
from ensemble_tap.admin.replay import Replayer
from ensemble_tap.admin.replay_jobs import LocalJobs, ReplayJobs
from ensemble_tap.admin.routes import (
    AdminDependencies,
    EventSearch,
    PollerControl,
    PollerStatusSource,
    router,
)
from ensemble_tap.admin.runner import ReplayRunner
from ensemble_tap.admin.sqlite_store import SqliteJobStore
from ensemble_tap.bus.buckets import Bucket, open_bucket
from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.contract import Publisher
from ensemble_tap.bus.dlq_store import DeadLetterStore
from ensemble_tap.bus.live import live_events
from ensemble_tap.bus.streams import dlq_stream_name, replay_jobs_bucket
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics


@dataclass(slots=True, frozen=True, kw_only=True)
class AdminService:
    """The admin ASGI app and what the service starts and stops around it."""

    app: FastAPI
    jobs: ReplayJobs
    runner: ReplayRunner  # started once NATS is reached: stored jobs run then
    # The tokens the guards check; a secrets reload replaces them (secret_reload.py).
    authenticator: TokenAuthenticator
    # Open GET /admin/events/stream responses: ended when the service stops.
    live: LiveStreams
    # GET /admin/metrics/history's sampler (its run() is the service's to start and cancel).
    history: MetricsHistory | None = None


def build_admin(
    config: Config,
    *,
    broker: Broker,
    publisher: Publisher,
    metrics: Metrics,
    poller_status: PollerStatusSource = list,
    search_events: EventSearch | None = None,
    poller_control: PollerControl | None = None,
    exposition: Callable[[], Awaitable[bytes]] | None = None,
) -> AdminService:
    """The admin API over ``broker``'s DLQ stream; replays publish with ``publisher``.
    ``poller_status``, ``poller_control`` and ``search_events`` come from the pollers and the
    ClickHouse sink when this process runs them; ``exposition`` (the service's /metrics)
    feeds ``GET /admin/metrics/history``, sampled by ``AdminService.history``."""
    server = config.server
    jobs = replay_jobs_for(config, broker)
    dead_letters = DeadLetterStore(broker.js, dlq_stream_name(config.nats))
    replayer = Replayer(
        store=dead_letters,
        publisher=publisher,
        subject_prefix=config.nats.subject_prefix,
        tenant_scoped=config.nats.tenant_scoped_subjects,
    )
    runner = ReplayRunner(
        jobs=jobs,
        replayer=replayer,
        max_concurrent=server.admin_replay_max_concurrent_jobs,
        timeout=server.admin_replay_job_timeout,
        metrics=metrics,
        sweep_interval=server.admin_replay_claim_ttl / 3,
    )
    history = (
        MetricsHistory(exposition, dlq_depth=dead_letters.depth) if exposition is not None else None
    )
    app = admin_app(
        AdminDependencies(
            server=server,
            jobs=jobs,
            runner=runner,
            dead_letters=dead_letters,
            metrics=metrics,
            poller_status=poller_status,
            search_events=search_events,
            poller_control=poller_control,
            history=history,
            open_feed=functools.partial(
                live_events,
                broker.js,
                stream=config.nats.stream,
                subject=f"{config.nats.subject_prefix}.>",
            ),
        )
    )
    return AdminService(
        app=app,
        jobs=jobs,
        runner=runner,
        authenticator=app.state.guards.authenticator,
        live=app.state.admin.live,
        history=history,
    )


def replay_jobs_for(config: Config, broker: Broker) -> ReplayJobs:
    """The replay jobs of ``server.admin_replay_store_backend``: this process's (``memory``,
    ``sqlite``) or every replica's (``nats``: a KV bucket, opened at its first use)."""
    server = config.server
    limits = Limits(
        ttl_seconds=server.admin_replay_job_ttl,
        max_jobs=server.admin_replay_job_max_jobs,
        max_queued_per_ip=server.admin_replay_max_queued_per_ip,
        max_queued_per_token=server.admin_replay_max_queued_per_token,
    )
    if server.admin_replay_store_backend == "nats":

        async def bucket() -> Bucket:
            return await open_bucket(
                broker.js,
                replay_jobs_bucket(config.nats),
                replicas=config.nats.stream_replicas,
            )

        return NatsJobs(
            bucket,
            limits=limits,
            claim_ttl=server.admin_replay_claim_ttl,
            replica=f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}",
        )
    if server.admin_replay_store_backend == "sqlite":
        path = server.admin_replay_sqlite_path or str(Path(config.data_dir) / "tap-admin-replay.db")
        return LocalJobs(JobRegistry(SqliteJobStore(path), limits))
    return LocalJobs(JobRegistry(MemoryJobStore(), limits))


def admin_app(deps: AdminDependencies) -> FastAPI:
    """The admin API as its own ASGI app (the service routes /admin/ paths to it)."""
    app = FastAPI(
        title="Ensemble Tap admin API",
        version=__version__,
        description=(
            "Dead-letter inspection and replay, poller status. Authenticate with header "
            "`X-Admin-Token`; token slots grant scopes read, replay and cancel."
        ),
        docs_url=None,
        redoc_url=None,
    )
    app.state.admin = deps
    app.state.guards = GuardChain(deps.server, deps.metrics)
    install_error_handlers(app)
    app.include_router(router)
    return app
