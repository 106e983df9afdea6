"""Poll lease take-over time (issue #15): how long after a replica dies (or stops) another
starts polling its targets.

Two in-process lease keepers (``poller/leases.py``, each on its own NATS connection) share
``--targets`` targets on a throwaway nats-server. Each run: wait until both poll about half,
then take the holder of the most away — ``kill`` (its rounds stop and its connection closes,
as SIGKILL: its leases must expire) or ``stop`` (SIGTERM: it gives them back) — and time how
long until the survivor starts the poller of each of those targets (a started poller runs
its first cycle at once). The bound for ``kill`` is ``lease_ttl`` + one round (``ttl / 3``).

    .venv/bin/python bench/leases.py --ttl 15 --runs 3 --targets 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats

from ensemble_tap.poller.leases import LeaseKeeper
from ensemble_tap.poller.service import cancel_and_wait
from ensemble_tap.state.leases import LeaseTable
from proc import nats_server


class Replica:
    def __init__(self, table: LeaseTable, nc: nats.NATS, targets: list[str], ttl: float) -> None:
        self.nc = nc
        self.started: dict[str, float] = {}  # target → when its poller started here
        self.keeper = LeaseKeeper(table, targets=targets, ttl=ttl, start=self._start,
                                  stop=self._stop)  # fmt: skip
        self.task = asyncio.create_task(self.keeper.run())

    async def _start(self, target: str) -> None:
        self.started[target] = time.monotonic()

    async def _stop(self, target: str) -> None:
        self.started.pop(target, None)

    async def end(self, how: str) -> None:
        await cancel_and_wait(self.task)
        if how == "stop":
            await self.keeper.stop()
        await self.nc.close()


async def replica(url: str, name: str, bucket: str, targets: list[str], ttl: float) -> Replica:
    nc = await nats.connect(url)
    table = await LeaseTable.open(nc.jetstream(), replica=name, ttl=ttl, replicas=1,
                                  bucket=bucket)  # fmt: skip
    return Replica(table, nc, targets, ttl)


async def wait(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError("not reached in time")
        await asyncio.sleep(0.01)


async def run_once(url: str, args: argparse.Namespace, run: int) -> tuple[float, float]:
    targets = [f"notion::tenant-{n}" for n in range(args.targets)]
    bucket = f"BENCH_LEASES_{run}"
    a = await replica(url, "a", bucket, targets, args.ttl)
    b = await replica(url, "b", bucket, targets, args.ttl)
    half = args.targets // 2
    await wait(lambda: len(a.started) + len(b.started) == args.targets
               and min(len(a.started), len(b.started)) >= half, 10 * args.ttl)  # fmt: skip
    holder, survivor = (a, b) if len(a.started) >= len(b.started) else (b, a)
    moved = set(holder.started)
    ended = time.monotonic()
    await holder.end(args.mode)
    await wait(lambda: moved <= set(survivor.started), 3 * args.ttl)
    times = [survivor.started[t] - ended for t in moved]
    await survivor.end("stop")
    return min(times), max(times)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as root, nats_server(Path(root)) as (url, _):
        results = [await run_once(url, args, run) for run in range(args.runs)]
    bound = args.ttl + args.ttl / 3
    print(f"{args.mode}: {args.targets} targets over 2 replicas, lease_ttl {args.ttl:g}s "
          f"(bound for kill: {bound:g}s)")  # fmt: skip
    for first, last in results:
        print(f"  first target {first:6.2f}s   last target {last:6.2f}s")
    lasts = [last for _, last in results]
    print(f"  median of the last: {statistics.median(lasts):.2f}s, max {max(lasts):.2f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttl", type=float, default=15.0, help="state.lease_ttl, seconds")
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=("kill", "stop"), default="kill")
    asyncio.run(main(parser.parse_args()))
