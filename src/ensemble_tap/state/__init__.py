"""Poll state: checkpoints per target and stream, record snapshots, rotated OAuth tokens.

``memory`` keeps state for the life of the process; ``sqlite`` keeps it in one file (default
``<data_dir>/tap-state.db``) and is the choice for one process that must survive a restart;
``nats`` keeps it in JetStream KV, shared by every replica (``jetstream.py``; opened by the
poller service with the broker's JetStream context, ``NatsStateStore.open``).
"""

from __future__ import annotations

from pathlib import Path

from ensemble_tap.config.models import StateConfig
from ensemble_tap.state.base import (
    Position,
    SnapshotWrite,
    StateError,
    StateStore,
    StoredSnapshot,
    StreamState,
)
from ensemble_tap.state.jetstream import NatsStateStore, StaleCheckpoint
from ensemble_tap.state.memory import MemoryStateStore
from ensemble_tap.state.sqlite import SqliteStateStore


def default_sqlite_path(config: StateConfig, data_dir: str) -> str:
    return config.sqlite_path.strip() or str(Path(data_dir) / "tap-state.db")


def open_state_store(config: StateConfig, data_dir: str) -> StateStore:
    """The configured local store; raises StateError when the SQLite file cannot be used."""
    if config.backend == "nats":
        raise ValueError("state.backend nats: open it with NatsStateStore.open(jetstream)")
    if config.backend == "sqlite":
        return SqliteStateStore(default_sqlite_path(config, data_dir))
    return MemoryStateStore()


__all__ = [
    "MemoryStateStore",
    "NatsStateStore",
    "Position",
    "SnapshotWrite",
    "SqliteStateStore",
    "StaleCheckpoint",
    "StateError",
    "StateStore",
    "StoredSnapshot",
    "StreamState",
    "default_sqlite_path",
    "open_state_store",
]
