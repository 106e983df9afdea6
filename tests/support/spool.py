"""Helpers for spool tests: an fsync that counts (and can hold or fail), draining a log."""

from __future__ import annotations

import errno
import os
import stat
import threading

from ensemble_tap.spool import SpooledRecord, SpoolLog


class RecordingFsync:
    """``os.fsync`` that counts file and directory syncs. ``hold()`` makes the next file
    fsync wait for ``release()``; ``fail_next`` fails that many file fsyncs (ENOSPC)."""

    def __init__(self) -> None:
        self.files = 0
        self.dirs = 0
        self.fail_next = 0
        self.entered = threading.Event()
        self._gate: threading.Event | None = None

    def hold(self) -> None:
        self.entered.clear()
        self._gate = threading.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def __call__(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.dirs += 1
            os.fsync(fd)
            return
        self.files += 1
        gate = self._gate
        self.entered.set()
        if gate is not None:
            gate.wait(30)
        if self.fail_next:
            self.fail_next -= 1
            raise OSError(errno.ENOSPC, "No space left on device (test)")
        os.fsync(fd)


async def drain_all(log: SpoolLog, batch: int = 100) -> list[SpooledRecord]:
    """Read and commit everything the log holds, in order."""
    drained: list[SpooledRecord] = []
    while records := await log.read_batch(batch):
        await log.commit(records)
        drained += records
    return drained


async def read_all(log: SpoolLog) -> list[SpooledRecord]:
    """Everything the log holds, without committing (the first batch large enough)."""
    return await log.read_batch(1_000_000, 1 << 40)
