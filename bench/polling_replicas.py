"""Polling over replicas (issue 15): bench/polling.py's targets shared by poller processes.

    .venv/bin/python bench/polling.py --replicas 3 [--targets 3000] [--interval 30]
                                      [--windows 2] [--lease-ttl 15]

The fakes and nats-server as in bench/polling.py; then ``--replicas`` processes (this script
again, ``--replica-child``), each one ``PollerService`` with ``state.backend: nats``, its own
Broker connection and replica name. The targets spread over them through the poller leases
(poller/leases.py), so a replica's schedulers start and stop as it takes and gives back
leases. Each replica appends a line per cycle (target, start time, duration, outcome, events,
requests) and one per second (leases held) to ``<run dir>/<replica>.jsonl``.

The parent waits until the leases are spread (every replica within one of its fair share,
all targets held) and every target cycled once, lets one more interval pass (the backfill),
then measures ``--windows`` windows of one interval: per replica the CPU of its process (from
/proc, so all its threads), the leases it held, its cycles; overall the cycles per target
per interval, the targets cycled by two replicas in one window, failed cycles, events, and
the requests the fake APIs counted. Over the measured span, per target: the shortest and
longest time between two cycle starts (whichever replica ran them): shorter than the
jittered interval means polled twice, longer means missed.

Exit status 0 when no cycle failed, no target was polled twice or missed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import nats

from ensemble_tap.bus.connection import Broker
from ensemble_tap.bus.dlq import DeadLetterWriter
from ensemble_tap.bus.embedded import free_port
from ensemble_tap.bus.publisher import JetStreamPublisher
from ensemble_tap.bus.streams import dlq_stream_config, ensure_stream, main_stream_config
from ensemble_tap.lifetime import exit_with_parent
from ensemble_tap.observability import Metrics, configure_logging
from ensemble_tap.poller.engine import CycleStats, PollEngine
from ensemble_tap.poller.leases import LeaseLost
from ensemble_tap.poller.service import PollerService
from ensemble_tap.state import StateStore
from polling import (
    BENCH_DIR,
    JITTER,
    REQUEST_COUNTS,
    RESULTS_DIR,
    config_for,
    start_fakes,
    wait_fakes,
)
from proc import tree_cpu_seconds

STATUS_EVERY = 1.0
SETTLE_TIMEOUT = 600.0  # leases spread and every target cycled once, or the run fails
DOUBLE_SLACK = 1.0  # a gap this much under the shortest jittered interval: polled twice
STOP_TIMEOUT = 60.0  # a replica's SIGTERM to exit (leases given back)
MISS_SLACK = 2.0  # a gap this much over the longest jittered interval: missed


# -------------------------------------------------------------------------- a replica


class RecordingPoller(PollerService):
    """A PollerService that writes one line per cycle of each target it polls."""

    def __init__(self, *args: Any, out: IO[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out = out

    def _build(self, store: StateStore) -> None:
        super()._build(store)  # every scheduler exists now; a lease taken starts one
        for scheduler in self.schedulers:
            self._wrap(scheduler.engine)

    def _wrap(self, engine: PollEngine) -> None:
        original = engine.run_cycle

        async def run_cycle() -> CycleStats:
            started, perf = time.time(), time.perf_counter()
            outcome = "ok"
            try:
                return await original()
            except LeaseLost:
                outcome = "fenced"
                raise
            except BaseException:
                outcome = "failed"
                raise
            finally:
                stats = engine.last_stats
                line = {"k": engine.state_key, "t": started, "d": time.perf_counter() - perf,
                        "o": outcome, "e": stats.published, "q": stats.requests}  # fmt: skip
                self.out.write(json.dumps(line) + "\n")

        engine.run_cycle = run_cycle  # type: ignore[method-assign]


async def run_replica(args: argparse.Namespace) -> None:
    """Child process: one replica until SIGTERM, then give the leases back and leave."""
    configure_logging(args.log_level)
    name = args.replica_child
    urls = json.loads((args.run_dir / "fakes.json").read_text())
    config = config_for(urls, args, args.nats_url, str(args.run_dir / name))
    metrics = Metrics()
    broker = Broker(config.nats, [args.nats_url], metrics)
    await broker.connect()
    publisher = JetStreamPublisher(broker, config.nats, metrics)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with (args.run_dir / f"{name}.jsonl").open("a", buffering=1) as out:
        service = RecordingPoller(config, publisher=publisher, metrics=metrics,
                                  dlq=DeadLetterWriter(publisher, metrics), broker=broker,
                                  replica=name, out=out)  # fmt: skip
        await service.start()
        while not stop.is_set():
            held = len(service.keeper.held()) if service.keeper is not None else 0
            out.write(json.dumps({"t": time.time(), "held": held}) + "\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY)
        await service.stop()
    await broker.close()


# -------------------------------------------------------------------------- the parent


@dataclass(slots=True, frozen=True)
class Cycle:
    replica: str
    target: str
    start: float
    duration: float
    outcome: str
    events: int
    requests: int


class Lines:
    """The lines a replica appended so far, read as they come."""

    def __init__(self, path: Path, replica: str) -> None:
        self.path, self.replica = path, replica
        self._offset = 0
        self.cycles: list[Cycle] = []
        self.held: list[tuple[float, int]] = []

    def read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for raw in complete.splitlines():
            line = json.loads(raw)
            if "held" in line:
                self.held.append((line["t"], line["held"]))
            else:
                self.cycles.append(Cycle(self.replica, line["k"], line["t"], line["d"],
                                         line["o"], line["e"], line["q"]))  # fmt: skip

    def held_at(self, moment: float) -> int:
        return next((n for t, n in reversed(self.held) if t <= moment), 0)


@dataclass
class ReplicaWindow:
    replica: str
    cpu_seconds: float
    cpu_share: float  # of one core
    held_min: int  # leases held, lowest and highest of the per-second samples
    held_max: int
    cycles: int
    failed: int
    fenced: int
    events: int
    requests: int
    rss_mb: float


@dataclass
class ReplicasWindow:
    seconds: float
    replicas: list[ReplicaWindow]
    cycles: int
    targets_cycled: int
    cycles_per_target_per_interval: float
    targets_by_two_replicas: int  # cycled by more than one replica in this window
    failed: int
    events: int
    requests: int
    requests_at_fakes: int
    latency_p50_ms: float
    latency_p95_ms: float
    other_cpu_share: dict[str, float]  # fakes, nats-server


@dataclass
class Span:
    """Per target over the measured windows: time between two cycle starts."""

    cycles: int = 0
    cycles_per_target_per_interval: float = 0.0
    targets_cycled: int = 0
    shortest_gap_s: float = 0.0
    longest_gap_s: float = 0.0
    polled_twice: int = 0  # gaps shorter than the jittered interval allows
    missed: int = 0  # gaps longer than it allows (targets not cycled at all count 1)
    handovers: int = 0  # consecutive cycles of a target by two different replicas


@dataclass
class ReplicasResult:
    started_at: str
    targets: int
    replicas: int
    interval: float
    lease_ttl: float
    records: int
    churn: float
    load_average: str
    settle_seconds: float = 0.0
    windows: list[ReplicasWindow] = field(default_factory=list)
    span: Span = field(default_factory=Span)
    events_recorded: int = 0  # by every cycle of the run
    stream_messages: int = 0  # in the stream at the end
    verdict: str = ""


def rss_mb(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def fake_requests_at(run_dir: Path, moment: float) -> int:
    found = 0
    with (run_dir / REQUEST_COUNTS).open() as handle:
        for raw in handle:
            line = json.loads(raw)
            if line["t"] > moment:
                break
            found = line["requests"]
    return int(found)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def settle(readers: list[Lines], targets: int, children: list[subprocess.Popen[bytes]]) -> None:
    """Until every target is held (each replica within one of its fair share) and cycled."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if any(child.poll() is not None for child in children):
            raise SystemExit("a replica exited during the warm-up")
        for reader in readers:
            reader.read()
        held = [reader.held[-1][1] if reader.held else 0 for reader in readers]
        cycled = {c.target for reader in readers for c in reader.cycles if c.outcome == "ok"}
        if sum(held) == targets and max(held) - min(held) <= 1 and len(cycled) == targets:
            return
        print(f"warm-up: leases held {held}, targets cycled {len(cycled)}", file=sys.stderr)
    raise SystemExit(f"leases not spread or targets not cycled after {SETTLE_TIMEOUT:.0f} s")


