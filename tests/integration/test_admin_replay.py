"""The operator's incident story, end to end against a real nats-server:
events rejected by the stream land in the DLQ, get inspected, dry-run and replayed once."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.integration.conftest import StartApp
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers
from tests.support.waiting import eventually

TOKEN = "primary-admin-token"
# Tests poll job status quickly; the admin rate limit is not what they are about.
SERVER = {"admin_token": TOKEN, "admin_rate_limit_per_sec": 1000, "admin_rate_limit_burst": 1000}
ADMIN = {"X-Admin-Token": TOKEN}
SECRET = "s3cret"
PROVIDERS = {"acme": {"secret": SECRET}, "globex": {"secret": SECRET}}


async def wait_for_job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        reply = await client.get(f"/admin/replay-dlq/{job_id}", headers=ADMIN)
        job: dict[str, Any] = reply.json()["job"]
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    job: dict[str, Any] = await eventually(finished, 10.0, what=f"job {job_id} finished")
    return job


async def send(client: httpx.AsyncClient, provider: str, event_id: str, size: int = 10) -> int:
    body = orjson.dumps({"id": event_id, "pad": "x" * size})
    response = await client.post(
        f"/webhooks/{provider}",
        content=body,
        headers=generic_headers(SECRET, body, "deal.updated", event_id),
    )
    return response.status_code


async def test_incident_story(private_nats: NatsServer, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    sections: dict[str, Any] = {
        "providers": PROVIDERS,
        "server": {**SERVER, "admin_replay_store_backend": "sqlite"},
        "nats": {"stream_max_msg_size": 1000},
    }
    app = RunningApp(make_config(private_nats.url, data_dir, **sections)).start()
    try:
        async with httpx.AsyncClient(base_url=app.url) as client:
            assert await send(client, "acme", "evt_small") == 202
            # Over the stream's message size: refused, kept as publish-stage records.
            assert [await send(client, p, f"evt_big_{p}", 1500) for p in ("acme", "globex")] == [
                500,
                500,
            ]
            # A forged request: a verify-stage record (metadata only).
            forged = await client.post(
                "/webhooks/acme", content=b"{}", headers={"X-Signature": "sha256=00"}
            )
            assert forged.status_code == 401

            listing = (await client.get("/admin/dlq", headers=ADMIN)).json()
            assert [r["stage"] for r in listing["records"]] == ["verify", "publish", "publish"]
            assert [r["replayable"] for r in listing["records"]] == [False, True, True]
            assert listing["summary"] == {"verify": 1, "publish": 2}
            assert "original_payload" not in listing["records"][1]
            with_payload = (
                await client.get(
                    "/admin/dlq",
                    params={"include_payload": "true", "stage": "publish", "provider": "acme"},
                    headers=ADMIN,
                )
            ).json()
            assert len(with_payload["records"]) == 1
            assert with_payload["records"][0]["original_payload"]
    finally:
        app.stop()

    # The operator raises the limit and restarts the service.
    sections["nats"] = {"stream_max_msg_size": 0}
    app = RunningApp(make_config(private_nats.url, data_dir, **sections)).start()
    try:
        async with httpx.AsyncClient(base_url=app.url) as client:
            dry = await client.post("/admin/replay-dlq", params={"dry_run": "true"}, headers=ADMIN)
            assert dry.status_code == 202
            dry_job = await wait_for_job(client, dry.json()["job"]["job_id"])
            assert dry_job["status"] == "succeeded"
            assert dry_job["would_replay"] == 2

            # Replay only acme first: globex stays untouched.
            only_acme = await client.post(
                "/admin/replay-dlq", params={"provider": "acme"}, headers=ADMIN
            )
            job = await wait_for_job(client, only_acme.json()["job"]["job_id"])
            assert (job["status"], job["replayed"], job["failed"]) == ("succeeded", 1, 0)
            remaining = (await client.get("/admin/dlq", headers=ADMIN)).json()["records"]
            assert [(r["stage"], r["provider"]) for r in remaining] == [
                ("verify", "acme"),
                ("publish", "globex"),
            ]

            rest = await client.post("/admin/replay-dlq", headers=ADMIN)
            job = await wait_for_job(client, rest.json()["job"]["job_id"])
            assert (job["status"], job["replayed"], job["skipped"]) == ("succeeded", 1, 1)

            again = await client.post("/admin/replay-dlq", headers=ADMIN)
            job = await wait_for_job(client, again.json()["job"]["job_id"])
            assert (job["replayed"], job["failed"]) == (0, 0)

            jobs = (await client.get("/admin/replay-dlq", headers=ADMIN)).json()
            assert jobs["summary"]["succeeded"] == 4
    finally:
        app.stop()

    events = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    ids = sorted(m.headers["Nats-Msg-Id"] for m in events)
    assert ids == ["acme::evt_big_acme", "acme::evt_small", "globex::evt_big_globex"]
    dead = await stored_messages(private_nats.url, "ENSEMBLE_TAP_DLQ")
    assert [m.json()["stage"] for m in dead] == ["verify"]


async def test_a_poison_record_does_not_block_the_others(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=PROVIDERS, server=SERVER)
    nc_url = private_nats.url
    import nats

    nc = await nats.connect(nc_url)
    js = nc.jetstream()
    good = orjson.dumps(
        {
            "id": "dlq_good",
            "stage": "publish",
            "provider": "acme",
            "reason": "boom",
            "original_subject": "ensemble.tap.acme.deal.updated",
            "original_dedup_id": "acme::evt_good",
            "original_payload": "eyJpZCI6ImV2dF9nb29kIn0=",
            "occurred_at": "2026-11-28T00:00:00Z",
        }
    )
    poison = orjson.dumps(
        {
            "id": "dlq_poison",
            "stage": "publish",
            "provider": "acme",
            "reason": "boom",
            "original_subject": "nowhere.no.stream",
            "original_dedup_id": "x",
            "original_payload": "e30=",
            "occurred_at": "2026-11-28T00:00:00Z",
        }
    )
    await js.publish("ensemble.dlq.publish.acme", b"not json at all")
    await js.publish("ensemble.dlq.publish.acme", poison)
    await js.publish("ensemble.dlq.publish.acme", good)
    await nc.close()

    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        created = await client.post("/admin/replay-dlq", headers=ADMIN)
        job = await wait_for_job(client, created.json()["job"]["job_id"])
        records = (await client.get("/admin/dlq", headers=ADMIN)).json()["records"]

    assert (job["status"], job["replayed"], job["failed"], job["skipped"]) == (
        "succeeded",
        1,
        1,
        1,
    )
    assert job["failures"][0]["record_id"] == "dlq_poison"
    assert [r["id"] for r in records] == ["dlq_poison"]
    events = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert [m.headers["Nats-Msg-Id"] for m in events] == ["acme::evt_good"]


async def test_normalize_records_run_through_the_current_normalizer(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=PROVIDERS, server=SERVER)
    import nats

    nc = await nats.connect(private_nats.url)
    body = b'{"id":"deal_9"}'
    record = {
        "id": "dlq_norm",
        "stage": "normalize",
        "provider": "acme",
        "tenant_id": "t1",
        "request_id": "req-norm",
        "reason": "entity_id is required",
        "original_subject": "/webhooks/acme/t1",
        "original_payload": "eyJpZCI6ImRlYWxfOSJ9",
        "request_meta": {
            "method": "POST",
            "path": "/webhooks/acme/t1",
            "headers": {"x-event-type": "deal.created", "x-event-id": "evt_norm"},
        },
        "occurred_at": "2026-11-28T00:00:00Z",
    }
    assert record["original_payload"] == __import__("base64").b64encode(body).decode()
    await nc.jetstream().publish("ensemble.dlq.normalize.acme", orjson.dumps(record))
    await nc.close()

    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        created = await client.post(
            "/admin/replay-dlq", params={"stage": "normalize"}, headers=ADMIN
        )
        job = await wait_for_job(client, created.json()["job"]["job_id"])

    assert (job["replayed"], job["failed"]) == (1, 0)
    [event] = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert event.subject == "ensemble.tap.acme.deal.created"
    assert event.headers["Nats-Msg-Id"] == "acme:t1:evt_norm"
    assert event.json()["data"]["tenant_id"] == "t1"
    assert event.json()["data"]["request_id"] == "req-norm"


def _letter(event_id: str) -> bytes:
    payload = base64.b64encode(orjson.dumps({"id": event_id})).decode()
    return orjson.dumps(
        {
            "id": f"dlq_{event_id}",
            "stage": "publish",
            "provider": "acme",
            "reason": "boom",
            "original_subject": "ensemble.tap.acme.deal.updated",
            "original_dedup_id": f"acme::{event_id}",
            "original_payload": payload,
            "occurred_at": "2026-11-28T00:00:00Z",
        }
    )


async def test_one_record_is_replayed_by_its_sequence(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    """``sequence``: the console's one-record replay. The records around it stay, and a
    second run finds nothing (the record is gone: the job does not go on to the next)."""
    import nats

    app = start_app(providers=PROVIDERS, server=SERVER)
    nc = await nats.connect(private_nats.url)
    sequences = [
        (await nc.jetstream().publish("ensemble.dlq.publish.acme", _letter(name))).seq
        for name in ("evt_a", "evt_b", "evt_c")
    ]
    await nc.close()
    middle = {"sequence": str(sequences[1])}
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        created = await client.post(
            "/admin/replay-dlq", params={**middle, "dry_run": "true"}, headers=ADMIN
        )
        assert created.status_code == 202, created.text
        dry = await wait_for_job(client, created.json()["job"]["job_id"])
        created = await client.post("/admin/replay-dlq", params=middle, headers=ADMIN)
        done = await wait_for_job(client, created.json()["job"]["job_id"])
        created = await client.post("/admin/replay-dlq", params=middle, headers=ADMIN)
        again = await wait_for_job(client, created.json()["job"]["job_id"])
        records = (await client.get("/admin/dlq", headers=ADMIN)).json()["records"]
        bad = await client.post("/admin/replay-dlq", params={"sequence": "0"}, headers=ADMIN)

    assert (dry["would_replay"], dry["sequence"]) == (1, sequences[1])
    assert (done["status"], done["replayed"], done["skipped"]) == ("succeeded", 1, 0)
    assert (again["replayed"], again["skipped"], again["failed"]) == (0, 0, 0)
    assert [r["id"] for r in records] == ["dlq_evt_c", "dlq_evt_a"]
    assert bad.status_code == 400 and "sequence" in bad.json()["error"]
    events = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert [m.headers["Nats-Msg-Id"] for m in events] == ["acme::evt_b"]
