"""``server.workers``: more processes serving the webhook port, started by the primary.

The primary (the ``serve`` process) binds the listening socket, starts everything as with
one process (embedded nats-server, streams, pollers, sink, admin), then starts
``workers - 1`` worker processes that accept on the same socket. A worker runs only webhook
ingress, ``/livez`` and ``/readyz`` with its own NATS connection; ``/admin/…`` and
``/metrics`` are forwarded to the primary, which merges every process's metrics. A worker
that dies is restarted with backoff; on SIGTERM the workers finish their in-flight requests
and drain NATS before the primary stops the embedded server.

Workers are *spawned* (a fresh interpreter), not forked: the primary already runs threads
(chdb, the job store) that a fork would copy in an undefined state.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import uvicorn

from ensemble_tap.asgi_types import ASGIApp
from ensemble_tap.config.models import Config
from ensemble_tap.observability import get_logger
from ensemble_tap.secret_reload import ConfigSource
from ensemble_tap.serving import TapServer
from ensemble_tap.workers.metrics import fetch_exposition
from ensemble_tap.workers.proxy import trust_peer_header

STOP_GRACE_SECONDS = 20.0
RESTART_BACKOFF = (1.0, 30.0)  # first delay, cap; doubled per crash in a row
HEALTHY_AFTER_SECONDS = 60.0  # a worker that lived this long resets the backoff
EXIT_POLL_SECONDS = 0.1
# A worker serves before it reaches NATS (it answers 503 until then): starting is importing
# the service (~1 s) and binding its metrics socket.
WORKER_START_TIMEOUT = 60.0
log = get_logger("ensemble_tap.workers")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker process gets besides the config."""

    index: int
    control_dir: str
    listener: socket.socket
    # Where the config came from, so a worker reloads its secrets itself on SIGHUP.
    source: ConfigSource | None = None

    @property
    def metrics_socket(self) -> Path:
        return metrics_socket(Path(self.control_dir), self.index)

    @property
    def primary_socket(self) -> Path:
        return primary_socket(Path(self.control_dir))


# A worker's service (``app.serve_worker``, injected by the composition root); a module-level
# function, so it pickles by name into the spawned process.
ServeWorker = Callable[[Config, WorkerSpec], Coroutine[Any, Any, None]]


def metrics_socket(control_dir: Path, index: int) -> Path:
    return control_dir / f"worker-{index}.sock"


def primary_socket(control_dir: Path) -> Path:
    return control_dir / "primary.sock"


class WorkerPool:
    """The primary's view of its workers: start, restart, metrics, stop."""

    def __init__(
        self,
        config: Config,
        primary_asgi: ASGIApp,
        listener: socket.socket,
        *,
        serve_worker: ServeWorker,
        source: ConfigSource | None = None,
    ) -> None:
        self.config = config  # what workers run: nats.url names the primary's server
        self.source = source
        self.count = config.server.workers - 1
        self.listener = listener
        self.control_dir = Path(tempfile.mkdtemp(prefix="ensemble-tap-"))
        self._primary_asgi = primary_asgi
        self._serve_worker = serve_worker
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, BaseProcess] = {}
        self._monitors: list[asyncio.Task[None]] = []
        self._internal: TapServer | None = None
        self._internal_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Open the primary's internal listener, then start every worker and wait until each
        serves (or raise when one cannot start)."""
        await self._start_internal_listener()
        for index in range(1, self.count + 1):
            self._spawn(index)
        await asyncio.gather(
            *(self._wait_started(i, WORKER_START_TIMEOUT) for i in self._processes)
        )
        self._monitors = [asyncio.create_task(self._watch(i)) for i in self._processes]
        log.info("workers started", workers=self.count + 1, pids=self.pids())

    def pids(self) -> list[int]:
        return [p.pid for p in self._processes.values() if p.pid is not None]

    async def collect_metrics(self) -> list[bytes]:
        texts = await asyncio.gather(
            *(fetch_exposition(metrics_socket(self.control_dir, i)) for i in self._processes)
        )
        return [text for text in texts if text is not None]

    def reload_secrets(self) -> None:
        """Pass a SIGHUP on: each worker loads the config again and takes its secrets."""
        for process in self._processes.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)

    def terminate(self) -> None:
        """Ask every worker to finish its in-flight requests and exit (SIGTERM)."""
        self._stopping = True
        for process in self._processes.values():
            if process.is_alive():
                process.terminate()

    async def stop(self) -> None:
        self.terminate()
        for task in self._monitors:
            task.cancel()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for index, process in self._processes.items():
            await _wait_exit(process, max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                log.error("worker did not stop in time: killed", worker=index, pid=process.pid)
                process.kill()
                await _wait_exit(process, 5.0)
        if self._internal is not None and self._internal_task is not None:
            self._internal.should_exit = True
            await self._internal_task
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def _spawn(self, index: int) -> None:
        from ensemble_tap.workers.worker import run_worker

        spec = WorkerSpec(index, str(self.control_dir), self.listener, self.source)
        spec.metrics_socket.unlink(missing_ok=True)  # left behind by a worker that was killed
        process = self._context.Process(
            target=run_worker,
            args=(self._serve_worker, self.config, spec),
            name=f"ensemble-tap-worker-{index}",
            daemon=True,
        )
        process.start()
        self._processes[index] = process

    async def _wait_started(self, index: int, timeout: float) -> None:
        process = self._processes[index]
        ready = metrics_socket(self.control_dir, index)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if not process.is_alive():
                raise RuntimeError(
                    f"worker {index} exited during start-up (exit code {process.exitcode})"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {index} did not start within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def _watch(self, index: int) -> None:
        """Restart the worker whenever it exits while the service runs."""
        delay = RESTART_BACKOFF[0]
        while True:
            started = time.monotonic()
            process = self._processes[index]
            await _wait_exit(process, None)
            if self._stopping:
                return
            if time.monotonic() - started > HEALTHY_AFTER_SECONDS:
                delay = RESTART_BACKOFF[0]
            log.error(
                "worker exited: restarting",
                worker=index,
                exit_code=process.exitcode,
                restart_in_seconds=delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_BACKOFF[1])
            if self._stopping:
                return
            self._spawn(index)
            try:
                await self._wait_started(index, WORKER_START_TIMEOUT)
            except RuntimeError as exc:
                log.error("worker restart failed", worker=index, error=str(exc))
                continue
            log.info("worker restarted", worker=index, pid=self._processes[index].pid)

    async def _start_internal_listener(self) -> None:
        config = uvicorn.Config(
            trust_peer_header(self._primary_asgi),
            uds=str(primary_socket(self.control_dir)),
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_config=None,
        )
        self._internal = TapServer(config)
        self._internal_task = asyncio.create_task(self._internal.serve())
        while not self._internal.started:
            if self._internal_task.done():
                await self._internal_task
                raise RuntimeError("the internal listener for workers did not start")
            await asyncio.sleep(0.01)


async def _wait_exit(process: BaseProcess, timeout: float | None) -> None:
    """Wait for ``process`` to exit without blocking the loop. Polled: watching the
    sentinel fd with uvloop missed exits once fd numbers were reused after a restart."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while process.is_alive():
        if deadline is not None and time.monotonic() >= deadline:
            return
        await asyncio.sleep(EXIT_POLL_SECONDS)
    process.join(0)
