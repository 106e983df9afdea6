"""``/livez``, ``/readyz`` and ``/metrics``: unauthenticated, never rate-limited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from ensemble_tap.bus.connection import Broker

READY_CACHE_SECONDS = 1.0
MAX_CHECK_SECONDS = 2.0


@dataclass(slots=True)
class Readiness:
    """NATS connected, JetStream answering, both streams present; cached for a second so
    probes do not load the JetStream API."""

    broker: Broker
    streams: tuple[str, ...]
    # Extra checks shown in the response without affecting readiness (the ClickHouse sink).
    details: Callable[[], Awaitable[dict[str, str]]] | None = None
    # Why the service is still starting ("" once it runs): connecting, provisioning streams.
    starting: Callable[[], str] | None = None
    # Why the service takes webhooks without NATS ("" when it does not): the local spool.
    spooling: Callable[[], str] | None = None
    # Set on SIGTERM: 503 at once (not after the cache's second), so that load balancers
    # stop routing here while requests are still served (server.shutdown_delay).
    shutting_down: bool = False
    _checked_at: float = 0.0
    _result: tuple[bool, dict[str, str]] = (False, {})
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def check(self) -> tuple[bool, dict[str, str]]:
        if self.shutting_down:
            return False, {"shutdown": "shutting down: finishing requests, routed elsewhere"}
        async with self._lock:
            if time.monotonic() - self._checked_at < READY_CACHE_SECONDS:
                return self._result
            ready, checks = await self._run()
            spooling = self.spooling() if self.spooling is not None and not ready else ""
            if spooling:  # webhooks still get 202 (spooled): keep the pod in rotation
                ready, checks = True, {**checks, "spool": spooling}
            if self.details is not None:
                checks = {**checks, **await self.details()}
            self._result = ready, checks
            self._checked_at = time.monotonic()
            return self._result

    async def _run(self) -> tuple[bool, dict[str, str]]:
        starting = self.starting() if self.starting is not None else ""
        if starting and not self.broker.is_connected:
            return False, {"nats": f"nats connection not healthy: {starting}"}
        if starting:
            return False, {"nats": "ok", "startup": starting}
        if not self.broker.is_connected:
            return False, {"nats": "nats connection not healthy"}
        timeout = min(self.broker.config.connect_timeout, MAX_CHECK_SECONDS)
        js = self.broker.js
        try:
            async with asyncio.timeout(timeout):
                await js.account_info()
        except Exception as exc:
            return False, {"nats": "ok", "jetstream": f"jetstream api not healthy: {exc!r}"}
        checks = {"nats": "ok", "jetstream": "ok"}
        for name in self.streams:
            try:
                async with asyncio.timeout(timeout):
                    await js.stream_info(name)
            except Exception as exc:
                checks[f"stream {name}"] = f"stream {name} not available: {exc!r}"
                return False, checks
            checks[f"stream {name}"] = "ok"
        return True, checks


def health_router(readiness: Readiness, exposition: Callable[[], Awaitable[bytes]]) -> APIRouter:
    router = APIRouter()

    @router.get("/livez", include_in_schema=False)
    async def livez() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ready, checks = await readiness.check()
        if ready:
            return JSONResponse({"status": "ready", "checks": checks})
        error = next(v for v in checks.values() if v != "ok")
        return JSONResponse(
            {"status": "not_ready", "error": error, "checks": checks}, status_code=503
        )

    @router.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        return Response(await exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