def sample(pids: dict[str, int]) -> tuple[float, dict[str, float]]:
    return time.time(), {name: tree_cpu_seconds(pid) for name, pid in pids.items()}


def window_of(
    readers: list[Lines],
    *,
    bounds: tuple[float, float],
    cpu: tuple[dict[str, float], dict[str, float]],
    pids: dict[str, int],
    args: argparse.Namespace,
) -> ReplicasWindow:
    begin, end = bounds
    seconds = end - begin
    rows: list[ReplicaWindow] = []
    by_target: dict[str, set[str]] = defaultdict(set)
    cycles: list[Cycle] = []
    for reader in readers:
        mine = [c for c in reader.cycles if begin <= c.start < end]
        cycles += mine
        for c in mine:
            by_target[c.target].add(reader.replica)
        held = [n for t, n in reader.held if begin <= t < end] or [reader.held_at(end)]
        used = cpu[1][reader.replica] - cpu[0][reader.replica]
        rows.append(ReplicaWindow(
            replica=reader.replica, cpu_seconds=round(used, 2),
            cpu_share=round(used / seconds, 4), held_min=min(held), held_max=max(held),
            cycles=len(mine), failed=sum(c.outcome == "failed" for c in mine),
            fenced=sum(c.outcome == "fenced" for c in mine), events=sum(c.events for c in mine),
            requests=sum(c.requests for c in mine), rss_mb=round(rss_mb(pids[reader.replica]), 1),
        ))  # fmt: skip
    others = {name: round((cpu[1][name] - cpu[0][name]) / seconds, 4)
              for name in ("fakes", "nats-server")}  # fmt: skip
    durations = [c.duration for c in cycles]
    return ReplicasWindow(
        seconds=round(seconds, 2),
        replicas=rows,
        cycles=len(cycles),
        targets_cycled=len(by_target),
        cycles_per_target_per_interval=round(
            len(cycles) / args.targets / (seconds / args.interval), 3
        ),
        targets_by_two_replicas=sum(len(names) > 1 for names in by_target.values()),
        failed=sum(c.outcome != "ok" for c in cycles),
        events=sum(c.events for c in cycles),
        requests=sum(c.requests for c in cycles),
        requests_at_fakes=fake_requests_at(args.run_dir, end)
        - fake_requests_at(args.run_dir, begin),
        latency_p50_ms=round(percentile(durations, 0.5) * 1000, 1),
        latency_p95_ms=round(percentile(durations, 0.95) * 1000, 1),
        other_cpu_share=others,
    )


