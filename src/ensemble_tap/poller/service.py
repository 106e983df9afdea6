"""All pollers of one process: targets from config, one scheduler task per target.

Built by ``app.py`` after the streams exist; stopped first on shutdown (tasks cancelled and
awaited before the state store and the HTTP client are closed).

With ``state.backend: nats`` several replicas share the targets: the state lives in
JetStream KV and a target's scheduler runs only while this replica holds its lease
(``leases.py``). The buckets are set up in the background, retried with backoff until
JetStream answers (a cluster without a meta leader yet): the process never exits for it.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Sequence
from typing import Any

import httpx

from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.contract import Publisher
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.config.models import Config, ProviderConfig
from ensemble_tap.config.poll_settings import bearer_token, oauth_enabled
from ensemble_tap.observability import Metrics, get_logger
from ensemble_tap.poller import controls
from ensemble_tap.poller.clock import Clock, SystemClock
from ensemble_tap.poller.engine import EventOutput, PollEngine
from ensemble_tap.poller.http import ProviderHTTP, TokenBucket
from ensemble_tap.poller.leases import LeaseKeeper, LeaseLost, replica_id
from ensemble_tap.poller.metrics import PollerMetrics
from ensemble_tap.poller.oauth import OAuthSettings, TokenSource
from ensemble_tap.poller.scheduler import CONTROL_RECHECK, PollScheduler
from ensemble_tap.poller.status import StatusRegistry
from ensemble_tap.poller.targets import PollTarget, build_targets
from ensemble_tap.providers import poll_provider
from ensemble_tap.providers.contract import ProviderPoller, StreamContext
from ensemble_tap.state import NatsStateStore, StateError, StateStore, open_state_store
from ensemble_tap.state.leases import LeaseTable
from ensemble_tap.state.versions import VersionRecorder

HTTP_TIMEOUT = 20.0
# Cycles running at once across all targets: start-up (every target polls at once) and
# outages stay bounded however many tenants are configured.
MAX_CONCURRENT_CYCLES = 32
# Cycles spend most of their time paced by their rate limit, so few requests are in flight at
# once; httpcore checks every pooled connection on each request, so a small pool is cheaper.
MAX_CONNECTIONS = 64
MAX_IDLE_CONNECTIONS = 8
# Bucket set-up retries (state.backend nats): 0.5 s doubling to 10 s, for ever.
SETUP_BACKOFF_INITIAL = 0.5
SETUP_BACKOFF_MAX = 10.0
# How long a cancelled task gets before it is cancelled again (cancel_and_wait).
CANCEL_RETRY = 0.5
# Largest snapshot kept in a KV value: a share of the server's max_payload.
INLINE_SHARE = 0.5
log = get_logger("ensemble_tap.poller")


def poll_targets(config: Config) -> list[PollTarget]:
    """Every poll target of the config, in provider-name then tenant order."""
    targets: list[PollTarget] = []
    for name in sorted(config.providers):
        provider = config.providers[name]
        if provider.poll_enabled:
            targets.extend(build_targets(name, provider))
    return targets


class PollerService:
    def __init__(
        self,
        config: Config,
        *,
        publisher: Publisher,
        dlq: DeadLetterWriter,
        metrics: Metrics,
        clock: Clock | None = None,
        store: StateStore | None = None,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        max_concurrent_cycles: int = MAX_CONCURRENT_CYCLES,
        broker: Broker | None = None,
        replica: str | None = None,
        versions: VersionRecorder | None = None,
    ) -> None:
        """``broker``: the JetStream connection ``state.backend: nats`` keeps state and
        leases on; ``replica``: this replica's name in the leases (default ``replica_id()``);
        ``versions``: this process's webhook path, which records into the state store once
        it is open (webhook+poll)."""
        self.config = config
        self.clock = clock or SystemClock()
        self.targets = poll_targets(config)
        # Each target's credentials and whether its token endpoint takes HTTP Basic auth.
        self._credentials: dict[str, tuple[TokenSource, ProviderPoller]] = {}
        self.registry = StatusRegistry(self.clock)
        self.metrics = PollerMetrics(metrics.registry, self.registry)
        self.output = EventOutput(
            publisher=publisher,
            dlq=dlq,
            metrics=metrics,
            subject_prefix=config.nats.subject_prefix,
            tenant_scoped=config.nats.tenant_scoped_subjects,
        )
        self.store = store
        self.client = client
        # Jitter for waits, not a secret: the standard generator is right here.
        self.rng = rng or random.Random()  # nosec B311
        self.max_concurrent_cycles = max_concurrent_cycles
        self.schedulers: list[PollScheduler] = []
        self._owns_store = store is None
        self._owns_client = client is None
        self._tasks: list[asyncio.Task[None]] = []
        self.broker = broker
        self.leased = config.state.backend == "nats"
        self.replica = replica or replica_id()
        self.keeper: LeaseKeeper | None = None
        self._by_key: dict[str, PollScheduler] = {}
        self._target_tasks: dict[str, asyncio.Task[None]] = {}
        self._leasing: asyncio.Task[None] | None = None
        self.setup_error = ""  # why the state buckets are not set up yet ("" once they are)
        self.versions = versions

    def status(self) -> list[dict[str, Any]]:
        """The status entries for ``GET /admin/poller-status``."""
        if self.keeper is not None:
            for scheduler in self.schedulers:
                scheduler.status.lease = self.keeper.holder_of(scheduler.target.state_key)
        return self.registry.snapshot()

    async def control(
        self, provider: str, tenant: str, *, action: str, operator: controls.Operator
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run, pause, resume or reset one target (``poller/controls.py``): the target's
        status after it, and what was done. Raises ``UnknownTarget``, ``ControlRefused``,
        ``ControlsUnavailable`` or ``StateError``."""
        scheduler = self._find(provider, tenant)
        if self.store is None or (self.leased and self.keeper is None):
            raise controls.ControlsUnavailable(
                "poller state not set up yet"
                + (f": {self.setup_error}" if self.setup_error else "")
            )
        key = scheduler.target.state_key
        holder = None
        if self.keeper is not None:
            lease = self.keeper.holder_of(key)
            if lease is None:
                holder = ""
            elif lease[0] != self.replica:
                holder = lease[0]
        done = await controls.apply(
            action,
            scheduler,
            store=self.store,
            operator=operator,
            now_ns=self.clock.now_ns(),
            holder=holder,
        )
        log.info("poller control", action=action, provider=scheduler.target.provider,
                 tenant=scheduler.target.tenant_id, by=operator.by, reason=operator.reason,
                 request_id=operator.request_id)  # fmt: skip
        status = self.status()
        entry = next(
            e for e in status
            if e["provider"] == scheduler.target.provider
            and e.get("tenant_id", "") == scheduler.target.tenant_id
        )  # fmt: skip
        return entry, done

    def _find(self, provider: str, tenant: str) -> PollScheduler:
        wanted = "" if tenant == controls.NO_TENANT else tenant
        for scheduler in self.schedulers:
            target = scheduler.target
            if target.provider == provider.lower() and target.tenant_id == wanted:
                return scheduler
        raise controls.UnknownTarget(
            f"no poll target {provider}/{tenant} here"
            + ("" if self.schedulers or not self.targets else " (pollers not set up yet)")
        )

    async def start(self, run: bool = True) -> None:
        """Build one scheduler per target and (with ``run``) start them; with leases, set
        the buckets up in the background and start only the targets this replica holds."""
        if not self.targets:
            return
        if self.leased:
            for target in self.targets:
                self.registry.upsert(target).leased = True
            self._leasing = asyncio.create_task(self._run_leased(run), name="poll leases")
            return
        if self.store is None:
            self.store = open_state_store(self.config.state, self.config.data_dir)
        if self.versions is not None:
            self.versions.attach(self.store)
        self._build(self.store)
        await self._read_pauses(self.store)
        if run:
            self.start_tasks()

    async def _read_pauses(self, store: StateStore) -> None:
        """Show stored pauses at once (each scheduler reads its own again before a cycle)."""
        for scheduler in self.schedulers:
            try:
                scheduler.status.control = await store.load_control(scheduler.target.state_key)
            except StateError as exc:
                log.warning("poller control not readable", error=str(exc),
                            **scheduler.target.describe())  # fmt: skip

    def _build(self, store: StateStore) -> None:
        if self.client is None:
            self.client = httpx.AsyncClient(
                timeout=HTTP_TIMEOUT,
                follow_redirects=True,
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS,
                    max_keepalive_connections=MAX_IDLE_CONNECTIONS,
                ),
            )
        gate = asyncio.Semaphore(self.max_concurrent_cycles)
        for target in self.targets:
            poller = poll_provider(target.provider)
            if poller is None:
                log.warning("poll mode requested but provider poller not available",
                            **target.describe())  # fmt: skip
                continue
            scheduler = self._scheduler(target, poller, store=store, client=self.client, gate=gate)
            self.schedulers.append(scheduler)
            self._by_key[target.state_key] = scheduler
            log.info("starting provider poller", **target.describe())

    async def _run_leased(self, run: bool) -> None:
        """Set the buckets up (retrying), build the schedulers, then keep the leases."""
        assert self.broker is not None, "state.backend nats needs the broker"
        cfg = self.config
        backoff = SETUP_BACKOFF_INITIAL
        while True:
            try:
                js = self.broker.js
                if self.store is None:
                    limit = int(self.broker.nc.max_payload * INLINE_SHARE)
                    self.store = await NatsStateStore.open(
                        js, replicas=cfg.nats.stream_replicas, inline_limit=limit
                    )
                table = await LeaseTable.open(
                    js,
                    replica=self.replica,
                    ttl=cfg.state.lease_ttl,
                    replicas=cfg.nats.stream_replicas,
                )
                break
            except Exception as exc:  # JetStream not ready (no meta leader, no quorum, …)
                reason = str(exc) or type(exc).__name__
                self.setup_error = reason
                log.warning("poller state buckets not ready: retrying",
                            error=reason, retry_in=backoff)  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, SETUP_BACKOFF_MAX)
        self.setup_error = ""
        if self.versions is not None:
            self.versions.attach(self.store)
        self._build(self.store)
        await self._read_pauses(self.store)
        self.keeper = LeaseKeeper(
            table,
            targets=list(self._by_key),
            ttl=cfg.state.lease_ttl,
            start=self._start_target,
            stop=self._stop_target,
        )
        log.info("poll leases ready", replica=self.replica, targets=len(self._by_key))
        if run:
            await self.keeper.run()

    async def _start_target(self, state_key: str) -> None:
        """This replica took the target: read its state anew, then poll it."""
        scheduler = self._by_key[state_key]
        scheduler.status.held_here = True
        scheduler.engine.forget_state()
        auth, _ = self._credentials[state_key]
        auth.forget_rotated()
        task = asyncio.create_task(scheduler.run(), name=f"poller {state_key}")
        self._target_tasks[state_key] = task

    async def _stop_target(self, state_key: str) -> None:
        task = self._target_tasks.pop(state_key, None)
        if task is not None:
            await cancel_and_wait(task)
        self._by_key[state_key].status.held_here = False

    def start_tasks(self) -> None:
        """Start one task per scheduler (``start(run=False)`` leaves that to the caller)."""
        for scheduler in self.schedulers:
            name = f"poller {scheduler.target.state_key}"
            self._tasks.append(asyncio.create_task(scheduler.run(), name=name))

    def _scheduler(
        self,
        target: PollTarget,
        poller: ProviderPoller,
        *,
        store: StateStore,
        client: httpx.AsyncClient,
        gate: asyncio.Semaphore,
    ) -> PollScheduler:
        settings = target.settings
        status = self.registry.upsert(target)
        refreshes = self.metrics.token_refreshes
        auth = TokenSource(
            target.provider,
            state_key=target.state_key,
            access_token=bearer_token(settings, poller.token_key),
            oauth=_oauth(settings, poller.basic_token_auth),
            store=store,
            client=client,
            clock=self.clock,
            on_refresh=lambda outcome: refreshes.labels(
                target.provider, target.tenant_id, outcome
            ).inc(),
        )
        self._credentials[target.state_key] = (auth, poller)
        http = ProviderHTTP(
            target.provider,
            client=client,
            auth=auth,
            limiter=TokenBucket(target.rate_limit_per_sec, target.burst, self.clock),
            clock=self.clock,
            headers=poller.headers,
            rate_limit_hint=poller.rate_limit_hint,
        )
        context = StreamContext(
            state_key=target.state_key,
            interval=target.interval,
            delete_interval=target.delete_interval,
            known_entities=functools.partial(store.known_entities, target.state_key),
            now_ns=self.clock.now_ns,
        )
        engine = PollEngine(
            target,
            streams=poller.streams(settings, context),
            http=http,
            store=store,
            output=self.output,
            clock=self.clock,
            fence=functools.partial(self._confirm, target.state_key) if self.leased else None,
        )
        return PollScheduler(
            target,
            engine=engine,
            status=status,
            metrics=self.metrics,
            clock=self.clock,
            rng=self.rng,
            gate=gate,
            control=functools.partial(store.load_control, target.state_key),
            recheck=CONTROL_RECHECK if self.leased else None,
        )

    async def _confirm(self, state_key: str) -> None:
        if self.keeper is None:
            raise LeaseLost(f"lease of {state_key}: leases not set up")
        await self.keeper.confirm(state_key)

    def apply_secrets(self, config: Config) -> None:
        """Take the targets' new credentials (secret_reload); used from the next request."""
        for target in poll_targets(config):
            found = self._credentials.get(target.state_key)
            if found is not None:
                auth, poller = found
                settings = target.settings
                auth.replace_credentials(
                    bearer_token(settings, poller.token_key),
                    _oauth(settings, poller.basic_token_auth),
                )

    async def stop(self) -> None:
        """Cancel and await every poller (with leases: give them back), then close the
        HTTP client and the store."""
        if self._leasing is not None:
            await cancel_and_wait(self._leasing)
            self._leasing = None
        if self.keeper is not None:
            try:
                await self.keeper.stop()
            finally:  # whatever happened there, no poller outlives the service
                for state_key in list(self._target_tasks):
                    await self._stop_target(state_key)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        results: Sequence[BaseException | None] = await asyncio.gather(
            *tasks, return_exceptions=True
        )
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, Exception):
                log.error("poller ended with an error", task=task.get_name(), error=str(result))
        if self.client is not None and self._owns_client:
            await self.client.aclose()
            self.client = None
        if self.store is not None and self._owns_store:
            await self.store.close()
            self.store = None


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it ended. Cancelled again until it does: on Python 3.11
    ``asyncio.wait_for`` (nats-py's requests) loses a cancel that arrives with the reply, and
    the task would poll on."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY)
    if not task.cancelled() and task.exception() is not None:
        log.error("poller ended with an error", task=task.get_name(), error=str(task.exception()))


def _oauth(settings: ProviderConfig, basic_auth: bool) -> OAuthSettings | None:
    if not oauth_enabled(settings):
        return None
    return OAuthSettings(
        token_url=settings.token_url.strip(),
        client_id=settings.client_id.strip(),
        client_secret=settings.client_secret.strip(),
        refresh_token=settings.refresh_token.strip(),
        scope=settings.scope.strip(),
        basic_auth=basic_auth,
    )
