"""Poll state: checkpoints per target and stream, record snapshots, rotated OAuth tokens.

``memory`` keeps state for the life of the process; ``sqlite`` keeps it in one file (default
``<data_dir>/tap-state.db``) and is the choice for anything that must survive a restart.
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
from ensemble_tap.state.memory import MemoryStateStore
from ensemble_tap.state.sqlite import SqliteStateStore


def default_sqlite_path(config: StateConfig, data_dir: str) -> str:
    return config.sqlite_path.strip() or str(Path(data_dir) / "tap-state.db")


def open_state_store(config: StateConfig, data_dir: str) -> StateStore:
    """The configured store; raises StateError when the SQLite file cannot be used."""
    if config.backend == "sqlite":
        return SqliteStateStore(default_sqlite_path(config, data_dir))
    return MemoryStateStore()


__all__ = [
    "MemoryStateStore",
    "Position",
    "SnapshotWrite",
    "SqliteStateStore",
    "StateError",
    "StateStore",
    "StoredSnapshot",
    "StreamState",
    "default_sqlite_path",
    "open_state_store",
]
