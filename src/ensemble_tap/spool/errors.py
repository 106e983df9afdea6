"""What a spool append can fail with. Every one means "not stored": answer 503."""

from __future__ import annotations


class SpoolError(Exception):
    """The event was not spooled."""


class SpoolFull(SpoolError):
    """Appending would take the spool past ``max_bytes``."""

    def __init__(self, needed: int, used: int, max_bytes: int) -> None:
        super().__init__(f"spool full: {used} of {max_bytes} bytes used, {needed} more needed")
        self.needed = needed
        self.used = used
        self.max_bytes = max_bytes


class SpoolWriteError(SpoolError):
    """The disk refused the write or the fsync (e.g. no space left, I/O error)."""


class SpoolClosed(SpoolError):
    """The spool is closed, not open yet, or stopped taking appends after a disk error it
    could not repair."""


class SpoolLocked(SpoolError):
    """Another process owns the spool directory."""
