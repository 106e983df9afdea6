"""Schemathesis against the running admin API (real app, real nats-server), driven by the
published OpenAPI document: no 5xx, and every response matches the document (status code,
content type, headers, body schema)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ensemble_tap.admin.openapi import build_openapi
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.nats_server import NatsServer

TOKEN = "schemathesis-primary-token"
ADMIN = {"X-Admin-Token": TOKEN}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Bounded per operation (coverage + fuzzing phases): the whole run takes seconds, not minutes.
MAX_EXAMPLES = 50

# Server-sent events never end, so a call cannot be validated as a whole: the live tail is
# tested in tests/integration/test_admin_events_stream.py.
schema = schemathesis.openapi.from_dict(build_openapi()).exclude(path="/admin/events/stream")
# Valid and invalid inputs alike; derandomized so a failure reproduces on the next run.
schema.config.generation.update(
    modes=list(schemathesis.GenerationMode),
    max_examples=MAX_EXAMPLES,
    deterministic=True,
    database="none",
)


async def _seed_dead_letters(url: str) -> None:
    """A few records of each kind so /admin/dlq has something to page through."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for index in range(3):
        record = {
            "id": f"dlq_{index}",
            "stage": "publish",
            "provider": "acme",
            "tenant_id": "t1" if index else "",
            "request_id": f"req-{index}",
            "reason": "maximum message size exceeded",
            "original_subject": "ensemble.tap.acme.deal.updated",
            "original_dedup_id": f"acme::evt_{index}",
            "original_payload": "eyJpZCI6ImV2dCJ9",
            "occurred_at": "2026-11-28T00:00:00Z",
        }
        await js.publish("ensemble.dlq.publish.acme", orjson.dumps(record))
    verify = {"id": "dlq_v", "stage": "verify", "provider": "acme", "reason": "bad signature"}
    await js.publish("ensemble.dlq.verify.acme", orjson.dumps(verify))
    await js.publish("ensemble.dlq.publish.acme", b"not a record")
    await nc.close()


@pytest.fixture(scope="module")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("schemathesis")
    server = NatsServer(Path(root) / "nats").start()
    config = make_config(
        server.url,
        str(root / "data"),
        server={
            "admin_token": TOKEN,
            "admin_rate_limit_per_sec": 100_000,
            "admin_rate_limit_burst": 100_000,
        },
    )
    app = RunningApp(config).start()
    try:
        asyncio.run(_seed_dead_letters(server.url))
        with httpx.Client(base_url=app.url, headers=ADMIN) as client:
            for dry_run in ("true", "false"):  # some jobs to list, fetch and (fail to) cancel
                assert client.post("/admin/replay-dlq", params={"dry_run": dry_run}).is_success
        yield app.url
    finally:
        app.stop()
        server.stop()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_admin_api_conforms_to_its_openapi_document(
    case: schemathesis.Case[Any], admin_url: str
) -> None:
    case.call_and_validate(base_url=admin_url, headers=ADMIN, checks=CHECKS)
