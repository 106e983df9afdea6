"""SIGKILL while appending: every append whose await returned before the kill is there after
the next open, nothing is there twice, and the log takes appends and drains after it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ensemble_tap.lifetime import exit_with_parent
from ensemble_tap.spool import SpoolLog
from tests.support.spool import drain_all
from tests.support.spool_child import payload

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
ACKS_BEFORE_KILL = 1500


def _run_and_kill(directory: Path, first: int) -> list[int]:
    """Start a child appending from id ``first``, SIGKILL it mid-stream; the ids it reported
    durable."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.spool_child", str(directory), str(first)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        preexec_fn=exit_with_parent,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"ready\n"
        acked: list[int] = []
        while len(acked) < ACKS_BEFORE_KILL:
            line = child.stdout.readline()
            assert line, f"child ended early with {child.poll()}"
            acked.append(int(line))
        child.send_signal(signal.SIGKILL)
        child.wait()
        # Lines written before the kill are still in the pipe; a cut last line is ignored.
        rest = child.stdout.read().split(b"\n")
        acked += [int(line) for line in rest[:-1]]
        return acked
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


async def test_sigkill_while_appending_loses_no_acknowledged_record(tmp_path: Path) -> None:
    acked: list[int] = []
    for round_ in range(ROUNDS):  # each child opens what the killed one left behind
        acked += _run_and_kill(tmp_path, round_ * 1_000_000)

    log = SpoolLog(tmp_path, max_bytes=1 << 34, segment_bytes=1 << 20)
    await log.open()
    await log.append("tap.crash.test", payload(-1), "id--1", "req")
    records = await drain_all(log, batch=500)
    await log.close()

    stored = [int(r.msg_id.removeprefix("id-")) for r in records]
    assert stored[-1] == -1
    stored = stored[:-1]
    assert len(stored) == len(set(stored))  # nothing twice
    assert stored == sorted(stored)  # spool order is append order
    assert set(acked) <= set(stored)  # every durable acknowledgement kept
    assert all(r.payload == payload(int(r.msg_id[3:])) for r in records)
    assert len(acked) >= ROUNDS * ACKS_BEFORE_KILL