def span_of(readers: list[Lines], begin: float, end: float, args: argparse.Namespace) -> Span:
    """Gaps between consecutive cycle starts of each target whose later start is measured."""
    shortest = args.interval * (1 - JITTER) - DOUBLE_SLACK
    longest = args.interval * (1 + JITTER) + MISS_SLACK
    starts: dict[str, list[Cycle]] = defaultdict(list)
    for reader in readers:
        for c in reader.cycles:
            if begin - longest <= c.start < end:
                starts[c.target].append(c)
    span = Span(shortest_gap_s=float("inf"))
    for cycles in starts.values():
        cycles.sort(key=lambda c: c.start)
        measured = [c for c in cycles if c.start >= begin]
        span.cycles += len(measured)
        span.targets_cycled += bool(measured)
        for before, after in itertools.pairwise(cycles):
            if after.start < begin:
                continue
            gap = after.start - before.start
            span.handovers += before.replica != after.replica
            span.longest_gap_s = max(span.longest_gap_s, gap)
            if before.outcome == "ok":  # a failed cycle is retried after a short backoff
                span.shortest_gap_s = min(span.shortest_gap_s, gap)
                span.polled_twice += gap < shortest
            span.missed += gap > longest
        # No cycle in the jittered interval before the first or after the last measured one.
        span.missed += cycles[0].start - begin > longest
        span.missed += end - cycles[-1].start > longest
    span.missed += args.targets - len(starts)
    span.shortest_gap_s = round(span.shortest_gap_s if starts else 0.0, 2)
    span.longest_gap_s = round(span.longest_gap_s, 2)
    span.cycles_per_target_per_interval = round(
        span.cycles / args.targets / ((end - begin) / args.interval), 3
    )
    return span


