"""Child processes (worker processes, the embedded nats-server) never outlive the service."""

from __future__ import annotations

import ctypes
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
# Looked up once here: a preexec_fn runs between fork and exec, no place to load libraries.
_prctl: Any = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def exit_with_parent() -> None:
    """Linux: deliver SIGTERM to this process when its parent dies, even by SIGKILL, so a
    child never keeps the port or the JetStream store after an OOM kill. One system call,
    fit for a ``preexec_fn``; a no-op elsewhere."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
