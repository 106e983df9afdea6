"""What JetStream's duplicate window costs nats-server in memory per message id: publishes
``--ids`` messages with distinct ``Nats-Msg-Id`` into a stream whose window keeps them all,
and reports the server's resident memory before and after (and after the same count with
the window too short to keep any, to separate the ids from the stored messages).

    .venv/bin/python bench/dedup_memory.py --ids 1000000

The figure decides how a redelivery horizon of days can be kept (issue #18): inside
JetStream's window, or in a store on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from proc import nats_server

BATCH = 5_000
ID_PAD = "x" * 40  # ids as long as a GitHub delivery GUID plus provider and tenant


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def fill(url: str, stream: str, window: float, ids: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    subject = f"{stream.lower()}.events"
    await js.add_stream(
        StreamConfig(
            name=stream, subjects=[subject], storage=StorageType.FILE, duplicate_window=window
        )
    )
    for start in range(0, ids, BATCH):
        acks = [
            await js.publish_async(subject, b"{}", headers={"Nats-Msg-Id": f"{ID_PAD}-{n}"})
            for n in range(start, start + BATCH)
        ]
        await asyncio.gather(*acks)
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root, nats_server(Path(root)) as (url, server):
        time.sleep(0.5)
        idle = rss_mib(server.pid)
        asyncio.run(fill(url, "SHORT", 0.1, args.ids))
        time.sleep(1.0)  # let the short window's ids expire
        short = rss_mib(server.pid)
        asyncio.run(fill(url, "LONG", 72 * 3600.0, args.ids))
        time.sleep(1.0)
        long = rss_mib(server.pid)
    per_id = (long - short) * 1024 * 1024 / args.ids
    print(f"nats-server RSS: idle {idle:.0f} MiB; after {args.ids:,} messages with a window "
          f"too short to keep ids {short:.0f} MiB; after {args.ids:,} more kept for 72 h "
          f"{long:.0f} MiB")  # fmt: skip
    print(f"≈ {per_id:.0f} bytes per kept message id ({per_id * 1e6 / 2**20:,.0f} MiB per million)")


if __name__ == "__main__":
    main()
