"""Read every live key of a KV bucket under one pattern, in one ordered consumer.

nats-py's watchers ask the server to keep their consumer for 5 minutes after the
subscription ends; at thousands of targets, scans every few seconds piled up that many
consumers and hit the server's limit ("maximum consumers limit reached"). A scan's consumer
is gone ``SCAN_CONSUMER_LINGER`` after the scan, so the consumers alive at once stay about
(scans per second × that) — a few dozen at 3,000 targets.
"""

from __future__ import annotations

from nats.js.kv import KeyValue

# A scan that has not finished in this long is an error (nats-py's watcher has no deadline).
SCAN_TIMEOUT = 10.0
# How long the server keeps a finished scan's consumer (its inactive threshold), in seconds.
SCAN_CONSUMER_LINGER = 2.0


async def scan(kv: KeyValue, pattern: str, *, values: bool = True) -> list[KeyValue.Entry]:
    """The latest entry of every key matching ``pattern`` (``a.b.>``), deleted keys left out;
    with ``values=False`` the entries carry no value (headers only: cheaper)."""
    watcher = await kv.watch(
        pattern,
        ignore_deletes=True,
        meta_only=not values,
        inactive_threshold=SCAN_CONSUMER_LINGER,
    )
    found: list[KeyValue.Entry] = []
    try:
        while True:
            entry = await watcher.updates(timeout=SCAN_TIMEOUT)  # type: ignore[no-untyped-call]
            if entry is None:  # the marker: everything stored so far has been delivered
                return found
            found.append(entry)
            if not entry.delta:  # delta: messages still pending after this one
                return found
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
