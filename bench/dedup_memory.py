"""What remembering delivery ids costs nats-server, for the two ways a redelivery horizon of
days can be kept in NATS (issue #18): JetStream's duplicate window on the event stream, or a
KV bucket of ids with a TTL.

Publishes ``--ids`` messages with distinct ``Nats-Msg-Id`` into a stream whose window keeps
them all (after as many into a stream whose window keeps none, to separate the ids from the
stored messages), then ``--ids`` keys into a KV bucket, and reports the server's resident
memory after each; then restarts the server on the same store and reports how long the
stream with the long window takes to answer (nats-server rebuilds the window from disk).

    .venv/bin/python bench/dedup_memory.py --ids 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from proc import nats_server

BATCH = 5_000
ID_PAD = "x" * 40  # ids as long as a GitHub delivery GUID plus provider and tenant
HORIZON = 72 * 3600.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def fill_window(url: str, stream: str, window: float, ids: int) -> None:
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


async def fill_kv(url: str, ids: int) -> None:
    """Keys as a KV-backed dedup store would write them: a 128-bit digest of the id, base64url
    (KV keys allow ``[-/_=.A-Za-z0-9]``), one revision kept, expiring after the horizon."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.create_key_value(bucket="DEDUP", history=1, ttl=HORIZON)
    for start in range(0, ids, BATCH):
        for n in range(start, start + BATCH):
            digest = hashlib.sha256(f"{ID_PAD}-{n}".encode()).digest()[:16]
            await nc.publish(f"$KV.DEDUP.{base64.urlsafe_b64encode(digest).decode()}", b"")
        await nc.flush()
    await nc.close()


async def wait_for_stream(url: str, stream: str) -> None:
    deadline = time.monotonic() + 300
    while True:
        try:
            nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
            try:
                await nc.jetstream().stream_info(stream)
                return
            finally:
                await nc.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.ids
    with tempfile.TemporaryDirectory() as root:
        with nats_server(Path(root)) as (url, server):
            time.sleep(0.5)
            idle = rss_mib(server.pid)
            asyncio.run(fill_window(url, "SHORT", 0.1, n))
            time.sleep(1.0)  # let the short window's ids expire
            short = rss_mib(server.pid)
            asyncio.run(fill_window(url, "LONG", HORIZON, n))
            time.sleep(1.0)
            long = rss_mib(server.pid)
            asyncio.run(fill_kv(url, n))
            time.sleep(1.0)
            kv = rss_mib(server.pid)
        with nats_server(Path(root)) as (url, server):
            started = time.monotonic()
            asyncio.run(wait_for_stream(url, "LONG"))
            recovered = time.monotonic() - started
            time.sleep(1.0)
            restarted = rss_mib(server.pid)
    window_per_id = (long - short) * 2**20 / n
    kv_per_id = (kv - long) * 2**20 / n
    print(f"nats-server RSS: idle {idle:.0f} MiB; after {n:,} messages whose ids expire "
          f"{short:.0f} MiB; + {n:,} ids kept for 72 h {long:.0f} MiB; + {n:,} KV keys "
          f"{kv:.0f} MiB; restarted on that store {restarted:.0f} MiB")  # fmt: skip
    print(f"duplicate window: ≈ {window_per_id:.0f} bytes per id "
          f"({window_per_id * 1e6 / 2**20:,.0f} MiB per million)")  # fmt: skip
    print(f"KV bucket:        ≈ {kv_per_id:.0f} bytes per key "
          f"({kv_per_id * 1e6 / 2**20:,.0f} MiB per million)")  # fmt: skip
    print(f"restart: the stream with {n:,} ids in its window answered after {recovered:.1f} s")


if __name__ == "__main__":
    main()