async def prepare_streams(args: argparse.Namespace, urls: dict[str, str], url: str) -> None:
    config = config_for(urls, args, url, str(args.run_dir / "parent"))
    broker = Broker(config.nats, [url], Metrics())
    await broker.connect()
    try:
        await ensure_stream(broker.js, main_stream_config(config.nats))
        await ensure_stream(broker.js, dlq_stream_config(config.nats))
    finally:
        await broker.close()


async def stream_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info("POLLBENCH")).state.messages)
    finally:
        await nc.close()


def spawn_replica(args: argparse.Namespace, name: str, url: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(BENCH_DIR / "polling.py"), "--replica-child", name,
               "--run-dir", str(args.run_dir), "--nats-url", url, "--replicas",
               str(args.replicas), "--targets", str(args.targets), "--interval",
               str(args.interval), "--lease-ttl", str(args.lease_ttl), "--log-level",
               args.log_level]  # fmt: skip
    return subprocess.Popen(command, cwd=BENCH_DIR.parent, preexec_fn=exit_with_parent)


def measure(
    args: argparse.Namespace,
    children: dict[str, subprocess.Popen[bytes]],
    others: dict[str, int],
    result: ReplicasResult,
) -> tuple[list[Lines], float, float]:
    """Warm up, then the windows; returns the readers and the measured span."""
    readers = [Lines(args.run_dir / f"{name}.jsonl", name) for name in children]
    settled_from = time.monotonic()
    settle(readers, args.targets, list(children.values()))
    result.settle_seconds = round(time.monotonic() - settled_from, 1)
    print(f"leases spread after {result.settle_seconds} s; one more interval of warm-up",
          file=sys.stderr)  # fmt: skip
    time.sleep(args.interval)
    pids = {name: child.pid for name, child in children.items()} | others
    begin, cpu = sample(pids)
    moment = begin
    for index in range(args.windows):
        time.sleep(max(0.0, moment + args.interval - time.time()))
        end, cpu_end = sample(pids)
        time.sleep(0.5)  # the cycles started before ``end`` write their lines a bit later
        for reader in readers:
            reader.read()
        window = window_of(readers, bounds=(moment, end), cpu=(cpu, cpu_end), pids=pids,
                           args=args)  # fmt: skip
        print(f"window {index + 1}: {json.dumps(asdict(window))}", file=sys.stderr, flush=True)
        result.windows.append(window)
        moment, cpu = end, cpu_end
    return readers, begin, moment


