"""A worker process's entry point (the target the primary spawns).

What a worker serves comes from the composition root (``app.serve_worker``, handed to the
pool), so this package never imports ``app``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

import structlog

from ensemble_tap.config.models import Config
from ensemble_tap.lifetime import exit_with_parent
from ensemble_tap.workers.pool import ServeWorker, WorkerSpec


def run_worker(serve_worker: ServeWorker, config: Config, spec: WorkerSpec) -> None:
    """Serve webhooks on the shared listener until SIGTERM/SIGINT or the primary's death."""
    from ensemble_tap.observability import configure_logging
    from ensemble_tap.serving import run

    exit_with_parent()
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid != os.getppid():
        return  # the primary died before exit_with_parent() took effect
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    configure_logging(config.log_level)
    structlog.contextvars.bind_contextvars(worker=spec.index)  # on every line of this process
    try:
        run(serve_worker(config, spec))
    except Exception as exc:
        from ensemble_tap.observability import get_logger

        get_logger("ensemble_tap.workers").error(
            "worker failed", worker=spec.index, error=str(exc) or type(exc).__name__
        )
        sys.exit(1)
