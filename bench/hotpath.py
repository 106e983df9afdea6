"""Instructions per webhook on the service's own code path, counted by callgrind.

Wall-clock figures on this VM move by ±20 % from run to run (bench/README.md), far more than
most hot-path changes. Instruction counts do not: this script drives signed generic
webhooks straight into ``TapApp.asgi`` (no HTTP server, no client; ingress, verification,
the CloudEvent, the JetStream publish and its ack, metrics) against a real nats-server, under
``valgrind --tool=callgrind``, twice with different counts, and reports the difference per
webhook, so start-up and import costs cancel out. Use it to A/B a change of the hot path.

Both runs prepare the same ``PREPARED`` signed requests (the sender's work: bodies, HMAC
signatures, ASGI scopes) and send the first 300 or 1,500 of them, so the sender's signing
cancels out too. (Before the eighth session each run prepared only what it sent, which put
~54,000 instructions of the *sender's* HMAC signing into every figure; the figures in
bench/README.md say which method they come from.) On a loaded machine one run can still
move by 10 % (acks per loop iteration change): interleave A and B and run each twice.

    .venv/bin/python bench/hotpath.py                 # ~2 minutes; needs valgrind
    .venv/bin/python bench/hotpath.py --native        # the same loop without valgrind: µs/webhook
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proc import counted_run, nats_server, per_unit_main

SECRET = "hotpath-secret"
CONCURRENCY = 64  # requests in flight, as wrk's connections keep them
PREPARED = 1500  # requests prepared by every run (the larger default count)


def request(index: int) -> tuple[dict[str, Any], bytes]:
    body = (
        f'{{"id":"deal_{index}","sequence":{index},"amount":{1000 + index % 97},'
        f'"timestamp":"2026-11-28T12:00:{index % 60:02d}.{index % 1000:03d}Z"}}'
    ).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-signature", f"sha256={signature}".encode()),
        (b"x-event-type", b"deal.updated"),
        (b"x-event-id", f"evt_{index:09d}".encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/acme",
        "raw_path": b"/webhooks/acme",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }
    return scope, body


async def drive(nats_url: str, count: int, data_dir: str) -> float:
    """Send ``count`` webhooks through TapApp.asgi; return CPU seconds of the loop."""
    from ensemble_tap.app import TapApp
    from ensemble_tap.config.models import Config
    from ensemble_tap.observability import configure_logging
    from ensemble_tap.serving import tune_gc

    config = Config.model_validate(
        {
            "data_dir": data_dir,
            "log_level": "warning",
            "providers": {"acme": {"secret": SECRET}},
            "nats": {"url": nats_url, "stream": "HOTPATH"},
        }
    )
    configure_logging("warning")
    app = TapApp(config, roles=frozenset({"ingress"}))
    await app.start()
    requests = [request(i) for i in range(max(count, PREPARED))][:count]
    statuses: list[int] = []

    async def one(scope: dict[str, Any], body: bytes) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app.asgi(scope, receive, send)

    tune_gc()
    started = time.process_time()
    for first in range(0, count, CONCURRENCY):
        await asyncio.gather(*(one(s, b) for s, b in requests[first : first + CONCURRENCY]))
    used = time.process_time() - started
    await app.stop()
    if statuses != [202] * count:
        raise SystemExit(f"not every webhook was accepted: {sorted(set(statuses))}")
    return used


def inner(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    import uvloop

    used = uvloop.run(drive(args.nats_url, args.count, args.data_dir))
    print(f"cpu_seconds={used:.6f}", flush=True)


def main() -> int:
    if sys.argv[1:2] == ["--inner"]:
        inner(sys.argv[2:])
        return 0
    return per_unit_main(__doc__.split("\n\n")[0], run_inner, (300, 1500), "webhook")


def run_inner(count: int, native: bool) -> float:
    """One measured process with a nats-server of its own (file storage in a temp dir)."""
    workdir = Path(tempfile.mkdtemp(prefix="tap-hotpath-"))
    try:
        with nats_server(workdir / "nats") as (url, _):
            command = [sys.executable, __file__, "--inner", "--count", str(count)]
            command += ["--nats-url", url, "--data-dir", str(workdir / "d")]
            return counted_run(command, workdir, native)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
