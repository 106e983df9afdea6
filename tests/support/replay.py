"""Dead letters to replay and who runs a replay job, for tests of replay jobs shared by
replicas (``server.admin_replay_store_backend: nats``)."""

from __future__ import annotations

import asyncio
import base64

import nats
import orjson

BUCKET = "ENSEMBLE_TAP_REPLAY_JOBS"


async def dead_letters(url: str, count: int) -> set[str]:
    """``count`` replayable dead letters; the dedup ids of their events."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    ids = set()
    try:
        for start in range(0, count, 500):
            batch = []
            for n in range(start, min(start + 500, count)):
                dedup = f"acme::evt_{n}"
                record = {
                    "id": f"dlq_{n}",
                    "stage": "publish",
                    "provider": "acme",
                    "reason": "boom",
                    "original_subject": "ensemble.tap.acme.deal.updated",
                    "original_dedup_id": dedup,
                    "original_payload": base64.b64encode(orjson.dumps({"n": n})).decode(),
                    "occurred_at": "2026-11-28T00:00:00Z",
                }
                batch.append(js.publish("ensemble.dlq.publish.acme", orjson.dumps(record)))
                ids.add(dedup)
            await asyncio.gather(*batch)
    finally:
        await nc.close()
    return ids


async def owner_pid(url: str, job_id: str) -> int:
    """The pid of the replica holding the job's claim (``<host>/<pid>/<id>``), 0 for none."""
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(BUCKET)
        owner = str(orjson.loads((await kv.get(f"job.{job_id}")).value or b"{}")["owner"])
    finally:
        await nc.close()
    return int(owner.split("/")[1]) if owner else 0
