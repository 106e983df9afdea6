"""CPU time of a process and its descendants (a service with worker processes), from /proc."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and every living descendant."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])  # ppid (field 4)
    tree = {root}
    while found := {pid for pid, ppid in parents.items() if ppid in tree} - tree:
        tree |= found
    return tree
