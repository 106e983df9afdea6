"""The one NATS connection of a process: options from config, bounded start-up, liveness."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from ensemble_tap.bus.client import TapClient
from ensemble_tap.bus.creds import CredsUnusable, connect_callbacks
from ensemble_tap.config.models import NatsConfig
from ensemble_tap.observability import Metrics, get_logger

log = get_logger("ensemble_tap.bus")


class BrokerConnectError(RuntimeError):
    """NATS could not be reached (or refused us) within the start-up budget."""


class Broker:
    """Owns the NATS client; tracks connectivity so publishers can wait for a reconnect."""

    def __init__(self, config: NatsConfig, servers: list[str], metrics: Metrics) -> None:
        self.config = config
        self.servers = servers
        self.metrics = metrics
        self.nc = TapClient()
        self._connected = asyncio.Event()
        self._last_error = ""
        self._last_refusal = ""  # the server's -ERR (auth) or a bad creds file, kept over resets
        # Called on every reconnect (the spool's drainers stop backing off).
        self.on_reconnect: list[Callable[[], None]] = []

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    @property
    def is_connected(self) -> bool:
        return self.nc.is_connected

    async def wait_connected(self, timeout: float) -> bool:
        if self.nc.is_connected:
            return True
        if self.nc.is_closed or timeout <= 0:
            return False
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return self.nc.is_connected

    @property
    def last_error(self) -> str:
        """The newest connection error, for readiness ("" before any)."""
        return self._last_error

    async def connect(self, timeout: float | None = None) -> None:
        """Connect, trying the servers every ``reconnect_wait`` until one answers; every
        failed attempt is logged by the client's error callback. ``timeout`` (None: no limit)
        raises BrokerConnectError when no server answered in time.

        The first connection is retried without limit whatever ``max_reconnects`` says (the
        service serves probes and answers 503 meanwhile); ``max_reconnects`` applies to the
        reconnects after it."""
        options = connect_options(self.config, self.servers)
        options.update(
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
            error_cb=self._on_error,
            max_reconnect_attempts=-1,
        )
        try:
            await _bounded(self.nc.connect(**options), timeout)
        except (TimeoutError, Exception) as exc:
            if not self.nc.is_closed:
                await self.nc.close()
            # A timeout says nothing: then the last refusal or error says why.
            reason = str(exc) or self._last_refusal or self._last_error or type(exc).__name__
            limit = f" within {timeout:g}s" if timeout is not None else ""
            raise BrokerConnectError(
                f"nats not reachable at {', '.join(self.servers)}{limit}: {reason}"
            ) from exc
        self.nc.options["max_reconnect_attempts"] = self.config.max_reconnects
        self._set_connected(True)
        log.info(
            "nats connected", server=self.nc.connected_url.netloc if self.nc.connected_url else ""
        )

    async def close(self) -> None:
        """Drain (flush pending publishes, finish subscriptions), then close."""
        if self.nc.is_connected:
            try:
                await self.nc.drain()
            except Exception as exc:  # draining a broken connection must not block shutdown
                log.warning("nats drain failed", error=str(exc))
        if not self.nc.is_closed:
            await self.nc.close()
        self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        self.metrics.nats_connected.set(1 if connected else 0)
        if connected:
            self._connected.set()
        else:
            self._connected.clear()

    async def _on_disconnected(self) -> None:
        self._set_connected(False)
        log.warning("nats disconnected")

    async def _on_reconnected(self) -> None:
        self._set_connected(True)
        log.info("nats reconnected")
        for callback in self.on_reconnect:
            callback()

    async def _on_closed(self) -> None:
        self._set_connected(False)

    async def _on_error(self, error: Exception) -> None:
        self._last_error = str(error) or type(error).__name__
        if type(error) in (NatsError, CredsUnusable):  # nats-py raises Error for a -ERR
            self._last_refusal = self._last_error
        log.warning("nats error", error=self._last_error)


def connect_options(config: NatsConfig, servers: list[str]) -> dict[str, Any]:
    """nats-py's ``connect`` keywords for ``config`` and ``servers``: servers, name, timeouts,
    reconnects, credentials and TLS; no callbacks (each connection adds its own). The
    broker, the sink's connection and ``ensemble-tap tail`` all connect with these."""
    if config.secure:  # TLS or fail, as the Go client (it does TLS on ws:// too when secure)
        servers = [s.replace("nats://", "tls://", 1).replace("ws://", "wss://", 1) for s in servers]
    options: dict[str, Any] = {
        "servers": servers,
        "name": "ensemble-tap",
        "connect_timeout": config.connect_timeout,
        "reconnect_time_wait": config.reconnect_wait,
        "max_reconnect_attempts": config.max_reconnects,
        "allow_reconnect": True,
        "pending_size": 64 * 1024 * 1024,
    }
    if config.creds_file:
        options.update(connect_callbacks(config.creds_file))  # read on every connect
    elif config.token:
        options["token"] = config.token
    elif config.username:
        options["user"] = config.username
        options["password"] = config.password
    if config.secure or any(s.startswith(("tls://", "wss://")) for s in servers):
        options["tls"] = tls_context(config)
    return options


async def _bounded(connect: Coroutine[Any, Any, None], timeout: float | None) -> None:
    """``asyncio.wait_for`` that really stops nats-py's connect loop: on Python 3.11 a nested
    ``wait_for`` in that loop can swallow the cancellation (gh-86296), and the loop, retrying
    a refused login without limit, then outlived ``nats.startup_timeout`` for good."""
    task = asyncio.ensure_future(connect)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        raise TimeoutError
    task.result()


def tls_context(cfg: NatsConfig) -> ssl.SSLContext:
    """TLS 1.2+, system roots unless ``ca_file``; client certificate for mTLS."""
    context = ssl.create_default_context(cafile=cfg.ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    return context
