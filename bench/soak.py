"""Soak: the service at a steady share of its measured maximum for minutes on end.

First a short unthrottled run measures the maximum rate (as bench/ingress.py does), then wrk
sends unique signed webhooks at ``--share`` of it for ``--minutes``, one wrk run a minute
(each from its own pre-generated requests, so none is sent twice). Reported per minute: the
rate reached, wrk's p99 and the service's resident memory (every process of it); at the end
the check that every accepted event is stored exactly once (stream == 202s of the service).

    .venv/bin/python bench/soak.py                      # 10 minutes at 70 %
    .venv/bin/python bench/soak.py --minutes 2 --rate 3000

Needs ``wrk`` (``apt-get install -y wrk``). Results go to bench/results/soak-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ensemble_tap.bus.embedded import free_port
from ingress import (
    LAUNCHER,
    RESULTS_DIR,
    WEBHOOK_PATH,
    BenchError,
    Child,
    Options,
    run_wrk,
    settled_counters,
    start_nats,
    start_service,
    stream_state,
    write_request_files,
    write_service_config,
    wrk_options,
)
from proc import process_tree

SOAK_SCRIPT = Path(__file__).resolve().parent / "soak.lua"


@dataclass(frozen=True, slots=True)
class Minute:
    minute: int
    rate: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    rss_mib: float


def tree_rss_mib(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def options(args: argparse.Namespace, duration: int) -> Options:
    return wrk_options(args.connections, args.threads, duration, args.workers)


def soak(args: argparse.Namespace, root: Path) -> dict[str, object]:
    nats_port, http_port = free_port(), free_port()
    env = {"PATH": "/usr/bin:/bin"}
    nats = start_nats(root / "nats", nats_port, env)
    stream = f"SOAK_{int(time.time())}"
    config = root / "config.yaml"
    write_service_config(
        config, root / "data", http_port, f"nats://127.0.0.1:{nats_port}", stream, args.workers
    )
    base = f"http://127.0.0.1:{http_port}"
    service: Child | None = None
    try:
        service = start_service(LAUNCHER, config, root / "service.log", base, env)
        threads = args.threads
        rate = args.rate
        if rate is None:  # measure the maximum first
            count = args.probe_seconds * 20_000 // threads
            write_request_files(root / "probe", threads, count, "127.0.0.1", WEBHOOK_PATH, "p")
            probe = run_wrk("probe", options(args, args.probe_seconds), base + WEBHOOK_PATH,
                            root / "probe", "once", args.probe_seconds)  # fmt: skip
            maximum = (probe.completed - probe.non_2xx) / probe.duration_s
            rate = maximum * args.share
            print(f"maximum {maximum:,.0f} webhooks/s; soaking at {rate:,.0f}/s", flush=True)
        before = settled_counters(base)
        nats_url = f"nats://127.0.0.1:{nats_port}"
        stored_before = asyncio.run(stream_state(nats_url, stream)).messages
        minutes: list[Minute] = []
        per_thread = int(rate * 60 * 1.2 / threads) + 1000
        for minute in range(1, args.minutes + 1):
            prefix = root / f"minute{minute}"
            write_request_files(
                prefix, threads, per_thread, "127.0.0.1", WEBHOOK_PATH, f"m{minute}"
            )
            run = run_wrk(f"minute {minute}", options(args, 60), base + WEBHOOK_PATH, prefix,
                          "once", 60, SOAK_SCRIPT, (f"{rate / threads:.3f}",))  # fmt: skip
            for path in root.glob(f"minute{minute}-*.req"):
                path.unlink()
            errors = sum(run.socket_errors.values())
            minutes.append(
                Minute(minute, (run.completed - run.non_2xx) / run.duration_s,
                       run.latency_ms["p99"], run.non_2xx, errors, tree_rss_mib(service.pid))
            )  # fmt: skip
            m = minutes[-1]
            print(f"minute {minute:>2}: {m.rate:>8,.0f}/s  p99 {m.p99_ms:6.1f} ms  "
                  f"non-2xx {m.non_2xx}  socket errors {errors}  RSS {m.rss_mib:,.0f} MiB",
                  flush=True)  # fmt: skip
        after = settled_counters(base).minus(before)
        state = asyncio.run(stream_state(nats_url, stream))
        stored = state.messages - stored_before
        return {
            "rate_target": rate,
            "minutes": [asdict(m) for m in minutes],
            "accepted": after.accepted,
            "stored": stored,
            "outcomes": after.outcomes,
            "dedup_hits": after.dedup_hits,
            "dlq": state.dlq_messages,
            "rss_growth_mib": minutes[-1].rss_mib - minutes[0].rss_mib if minutes else 0.0,
            "lost": after.accepted - stored,  # negative: stored twice
        }
    finally:
        if service is not None:
            service.stop()
        nats.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--share", type=float, default=0.7, help="of the measured maximum")
    parser.add_argument("--rate", type=float, help="webhooks/s instead of a share")
    parser.add_argument("--probe-seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    RESULTS_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tap-soak-") as root:
        try:
            result = soak(args, Path(root))
        except BenchError as exc:
            print(f"soak could not run: {exc}", file=sys.stderr)
            return 2
    out = RESULTS_DIR / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "minutes"}, indent=2))
    print(f"written to {out}")
    clean = result["lost"] == 0 and result["dedup_hits"] == 0 and result["dlq"] == 0
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
