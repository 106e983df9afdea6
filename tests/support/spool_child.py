"""The process the spool crash test SIGKILLs: ``python -m tests.support.spool_child DIR
FIRST_ID`` appends records from many tasks at once, forever, and prints the id of every
record whose append returned (so is durable), one line each, flushed before the next."""

from __future__ import annotations

import asyncio
import itertools
import sys

import structlog

from ensemble_tap.spool import SpoolLog

IN_FLIGHT = 32


def payload(record_id: int) -> bytes:
    """The body of record ``record_id``: sizes from a few bytes to ~60 KiB."""
    return b'{"id":%d,"pad":"%s"}' % (record_id, b"x" * ((record_id * 7919) % 60_000))


async def main(directory: str, first: int) -> None:
    log = SpoolLog(directory, max_bytes=1 << 34, segment_bytes=1 << 20)
    await log.open()
    print("ready", flush=True)
    ids = itertools.count(first)

    async def appender() -> None:
        while True:
            record_id = next(ids)
            await log.append("tap.crash.test", payload(record_id), f"id-{record_id}", "req")
            sys.stdout.write(f"{record_id}\n")
            sys.stdout.flush()

    await asyncio.gather(*(appender() for _ in range(IN_FLIGHT)))


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: ids
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
