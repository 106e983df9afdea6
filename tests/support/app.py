"""Run the real service (TapApp behind uvicorn) on a loopback port in a background thread."""

from __future__ import annotations

import asyncio
import threading

from ensemble_tap.app import ALL_ROLES, TapApp, uvicorn_config
from ensemble_tap.bus.embedded import free_port
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics
from ensemble_tap.serving import TapServer


class RunningApp:
    def __init__(
        self, config: Config, roles: frozenset[str] = ALL_ROLES, wait_ready: bool = True
    ) -> None:
        """``wait_ready``: ``start()`` returns once NATS is reached and every part runs;
        without it, as soon as HTTP is served."""
        self.port = free_port()
        self.wait_ready = wait_ready
        self.config = config
        self.metrics = Metrics()
        self.app = TapApp(config, self.metrics, roles=roles)
        self._server: TapServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RunningApp:
        self._thread = threading.Thread(target=self._run, name="tap-app", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("app did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            await self.app.start()
            if self.wait_ready:
                await self.app.wait_ready()
            self._server = TapServer(uvicorn_config(self.app, host="127.0.0.1", port=self.port))
            serve = asyncio.create_task(self._server.serve())
            while not self._server.started and not serve.done():  # noqa: ASYNC110 (no event)
                await asyncio.sleep(0.01)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await serve
        finally:
            await self.app.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value
