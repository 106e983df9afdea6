"""Composition root: builds every part from Config and owns the start/stop order.

Start: embedded nats-server (when ``nats.url`` is unset) → ingress, admin → worker processes
(``server.workers``) → HTTP, while in the background: NATS connection → streams →
advisories → sink, pollers, queued replay jobs (``/readyz`` is 503 until then). Stop:
stop accepting and finish in-flight requests (uvicorn, workers) → pollers, replay, sink →
drain NATS → stop the embedded server.

``roles`` (``serve --role``) leave out the parts a process does not run. A worker process
(``worker`` set) builds only NATS, ingress and health; it forwards admin and metrics
requests to the primary (ensemble_tap.workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI
from prometheus_client import generate_latest

from ensemble_tap import __version__
from ensemble_tap.admin.guards import Scope, TokenAuthenticator, admin_enabled
from ensemble_tap.admin.history import MetricsHistory
from ensemble_tap.admin.live_tail import LiveStreams
from ensemble_tap.admin.replay_jobs import ReplayJobs
from ensemble_tap.admin.runner import ReplayRunner
from ensemble_tap.admin.service import build_admin
from ensemble_tap.asgi_types import ASGIApp, Receive, Send
from ensemble_tap.asgi_types import Scope as AsgiScope
from ensemble_tap.bus.advisories import subscribe_advisories
from ensemble_tap.bus.buckets import Bucket, open_bucket
from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.bus.embedded import EmbeddedNatsServer
from ensemble_tap.bus.provisioning import Backoff, until_set_up
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import (
    StreamSetupError,
    console_sessions_bucket,
    dlq_stream_config,
    dlq_stream_name,
    ensure_stream,
    main_stream_config,
)
from ensemble_tap.config.models import Config
from ensemble_tap.console.service import build_console
from ensemble_tap.console.sessions import SessionStore
from ensemble_tap.console.shared_sessions import NatsSessions
from ensemble_tap.health import Readiness, health_router
from ensemble_tap.http_connections import ConnectionGuard, ConnectionLimits, drain
from ensemble_tap.ingress import WebhookIngress
from ensemble_tap.observability import Metrics, get_logger
from ensemble_tap.poller.service import PollerService
from ensemble_tap.secret_reload import ConfigSource, SecretReloader
from ensemble_tap.serving import (
    TapHttpProtocol,
    TapServer,
    bind_listener,
    raise_open_file_limit,
    signal_handlers,
    tune_gc,
)
from ensemble_tap.sink import ClickHouseSink
from ensemble_tap.spool.service import ProcessSpool
from ensemble_tap.state import (
    NatsStateStore,
    SqliteStateStore,
    StateStore,
    default_sqlite_path,
)
from ensemble_tap.state.versions import VersionRecorder
from ensemble_tap.vault_renewal import TokenRenewal, renewal_wanted
from ensemble_tap.workers.metrics import MetricsEndpoint, merge_expositions
from ensemble_tap.workers.pool import WorkerPool, WorkerSpec
from ensemble_tap.workers.proxy import PrimaryProxy, forwarded_to_primary

log = get_logger("ensemble_tap.app")
# A NATS message must hold the CloudEvent (body + envelope) and, in the DLQ, its base64.
ENVELOPE_OVERHEAD = 64 * 1024
# Pauses between attempts to set up a JetStream resource at start: from this (or
# nats.reconnect_wait when shorter), doubling up to nats.reconnect_wait or this, the larger.
SETUP_FIRST_RETRY, SETUP_MAX_RETRY = 0.25, 5.0
T = TypeVar("T")
# What one process can run; ``serve --role`` picks a subset, by default all of them.
ROLES = ("ingress", "poller", "sink", "admin")
ALL_ROLES = frozenset(ROLES)


def check_roles(roles: frozenset[str]) -> None:
    """Raise ValueError naming what is wrong with a set of roles (the CLI shows it)."""
    unknown = sorted(roles - ALL_ROLES)
    if unknown or not roles:
        raise ValueError(f"unknown role {', '.join(unknown)}: choose from {', '.join(ROLES)}")


class TapApp:
    """One running service. ``asgi`` is valid between ``start()`` and ``stop()``."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics | None = None,
        worker: WorkerSpec | None = None,
        roles: frozenset[str] = ALL_ROLES,
        source: ConfigSource | None = None,
    ) -> None:
        check_roles(roles)
        if config.server.workers > 1 and "ingress" not in roles:
            raise ValueError("server.workers > 1 needs the ingress role: workers serve webhooks")
        self.config = config
        self.metrics = metrics or Metrics()
        self.worker = worker
        self.roles = roles if worker is None else frozenset({"ingress"})
        self.embedded: EmbeddedNatsServer | None = None
        self.broker: Broker | None = None
        self.ingress: WebhookIngress | None = None
        self.http: FastAPI | None = None
        self.admin: FastAPI | None = None
        self.console: ASGIApp | None = None
        self.live_streams: LiveStreams | None = None
        self.metrics_history: MetricsHistory | None = None
        self._history_task: asyncio.Task[None] | None = None
        self.replay_runner: ReplayRunner | None = None
        self.replay_jobs: ReplayJobs | None = None
        self.pollers: PollerService | None = None
        self.sink: ClickHouseSink | None = None
        self.pool: WorkerPool | None = None
        self.proxy: PrimaryProxy | None = None
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.readiness: Readiness | None = None
        # This process's HTTP connections: their deadlines, limit and draining on SIGTERM.
        self.connections = ConnectionGuard(ConnectionLimits.of(config.server), self.metrics)
        self._bring_up_task: asyncio.Task[None] | None = None
        self._starting_reason = "starting"
        self.spool: ProcessSpool | None = None
        # Where the config came from: SIGHUP (and vault.refresh_interval) reload its secrets.
        self.source = source or (worker.source if worker is not None else None)
        self.secrets: SecretReloader | None = None
        self.admin_authenticator: TokenAuthenticator | None = None
        self._reloads: set[asyncio.Task[bool]] = set()
        self.vault_renewal: TokenRenewal | None = None
        # webhook+poll: what webhooks brought, recorded for the pollers (state/versions.py),
        # into the pollers' store or, without a poller in this process, a store of its own.
        self.versions: VersionRecorder | None = None
        self._version_store: StateStore | None = None

    async def start(self) -> None:
        """Build every part and start reaching NATS in the background, so HTTP can be served
        at once: probes answer, webhooks get 503 + Retry-After until the broker is reachable,
        and the service becomes ready without a restart. A failure to build stops what
        already runs, then re-raises; ``wait_ready()`` waits for (or raises) the bring-up."""
        try:
            await self._build()
        except BaseException:
            await self.stop()
            raise
        self._bring_up_task = asyncio.create_task(self._bring_up(), name="tap-bring-up")
        if self.metrics_history is not None:  # the overview's last hour starts now
            self._history_task = asyncio.create_task(
                self.metrics_history.run(), name="tap-metrics-history"
            )
        if renewal_wanted(self.config.vault):
            self.vault_renewal = TokenRenewal(self.config.vault)
            self.vault_renewal.start()
        if self.source is not None:
            self.secrets = SecretReloader(self.config, self.source.load, [self], self.metrics)
            interval = self.config.vault.refresh_interval
            if interval is not None:
                self.secrets.start_periodic(interval)
        log.info(
            "ensemble-tap started",
            version=__version__,
            roles=sorted(self.roles),
            base_path=self.config.server.base_path,
            providers=sorted(self.ingress.routes) if self.ingress is not None else [],
            stream=self.config.nats.stream,
        )

    async def wait_ready(self) -> None:
        """Wait until NATS is reached and every part runs; raise what stopped the bring-up."""
        assert self._bring_up_task is not None, "start() first"
        await asyncio.shield(self._bring_up_task)

    @property
    def bring_up(self) -> asyncio.Task[None] | None:
        return self._bring_up_task

    async def _build(self) -> None:
        """Everything that does not need NATS: HTTP routes, ingress, admin, the parts that
        the bring-up starts later."""
        cfg = self.config
        if cfg.nats.url is None:
            self.embedded = EmbeddedNatsServer(cfg.data_dir)
            servers = [await self.embedded.start()]
        else:
            servers = [url.strip() for url in cfg.nats.url.split(",")]
        self.broker = Broker(cfg.nats, servers, self.metrics)
        streams = (cfg.nats.stream, dlq_stream_name(cfg.nats))
        publisher = JetStreamPublisher(self.broker, cfg.nats, self.metrics)
        dlq = DeadLetterWriter(publisher, self.metrics)
        if "ingress" in self.roles and cfg.server.spool.enabled:
            index = 0 if self.worker is None else self.worker.index
            self.spool = ProcessSpool(cfg, index, publisher, dlq, self.metrics)
            await self.spool.open()
            self.broker.on_reconnect.append(self.spool.wake)
        if "ingress" in self.roles:
            self.versions = self._version_recorder()
            self.ingress = WebhookIngress(
                cfg,
                publisher,
                dlq,
                self.metrics,
                self.spool.log if self.spool else None,
                versions=self.versions,
            )
        self.http = FastAPI(title="Ensemble Tap", version=__version__, openapi_url=None)
        if self.worker is not None:  # the primary provisions the streams and runs the rest
            if self.versions is not None and cfg.state.backend == "sqlite":
                path = default_sqlite_path(cfg.state, cfg.data_dir)
                self._version_store = SqliteStateStore(path)
                self.versions.attach(self._version_store)
            self.proxy = PrimaryProxy(self.worker.primary_socket)
            self.readiness = Readiness(
                self.broker, streams, starting=self._starting, spooling=self._spooling
            )
            self.http.include_router(health_router(self.readiness, self._exposition))
            return
        if "sink" in self.roles and cfg.clickhouse.enabled:  # ClickHouse itself may be down
            self.sink = ClickHouseSink(cfg, broker=self.broker, dlq=dlq, metrics=self.metrics)
        if "poller" in self.roles:
            self.pollers = PollerService(
                cfg,
                publisher=publisher,
                dlq=dlq,
                metrics=self.metrics,
                broker=self.broker,
                versions=self.versions,
            )
        elif self.versions is not None and cfg.state.backend == "sqlite":
            self._version_store = SqliteStateStore(default_sqlite_path(cfg.state, cfg.data_dir))
            self.versions.attach(self._version_store)
        if "admin" in self.roles and admin_enabled(cfg.server):
            admin = build_admin(
                cfg,
                broker=self.broker,
                publisher=publisher,
                metrics=self.metrics,
                poller_status=self.pollers.status if self.pollers is not None else list,
                poller_control=self.pollers.control if self.pollers is not None else None,
                search_events=self.sink.search if self.sink is not None else None,
                exposition=self._exposition,
            )
            self.admin = admin.app
            self.metrics_history = admin.history
            self.live_streams = admin.live
            self.replay_runner = admin.runner
            self.replay_jobs = admin.jobs
            self.admin_authenticator = admin.authenticator
            if cfg.server.console_enabled:
                self.console = build_console(
                    admin=admin.app,
                    server=cfg.server,
                    scopes_of=scopes_granted_by(admin.authenticator),
                    sessions=self._shared_console_sessions(self.broker),
                )
        sink_detail = self.sink.readiness_detail if self.sink is not None else None
        self.readiness = Readiness(
            self.broker,
            streams,
            details=sink_detail,
            starting=self._starting,
            spooling=self._spooling,
        )
        self.http.include_router(health_router(self.readiness, self._exposition))

    async def _bring_up(self) -> None:
        """Reach NATS (retrying; bounded only by ``nats.startup_timeout``), set up the
        JetStream resources, then start what needs them: advisories, pollers, queued
        replays."""
        cfg = self.config
        assert self.broker is not None
        self._starting_reason = "connecting to nats"
        limit = cfg.nats.startup_timeout
        deadline = None if limit is None else time.monotonic() + limit
        await self.broker.connect(limit)
        if self._versions_in_nats():
            self._version_store = await self._set_up("the poll state buckets", self._open_state)
            assert self.versions is not None
            self.versions.attach(self._version_store)
        if self.worker is not None:
            if self.spool is not None:
                self.spool.start()
            self._starting_reason = ""
            return
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            async with asyncio.timeout(remaining):
                await self._set_up_jetstream()
        except TimeoutError:
            raise StreamSetupError(
                f"jetstream not set up within nats.startup_timeout ({limit:g}s): "
                f"{self._starting_reason}"
            ) from None
        streams = frozenset((cfg.nats.stream, dlq_stream_name(cfg.nats)))
        await subscribe_advisories(self.broker, streams, self.metrics)
        self._warn_payload_limit()
        if self.spool is not None:
            self.spool.start()
        if self.pollers is not None:
            await self.pollers.start()  # after the streams exist; first cycles run now
        if self.replay_runner is not None:
            await self.replay_runner.start()
        self._starting_reason = ""
        log.info("ensemble-tap ready", nats=self.broker.nc.connected_url is not None)

    async def _set_up_jetstream(self) -> None:
        """Every JetStream resource this process needs, each retried until it exists: both
        streams, then the sink's consumer (and its connection). Replicas started together
        against a cluster still electing its leaders all get there (bus/provisioning.py);
        only a refused configuration ends the bring-up. Other parts' resources (buckets)
        belong here too, each through ``_set_up``."""
        assert self.broker is not None
        cfg = self.config.nats
        js = self.broker.js
        await self._set_up(
            f"stream {cfg.stream}", lambda: ensure_stream(js, main_stream_config(cfg))
        )
        dlq = dlq_stream_config(cfg)
        await self._set_up(f"stream {dlq.name}", lambda: ensure_stream(js, dlq))
        if self.sink is not None:
            await self._set_up("the sink's consumer", self.sink.start)

    async def _set_up(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """``step`` until it succeeds, its last failure shown by ``/readyz``."""
        wait = self.config.nats.reconnect_wait
        backoff = Backoff(first=min(SETUP_FIRST_RETRY, wait), ceiling=max(wait, SETUP_MAX_RETRY))
        self._starting_reason = f"setting up {what}"
        return await until_set_up(step, what=what, backoff=backoff, report=self._report_setup)

    def _version_recorder(self) -> VersionRecorder | None:
        """webhook+poll: the recorder of the versions webhooks bring, for the pollers (None
        when no provider has both, or when no poller could read them: state.backend memory
        is the poller process's own)."""
        cfg = self.config
        if not any(p.webhook_enabled and p.poll_enabled for p in cfg.providers.values()):
            return None
        local = self.worker is None and "poller" in self.roles
        if cfg.state.backend == "memory" and not local:
            log.warning(
                "webhook+poll: webhooks served by another process than the pollers need "
                "state.backend sqlite or nats to share what they saw; pollers will announce "
                "changes webhooks brought again"
            )
            return None
        lost = self.metrics.reconcile_versions_lost
        return VersionRecorder(lost=lambda reason, count: lost.labels(reason).inc(count))

    def _versions_in_nats(self) -> bool:
        """This process records versions in JetStream KV itself (no poller here opens it)."""
        return (
            self.versions is not None
            and self.pollers is None
            and self.config.state.backend == "nats"
        )

    async def _open_state(self) -> NatsStateStore:
        assert self.broker is not None
        return await NatsStateStore.open(self.broker.js, replicas=self.config.nats.stream_replicas)

    def _report_setup(self, reason: str) -> None:
        self._starting_reason = reason

    def _spooling(self) -> str:
        """For ``/readyz``: why the service is ready without NATS ("" when it is not)."""
        if self.spool is None or not self.config.server.spool.ready_while_spooling:
            return ""
        return self.spool.state()

    def _starting(self) -> str:
        """Why the service is not fully up yet ("" once the bring-up finished)."""
        if self._starting_reason and self.broker is not None and self.broker.last_error:
            return f"{self._starting_reason} (last error: {self.broker.last_error})"
        return self._starting_reason

    async def listen(self) -> list[socket.socket] | None:
        """After ``start()``: the sockets to serve, or None for uvicorn's own (one process).
        With ``server.workers`` > 1 the primary binds the port and starts the workers; a
        worker serves the primary's socket and answers metrics scrapes."""
        server = self.config.server
        if self.worker is not None:
            self.metrics_endpoint = MetricsEndpoint(
                self.metrics.registry, self.worker.metrics_socket
            )
            await self.metrics_endpoint.start()
            return [self.worker.listener]
        if server.workers == 1:
            return None
        listener = bind_listener(server.host, server.port)
        assert self.broker is not None
        nats = self.config.nats.model_copy(update={"url": ",".join(self.broker.servers)})
        self.pool = WorkerPool(
            self.config.model_copy(update={"nats": nats}),
            self.asgi,
            listener,
            serve_worker=serve_worker,
            source=self.source,
        )
        await self.pool.start()
        return [listener]

    def stopping(self) -> None:
        """A stop signal arrived: ``/readyz`` answers 503 and answers close their connections
        from now on (requests are still served while ``http_connections.drain`` lasts), and
        workers begin the same."""
        if self.readiness is not None:
            self.readiness.shutting_down = True
        self.connections.draining = True
        if self.live_streams is not None:  # open event streams would hold the shutdown
            self.live_streams.close_all()
        if self.pool is not None:
            self.pool.terminate()

    def apply_secrets(self, config: Config) -> None:
        """Hand a reloaded config's secrets to every part that holds some (secret_reload)."""
        self.config = config
        if self.ingress is not None:
            self.ingress.apply_secrets(config)
        if self.admin_authenticator is not None:
            self.admin_authenticator.replace(config.server)
        if self.pollers is not None:
            self.pollers.apply_secrets(config)

    def request_reload(self, trigger: str) -> None:
        """Reload the secrets in the background (a signal handler cannot await); the workers
        of ``server.workers`` reload their own."""
        if self.pool is not None:
            self.pool.reload_secrets()
        if self.secrets is None:
            log.warning("secrets reload ignored: the config has no source to load again")
            return
        task = asyncio.create_task(self.secrets.reload(trigger), name="secrets-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def stop(self) -> None:
        if self._history_task is not None:
            self._history_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._history_task
            self._history_task = None
        if self.secrets is not None:
            await self.secrets.stop()
        if self.vault_renewal is not None:
            await self.vault_renewal.stop()
        if self._bring_up_task is not None and not self._bring_up_task.done():
            self._bring_up_task.cancel()
            with contextlib.suppress(BaseException):
                await self._bring_up_task
        if self.pool is not None:  # first: workers publish through the embedded server
            await self.pool.stop()
            self.pool = None
        if self.metrics_endpoint is not None:
            await self.metrics_endpoint.stop()
        if self.proxy is not None:
            await self.proxy.close()
        if self.ingress is not None:
            self.ingress.close()
        if self.versions is not None:  # the last versions, before the store closes
            await self.versions.close()
        if self._version_store is not None:
            await self._version_store.close()
            self._version_store = None
        # Pollers stop after the HTTP drain (server.shutdown_delay, shutdown_timeout), before
        # the rest: the place where a poller hands back its leases (#15).
        if self.pollers is not None:  # then no new events while everything else stops
            await self.pollers.stop()
        if self.replay_runner is not None:
            await self.replay_runner.stop()
        if self.replay_jobs is not None:
            await self.replay_jobs.close()
        if self.sink is not None:  # flush the last batch while NATS is still up
            await self.sink.stop()
            self.sink = None
        if self.spool is not None:  # what is not drained yet stays on disk for next time
            await self.spool.close()
            self.spool = None
        if self.broker is not None:
            await self.broker.close()
        if self.embedded is not None:
            await self.embedded.stop()

    async def asgi(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        """Webhook paths go straight to the ingress handler; the rest to FastAPI."""
        assert self.http is not None
        path = scope.get("path", "")
        if scope["type"] == "http" and self.ingress is not None and self.ingress.matches(path):
            await self.ingress(scope, receive, send)
        elif self.proxy is not None and forwarded_to_primary(path):
            await self.proxy(scope, receive, send)
        elif scope["type"] == "http" and scope["method"] == "HEAD":
            # Answered as GET; uvicorn sends the headers only (probes and admin GET routes
            # answer HEAD as the reference's do).
            await self.asgi({**scope, "method": "GET"}, receive, send)
        elif self.admin is not None and (path == "/admin" or path.startswith("/admin/")):
            await self.admin(scope, receive, send)
        elif self.console is not None and (path == "/console" or path.startswith("/console/")):
            await self.console(scope, receive, send)
        else:
            await self.http(scope, receive, send)

    def _shared_console_sessions(self, broker: Broker) -> SessionStore | None:
        """Console sessions in NATS when the admin replicas share their replay jobs there, so
        a sign-in holds on every replica (docs/scaling.md); else the console keeps its own."""
        cfg = self.config
        if cfg.server.admin_replay_store_backend != "nats":
            return None
        ttl = cfg.server.console_session_ttl

        async def bucket() -> Bucket:
            name = console_sessions_bucket(cfg.nats)
            return await open_bucket(
                broker.js, name, replicas=cfg.nats.stream_replicas, max_age=ttl
            )

        return NatsSessions(bucket, ttl)

    async def _exposition(self) -> bytes:
        """This process's metrics, merged with every worker's on the primary."""
        own = generate_latest(self.metrics.registry)
        if self.pool is None:
            return own
        return merge_expositions([own, *await self.pool.collect_metrics()])

    def _warn_payload_limit(self) -> None:
        assert self.broker is not None
        max_payload = self.broker.nc.max_payload
        needed = (self.config.server.max_body_size * 2 + ENVELOPE_OVERHEAD) * 4 // 3
        if max_payload and needed > max_payload:
            log.warning(
                "server.max_body_size is large for the NATS server's max_payload: bodies near "
                "the limit cannot be published or dead-lettered",
                max_body_size=self.config.server.max_body_size,
                nats_max_payload=max_payload,
            )


def scopes_granted_by(authenticator: TokenAuthenticator) -> Callable[[str], frozenset[str]]:
    """For the console: what a token grants (it shows only the actions a token may take)."""

    def scopes_of(token: str) -> frozenset[str]:
        return frozenset(
            scope.value for scope in Scope if authenticator.authenticate(token, scope) is not None
        )

    return scopes_of


def uvicorn_config(app: TapApp, **overrides: Any) -> uvicorn.Config:
    server = app.config.server
    options: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "lifespan": "off",
        "interface": "asgi3",
        # Header, body, idle and write deadlines and server.max_connections, per process.
        "http": TapHttpProtocol.bound_to(app.connections),
        "ws": "none",  # no WebSocket routes; an upgraded connection would leave the guard
        # The service decides what to trust from X-Forwarded-* itself; uvicorn must not
        # rewrite the client address from them.
        "proxy_headers": False,
        "server_header": False,
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": server.shutdown_timeout,
        "h11_max_incomplete_event_size": 1024 * 1024,
    }
    options.update(overrides)
    return uvicorn.Config(app.asgi, **options)


async def serve(
    config: Config, roles: frozenset[str] = ALL_ROLES, source: ConfigSource | None = None
) -> None:
    """Run until SIGINT/SIGTERM (SIGHUP reloads the secrets from ``source``); then finish
    in-flight requests and shut down in order."""
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    await _serve(TapApp(config, roles=roles, source=source))


async def serve_worker(config: Config, worker: WorkerSpec) -> None:
    """A worker process of ``server.workers`` (see ensemble_tap.workers)."""
    await _serve(TapApp(config, worker=worker))


async def _serve(app: TapApp) -> None:
    """Serve HTTP at once while the bring-up reaches NATS in the background; a bring-up
    that fails (``nats.startup_timeout`` passed, the stream config refused, the sink's
    consumer refused) stops the service and is raised. A signal during start-up stops
    start-up too, so the embedded nats-server never outlives the service.

    A stop signal while serving: ``/readyz`` 503 at once, the drain (``http_connections.drain``:
    requests served for ``server.shutdown_delay``, then within ``server.shutdown_timeout``
    until none arrived for a moment, so that a rolling restart routes them elsewhere
    meanwhile), then uvicorn stops accepting and in-flight requests get the rest of
    ``server.shutdown_timeout``, then ``TapApp.stop()`` (pollers first: where they hand
    back their leases)."""
    config = app.config
    server = TapServer(uvicorn_config(app))
    stopping = asyncio.Event()
    main_task = asyncio.current_task()
    failure: list[BaseException] = []
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    def stop_serving(grace: float | None = None) -> None:
        if grace is not None:  # what is left of server.shutdown_timeout after the drain
            # uvicorn hints int, and passes it to asyncio.timeout, which takes any seconds.
            server.config.timeout_graceful_shutdown = grace  # type: ignore[assignment]
        server.should_exit = True

    def on_signal() -> None:
        if stopping.is_set():  # a second signal: no more draining, no waiting for requests
            for task in draining:
                task.cancel()
            server.force_exit = True
            stop_serving()
            return
        stopping.set()
        app.stopping()
        if not server.started:
            stop_serving()
            if main_task is not None:
                main_task.cancel()
            return
        log.info(
            "shutting down: draining (requests served until none arrives)",
            shutdown_delay=config.server.shutdown_delay,
            shutdown_timeout=config.server.shutdown_timeout,
        )
        drained = drain(
            app.connections,
            delay=config.server.shutdown_delay,
            budget=config.server.shutdown_timeout,
            stop=stop_serving,
        )
        draining.append(loop.create_task(drained, name="tap-drain"))

    def on_bring_up(task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        failure.append(task.exception())  # type: ignore[arg-type]
        server.should_exit = True
        app.stopping()

    with signal_handlers(on_signal, on_reload=lambda: app.request_reload("sighup")):
        try:
            await app.start()
            assert app.bring_up is not None
            app.bring_up.add_done_callback(on_bring_up)
            sockets = await app.listen()
            raise_open_file_limit()
            tune_gc()
            await server.serve(sockets=sockets)
            if failure:
                raise failure[0]
            if not server.started and not stopping.is_set():
                raise RuntimeError(
                    f"could not listen on {config.server.host}:{config.server.port} "
                    "(address in use or not permitted)"
                )
        except asyncio.CancelledError:
            if not stopping.is_set():
                raise
        finally:
            await asyncio.shield(app.stop())
            log.info("ensemble-tap stopped")  # a worker's lines carry its index
