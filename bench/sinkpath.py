"""Instructions per event on the sink's own Python path, counted by callgrind.

The drain benchmark (bench/sink.py) moves by ±15 % from run to run on this VM; the sink's
event-loop thread is a third of its cost. This script replays JetStream deliveries, framed
exactly as nats-server sends them (``HMSG`` with the ack subject and the ingress headers,
bodies from ``build_envelope``), through the sink's code path in one process: the
connection's parser, the pull inbox, conversion, batching, the ack frames and the insert
payload with its dedup token. No server, no ClickHouse: the insert goes to a backend that
keeps the payload, and the frames the connection would write are counted, not sent. It runs
under ``valgrind --tool=callgrind`` twice with different counts and reports the difference
per event, so start-up and import costs cancel out. Use it to A/B a change of that path.

    .venv/bin/python bench/sinkpath.py            # ~1 minute; needs valgrind
    .venv/bin/python bench/sinkpath.py --native   # the same loop without valgrind: µs/event
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from proc import counted_run, per_unit_main

READ_SIZE = 32768  # what nats-py reads from the socket at a time
BATCH = 5000  # batch_size and consumer_fetch_batch_size (per-batch costs are amortised)
STREAM, CONSUMER, SID = "ENSEMBLE_TAP", "tap-clickhouse", 7


def wire(count: int) -> bytes:
    """``count`` deliveries of a pull consumer as they arrive on the sink's connection."""
    from ensemble_tap.bus.client import encode_headers
    from sink import event_body

    frames = []
    stored_ns = 1_764_361_234_567_890_123
    for index in range(count):
        subject, body, headers = event_body(index, stored_ns + index * 1000)
        block = encode_headers(headers)
        reply = b"$JS.ACK.%s.%s.1.%d.%d.%d.%d" % (
            STREAM.encode(),
            CONSUMER.encode(),
            index + 1,
            index + 1,
            stored_ns + index * 1000,
            count - index - 1,
        )
        frames.append(
            b"HMSG %s %d %s %d %d\r\n%s%s\r\n"
            % (subject.encode(), SID, reply, len(block), len(block) + len(body), block, body)
        )
    return b"".join(frames)


async def drive(data: bytes) -> tuple[float, int, int]:
    """Feed ``data`` through the sink; returns (CPU seconds, rows inserted, ack bytes)."""
    from ensemble_tap.bus.client import TapClient
    from ensemble_tap.config.models import Config
    from ensemble_tap.observability import Metrics
    from ensemble_tap.serving import tune_gc
    from ensemble_tap.sink.consumer import SinkConsumer
    from ensemble_tap.sink.jetstream import Puller
    from ensemble_tap.sink.schema import TableRef
    from ensemble_tap.sink.status import SinkStatus

    class CountingConnection(TapClient):
        """Counts what would be written instead of writing it."""

        written = 0

        def _queue(self, command: bytes) -> bool:  # where TapClient buffers every frame
            self.written += len(command)
            return False

    class KeepingBackend:
        payloads = 0

        async def insert(self, statement: str, payload: bytes) -> None:
            self.payloads += bool(payload)

    config = Config.model_validate(
        {
            "clickhouse": {
                "backend": "embedded",
                "batch_size": BATCH,
                "consumer_fetch_batch_size": BATCH,
                "consumer_max_ack_pending": BATCH * 4,
            }
        }
    )
    nc = CountingConnection()
    puller = Puller(nc, stream=STREAM, consumer=CONSUMER, max_bytes=0)
    nc.add_direct(SID, puller._on_delivery)
    backend = KeepingBackend()
    consumer = SinkConsumer(
        config.clickhouse,
        nc=nc,
        puller=puller,
        backend=backend,  # keeps the payload: ClickHouse's work is not counted here
        table=TableRef("ensemble", "tap_events"),
        dlq=None,  # no dead letters: this stream holds no poison
        metrics=Metrics(),
        status=SinkStatus(backend="bench"),
        ensure_consumer=None,  # the consumer is never recreated here
    )
    chunks = [data[start : start + READ_SIZE] for start in range(0, len(data), READ_SIZE)]
    tune_gc()
    started = time.process_time()
    for chunk in chunks:
        await nc._ps.parse(chunk)
        if len(puller._received) >= BATCH:
            deliveries, puller._received = puller._received, []
            await consumer._take(deliveries)
            if len(consumer._batch) >= BATCH:
                await consumer._flush()
    await consumer._take(puller._received)
    await consumer._finish()
    used = time.process_time() - started
    if backend.payloads * BATCH < consumer.status.rows_inserted:
        raise SystemExit("rows were counted without an insert")
    return used, consumer.status.rows_inserted, nc.written


def inner(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wire", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    import uvloop

    used, rows, written = uvloop.run(drive(Path(args.wire).read_bytes()))
    if rows != args.count or not written:
        raise SystemExit(f"{rows} rows inserted and {written} ack bytes for {args.count} events")
    print(f"cpu_seconds={used:.6f}", flush=True)


def run_inner(count: int, native: bool) -> float:
    workdir = Path(tempfile.mkdtemp(prefix="tap-sinkpath-"))
    try:
        frames = workdir / "wire.bin"
        frames.write_bytes(wire(count))  # built here, so the measured process only replays
        command = [sys.executable, __file__, "--inner", "--count", str(count)]
        command += ["--wire", str(frames)]
        environment = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts each run
        return counted_run(command, workdir, native, environment)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    if sys.argv[1:2] == ["--inner"]:
        inner(sys.argv[2:])
        return 0
    return per_unit_main(__doc__.split("\n\n")[0], run_inner, (5000, 15000), "event")


if __name__ == "__main__":
    sys.exit(main())