def stop_replicas(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM (leases given back); a replica still running ``STOP_TIMEOUT`` later is
    killed and named, so a hung replica neither hangs the run nor hides its first error."""
    for child in children.values():
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, child in children.items():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} still running {STOP_TIMEOUT:.0f} s after SIGTERM: killed",
                  file=sys.stderr)  # fmt: skip
            child.kill()
            child.wait()


def run(args: argparse.Namespace, result: ReplicasResult) -> None:
    """Fakes, nats-server, the replicas; measure; stop everything; fill ``result``."""
    from tests.support.nats_server import NatsServer

    fakes = start_fakes(args, args.run_dir)
    server = NatsServer(args.run_dir / "nats", port=free_port()).start()
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        urls = wait_fakes(fakes, args.run_dir)
        asyncio.run(prepare_streams(args, urls, server.url))
        for n in range(args.replicas):
            children[f"replica-{n}"] = spawn_replica(args, f"replica-{n}", server.url)
        assert server.process is not None
        others = {"fakes": fakes.pid, "nats-server": server.process.pid}
        readers, begin, end = measure(args, children, others, result)
    finally:
        try:
            stop_replicas(children)
            fakes.terminate()
            fakes.wait(10)
            if children:
                result.stream_messages = asyncio.run(stream_messages(server.url))
        finally:  # whatever failed above, no nats-server is left behind
            server.stop()
    for reader in readers:
        reader.read()  # every cycle of the run, up to the replicas' stop
    result.span = span_of(readers, begin, end, args)
    result.events_recorded = sum(c.events for reader in readers for c in reader.cycles)


def verdict(result: ReplicasResult) -> bool:
    span = result.span
    ok = (
        span.polled_twice == 0
        and span.missed == 0
        and all(w.failed == 0 and w.targets_by_two_replicas == 0 for w in result.windows)
    )
    worst = max((r.cpu_share for w in result.windows for r in w.replicas), default=0.0)
    result.verdict = (
        f"{'every' if ok else 'NOT every'} target polled once per interval"
        f" ({span.cycles_per_target_per_interval:.3f} cycles per target per interval, "
        f"{span.polled_twice} polled twice, {span.missed} missed, {span.handovers} hand-overs); "
        f"CPU per replica at most {worst:.1%} of one core"
    )
    return ok


def report(result: ReplicasResult) -> str:
    lines = [
        f"polling over replicas {result.started_at}: {result.targets} targets on "
        f"{result.replicas} replicas, interval {result.interval:g}s (jitter {JITTER:.0%}), "
        f"lease_ttl {result.lease_ttl:g}s, {result.records} records/object, churn "
        f"{result.churn:.0%}, load average at start {result.load_average}, "
        f"leases spread after {result.settle_seconds:g} s",
        "",
        f"{'window':<7} {'replica':<10} {'CPU %':>6} {'held':>9} {'cycles':>7} {'failed':>6} "
        f"{'fenced':>6} {'events':>7} {'reqs':>6} {'RSS MB':>7}",
    ]
    for index, w in enumerate(result.windows, 1):
        for r in w.replicas:
            held = f"{r.held_min}" if r.held_min == r.held_max else f"{r.held_min}-{r.held_max}"
            lines.append(
                f"{index:<7} {r.replica:<10} {r.cpu_share:>6.1%} {held:>9} {r.cycles:>7} "
                f"{r.failed:>6} {r.fenced:>6} {r.events:>7} {r.requests:>6} {r.rss_mb:>7.1f}"
            )
        lines.append(
            f"{index:<7} {'all':<10} {'':>6} {'':>9} {w.cycles:>7} {w.failed:>6} {'':>6} "
            f"{w.events:>7} {w.requests:>6}   targets cycled {w.targets_cycled}, "
            f"cycles/target/interval {w.cycles_per_target_per_interval:.3f}, by two replicas "
            f"{w.targets_by_two_replicas}, requests at the fakes {w.requests_at_fakes}, "
            f"p50/p95 {w.latency_p50_ms:.0f}/{w.latency_p95_ms:.0f} ms, fakes CPU "
            f"{w.other_cpu_share['fakes']:.1%}, nats-server CPU "
            f"{w.other_cpu_share['nats-server']:.1%}"
        )
    span = result.span
    lines += [
        "",
        f"measured span: {span.cycles} cycles of {span.targets_cycled} targets, "
        f"{span.cycles_per_target_per_interval:.3f} per target per interval; time between two "
        f"cycle starts of a target {span.shortest_gap_s:g}-{span.longest_gap_s:g} s",
        f"events recorded by the cycles {result.events_recorded}, messages in the stream "
        f"{result.stream_messages}",
        "",
        result.verdict,
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    with tempfile.TemporaryDirectory(prefix="tap-pollbench-replicas-") as tmp:
        args.run_dir = Path(tmp)
        result = ReplicasResult(
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            targets=args.targets, replicas=args.replicas, interval=args.interval,
            lease_ttl=args.lease_ttl, records=args.records, churn=args.churn,
            load_average=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        )  # fmt: skip
        run(args, result)
    ok = verdict(result)
    text = report(result)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"polling-replicas-{stamp}.json").write_text(
        json.dumps(asdict(result), indent=2)
    )
    (RESULTS_DIR / f"polling-replicas-{stamp}.txt").write_text(text + "\n")
    return 0 if ok else 1
