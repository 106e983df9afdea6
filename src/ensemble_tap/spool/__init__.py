"""The local spool (``server.spool``): verified events kept on this node's disk while
JetStream is unreachable, and published in spool order once it answers
(docs/reliability.md, "Local spool").

``SpoolLog`` is the durable queue (``log.py``: group-committed appends, drain cursor, bound),
``Drainer`` the background task that republishes it (``drainer.py``); ``record.py`` is the
on-disk framing, ``scan.py`` the recovery scan and reads, ``files.py`` the directory.
"""

from __future__ import annotations

from pathlib import Path

from ensemble_tap.config.models import Config
from ensemble_tap.spool.drainer import Drainer, RejectHandler, SpoolPublisher
from ensemble_tap.spool.errors import (
    SpoolClosed,
    SpoolError,
    SpoolFull,
    SpoolLocked,
    SpoolWriteError,
)
from ensemble_tap.spool.log import SpoolLog
from ensemble_tap.spool.record import Position, SpooledRecord
from ensemble_tap.spool.scan import Damage, Recovered

__all__ = [
    "Damage",
    "Drainer",
    "Position",
    "Recovered",
    "RejectHandler",
    "SpoolClosed",
    "SpoolError",
    "SpoolFull",
    "SpoolLocked",
    "SpoolLog",
    "SpoolPublisher",
    "SpoolWriteError",
    "SpooledRecord",
    "spool_dir",
]


def spool_dir(config: Config) -> Path:
    """``server.spool.dir``, or ``<data_dir>/spool`` when it is empty."""
    configured = config.server.spool.dir
    return Path(configured) if configured else Path(config.data_dir) / "spool"
