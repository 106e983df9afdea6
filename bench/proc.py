"""Process helpers of the benchmarks: a throwaway nats-server, CPU time of a process with
its descendants (a service with worker processes), from /proc, and the instruction-count
runs of bench/hotpath.py and bench/sinkpath.py."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ensemble_tap.bus.embedded import free_port, nats_server_binary
from ensemble_tap.lifetime import exit_with_parent


@contextlib.contextmanager
def nats_server(root: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=exit_with_parent,  # an interrupted bench leaves no server behind
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(30)


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


REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def counted_run(
    command: list[str], workdir: Path, native: bool, env: dict[str, str] | None = None
) -> float:
    """Run a measuring child: its instruction count under callgrind, or with ``native`` the
    CPU µs it reports by printing ``cpu_seconds=<float>``."""
    if not native:
        out = workdir / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    if native:
        return float(done.stdout.strip().rsplit("=", 1)[1]) * 1e6
    match = REFS.search(done.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return float(match.group(1).replace(",", ""))


def per_unit_main(
    description: str, run: Callable[[int, bool], float], counts: tuple[int, int], unit: str
) -> int:
    """Two measured runs with different counts; prints the difference per ``unit``, so
    start-up and imports cancel out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--counts", type=int, nargs=2, default=counts, metavar=("A", "B"))
    parser.add_argument("--native", action="store_true", help=f"no valgrind: CPU µs/{unit}")
    args = parser.parse_args()
    if not args.native and shutil.which("valgrind") is None:
        print("error: valgrind is not on PATH (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    results = {count: run(count, args.native) for count in args.counts}
    (a, value_a), (b, value_b) = sorted(results.items())
    per_unit = (value_b - value_a) / (b - a)
    measure = "µs of CPU" if args.native else "instructions"
    print(f"{per_unit:,.0f} {measure} per {unit}  ({a:,} → {b:,} {unit}s: {results})")
    return 0
