"""Long variants of the fault tests (tests/faults): the same scenarios with more events and
longer outages.

Each scenario runs real processes (nats-server, ``ensemble-tap serve``, ``--role`` processes,
the chdb-backed ClickHouse HTTP adapter), sends signed webhooks that are retried until a 2xx,
injects its fault mid-load and verifies from JetStream (and ClickHouse) what was stored.
Prints a table of lost / duplicated / recovery per scenario and writes it to
bench/results/faults-<UTC time>.{txt,json} (git-ignored). Exit status: 0 when every scenario
ran and lost and duplicated nothing, 1 otherwise.

    .venv/bin/python bench/faults.py
    .venv/bin/python bench/faults.py --events 20000 --rate 1000 --outage 20 service-sigkill
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the scenarios live in tests/faults

from tests.faults.harness import FaultReport  # noqa: E402
from tests.faults.scenarios import Scale, catalogue  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
COLUMNS = (
    "scenario",
    "events",
    "lost",
    "dup",
    "recovery s",
    "fault s",
    "affected",
    "retried",
    "non-2xx answers",
)


def parse_args() -> argparse.Namespace:
    names = list(catalogue())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"default: all of {', '.join(names)}"
    )
    parser.add_argument("--events", type=int, default=5000, help="deliveries per scenario")
    parser.add_argument("--rate", type=float, default=500.0, help="deliveries per second, at most")
    parser.add_argument("--connections", type=int, default=16, help="sender connections")
    parser.add_argument(
        "--restart-after", type=float, default=2.0, help="seconds from a SIGKILL to the restart"
    )
    parser.add_argument(
        "--outage",
        type=float,
        default=10.0,
        help="seconds the broker or ClickHouse stays down (or the broker absent at start)",
    )
    parser.add_argument(
        "--deadline", type=float, default=600.0, help="seconds a delivery is retried, at most"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(names)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}: choose from {names}")
    args.scenarios = args.scenarios or names
    return args


def row(result: FaultReport) -> tuple[str, ...]:
    recovery = "never" if result.recovery_seconds is None else f"{result.recovery_seconds:.2f}"
    answers = ", ".join(f"{name}×{count}" for name, count in result.outcomes) or "—"
    return (
        result.scenario,
        str(result.events),
        str(result.lost),
        str(result.duplicated),
        recovery,
        f"{result.fault_seconds:.2f}",
        str(result.affected),
        str(result.retried),
        answers,
    )


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(COLUMNS), line(tuple("-" * w for w in widths)), *map(line, rows)])


def source_revision() -> str:
    """The checked-out commit, ``+dirty`` when src/ has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "src") else "")


async def run(args: argparse.Namespace, workdir: Path) -> tuple[list[FaultReport], list[str]]:
    scale = Scale(
        events=args.events,
        rate=args.rate,
        connections=args.connections,
        restart_after=args.restart_after,
        outage=args.outage,
        deadline=args.deadline,
    )
    scenarios = catalogue()
    results: list[FaultReport] = []
    errors: list[str] = []
    for name in args.scenarios:
        print(f"… {name}", flush=True)
        started = time.monotonic()
        try:
            result = await scenarios[name](workdir / name, scale)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            continue
        results.append(result)
        print(f"  {result.summary()} [{time.monotonic() - started:.0f} s]", flush=True)
    return results, errors


def main() -> int:
    args = parse_args()
    # SIGTERM stops a run as Ctrl-C does: every scenario stops what it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="tap-faults-"))
    try:
        results, errors = asyncio.run(run(args, workdir))
    finally:
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    command = " ".join([".venv/bin/python bench/faults.py", *sys.argv[1:]])
    text = "\n".join(
        [
            f"fault scenarios, {started:%Y-%m-%d %H:%M} UTC, revision {source_revision()}",
            f"command: {command}",
            "",
            table([row(r) for r in results]),
            *(f"\n  !! {error}" for error in errors),
        ]
    )
    bad = [r.scenario for r in results if r.lost or r.duplicated]
    if bad:
        text += f"\n\n  !! lost or duplicated events: {', '.join(bad)}"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"faults-{started:%Y%m%dT%H%M%SZ}"
    stem.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    record = {
        "started": started.isoformat(),
        "command": command,
        "revision": source_revision(),
        "options": vars(args),
        "reports": [asdict(r) for r in results],
        "errors": errors,
    }
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print("\n" + text)
    print(f"\n  results: {stem}.txt / .json")
    return 1 if errors or bad else 0


if __name__ == "__main__":
    sys.exit(main())
