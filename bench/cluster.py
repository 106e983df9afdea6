"""Webhook throughput through 1 and through 3 replicas on a 3-node NATS cluster (issue #15).

    .venv/bin/python bench/cluster.py [--duration 10] [--connections 48] [--workers 1]

A 3-node nats-server cluster on loopback (tests/support/nats_cluster.py), streams with three
replicas (``nats.stream_replicas: 3``), and ``ensemble-tap serve --role ingress`` replicas
(tests/support/service_process.py). For 1 and then 3 replicas: unique signed deliveries are
pre-generated per replica (bench/ingress.py's request files), one wrk per replica sends them
(``--connections`` split over the replicas) for ``--duration`` seconds, and the stream must
have gained at least one message per 202 (wrk abandons what is in flight at its end; the
service still stores those) and at most one per request sent. Reported, not a target: on a
2-core machine replicas, nats-servers and wrk share the same cores, so more replicas add
processes, not capacity; the figure says what a replica costs, and that nothing is lost or
stored twice through several replicas.

Exit status 0 when every run verified, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.nats_cluster import NatsCluster
from tests.support.service_process import ServiceProcess

from ingress import (
    EVENT_TYPE,
    PROVIDER,
    SECRET,
    WEBHOOK_PATH,
    WrkRun,
    run_wrk,
    write_request_files,
    wrk_options,
)

STREAM = "ENSEMBLE_TAP"
SIZING = 12_000  # deliveries per replica and second of the run: more than one can take


async def stream_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(STREAM)).state.messages)
    finally:
        await nc.close()


def replica_config(cluster: NatsCluster, workdir: Path, name: str, workers: int) -> dict[str, Any]:
    return {
        "data_dir": str(workdir / f"{name}-data"),
        "log_level": "warning",
        "server": {"workers": workers, "max_connections": 4096},
        "nats": {"url": cluster.url, "stream_replicas": 3, "reconnect_wait": "250ms"},
        "providers": {PROVIDER: {"secret": SECRET}},
    }


async def measure(
    cluster: NatsCluster, workdir: Path, *, count: int, args: argparse.Namespace
) -> dict[str, Any]:
    replicas = [
        ServiceProcess(
            workdir,
            replica_config(cluster, workdir, f"r{count}-{i}", args.workers),
            ("ingress",),
            f"r{count}-{i}",
        )
        for i in range(count)
    ]
    for service in replicas:
        service.start()
    try:
        await asyncio.gather(*(service.wait_ready() for service in replicas))
        prefixes = []
        for index, service in enumerate(replicas):
            prefix = workdir / f"req-{count}-{index}"
            write_request_files(prefix, 1, SIZING * args.duration, f"127.0.0.1:{service.port}",
                                WEBHOOK_PATH, f"c{count}r{index}-{time.time_ns()}")  # fmt: skip
            prefixes.append(prefix)
        before = await stream_messages(cluster.living[0].url)
        options = wrk_options(max(1, args.connections // count), 1, args.duration, args.workers)
        with ThreadPoolExecutor(count) as pool:
            runs: list[WrkRun] = list(
                pool.map(
                    lambda job: run_wrk(
                        f"replica {job[0]}",
                        options,
                        f"{job[1].url}{WEBHOOK_PATH}",
                        job[2],
                        "once",
                        args.duration,
                    ),
                    [(i, replicas[i], prefixes[i]) for i in range(count)],
                )
            )
        await asyncio.sleep(2)  # what wrk abandoned at its end is still answered and stored
        stored = await stream_messages(cluster.living[0].url) - before
    finally:
        await asyncio.gather(*(service.stop() for service in replicas), return_exceptions=True)
    accepted = sum(run.accepted for run in runs)
    issued = sum(run.issued for run in runs)
    duration = max(run.duration_s for run in runs)
    return {
        "replicas": count,
        "webhooks_per_s": accepted / duration,
        "p50_ms": max(run.latency_ms.get("p50", 0.0) for run in runs),
        "p99_ms": max(run.latency_ms.get("p99", 0.0) for run in runs),
        "accepted": accepted,
        "stored": stored,
        "issued": issued,
        "clean": all(run.clean for run in runs),
        "verified": accepted <= stored <= issued,
    }


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tap-bench-cluster-") as tmp:
        workdir = Path(tmp)
        cluster = NatsCluster(workdir / "nats").start()
        try:
            await cluster.wait_meta_leader()
            results = [await measure(cluster, workdir, count=count, args=args) for count in (1, 3)]
        finally:
            cluster.stop()
    print(f"{EVENT_TYPE} webhooks, 3-node cluster, stream_replicas 3, {args.connections} "
          f"connections, {args.duration} s, server.workers {args.workers}")  # fmt: skip
    print("| replicas | webhooks/s | p50 ms | p99 ms | accepted | stored | clean | verified |")
    print("|---:|---:|---:|---:|---:|---:|---|---|")
    for r in results:
        print(f"| {r['replicas']} | {r['webhooks_per_s']:,.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['accepted']:,} | {r['stored']:,} | {r['clean']} | "
              f"{r['verified']} |")  # fmt: skip
    return 0 if all(r["verified"] and r["clean"] for r in results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--workers", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())))
