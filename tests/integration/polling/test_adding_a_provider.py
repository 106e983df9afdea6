"""Adding a provider is one module plus one registry line: ``tests/support/example_provider.py``
registered by a fixture gets config validation (its required keys, limits and own checks, also
through ``check-config``), the webhook route (a signed delivery → 202 and a stored CloudEvent)
and polling (one cycle against a local fake), with nothing else changed. Publishing is checked
on a real nats-server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.responses import Response
from typer.testing import CliRunner

from ensemble_tap.cli import cli
from ensemble_tap.providers import REGISTRY, Provider, poll_provider, webhook_provider
from tests.integration.conftest import StartApp
from tests.support import example_provider
from tests.support.configs import load_text, problems_of, write_config
from tests.support.fakes import FakeServer, Seen, at, iso_ms, json_response
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.polling import poll_rig
from tests.support.signing import generic_headers, hex_hmac

SECRET = "example-secret"
TOKEN = "example-token"
URL = "https://api.example.com"
POLLED = {"mode": "poll", "api_key": TOKEN, "base_url": URL, "api_version": "2026-03"}


@pytest.fixture
def example() -> Iterator[Provider]:
    """The registry line a real provider would add to ``providers/__init__.py``."""
    REGISTRY.register(example_provider.PROVIDER)
    yield example_provider.PROVIDER
    REGISTRY.unregister(example_provider.NAME)


def yaml_of(settings: dict[str, Any]) -> str:
    """A config with the provider (and a broker URL, so the embedded-broker warning of
    ``make run``'s config does not mix with the provider's own warnings)."""
    config = {"nats": {"url": "nats://127.0.0.1:4222"}, "providers": {"example": settings}}
    return orjson.dumps(config).decode()  # JSON is YAML


# ----------------------------------------------------------------------------- the registry


def test_registering_is_what_makes_it_known() -> None:
    assert poll_provider("example") is None
    assert webhook_provider("example") is not example_provider.PROVIDER.webhook
    REGISTRY.register(example_provider.PROVIDER)
    try:
        assert poll_provider("example") is example_provider.PROVIDER.poller
        assert webhook_provider("example") is example_provider.PROVIDER.webhook
        with pytest.raises(ValueError, match="provider example is registered twice"):
            REGISTRY.register(example_provider.PROVIDER)
    finally:
        REGISTRY.unregister("example")


# ------------------------------------------------------------------------ config validation


def test_unregistered_the_name_cannot_be_polled(tmp_path: Path) -> None:
    assert problems_of(tmp_path, yaml_of(POLLED)) == [
        "providers.example.mode: poll mode is not supported for example (pollers exist for "
        "hubspot, notion, quickbooks, salesforce)"
    ]


def test_a_complete_config_loads(example: Provider, tmp_path: Path) -> None:
    loaded = load_text(tmp_path, yaml_of({**POLLED, "mode": "webhook+poll", "secret": SECRET}))
    assert loaded.warnings == []  # a dedicated verifier: no generic-verifier warning
    errors = problems_of(tmp_path, yaml_of({**POLLED, "mode": "webhook+poll"}))
    assert errors == ["providers.example: webhook mode requires secret (base or tenant override)"]


def test_its_facts_are_checked(example: Provider, tmp_path: Path) -> None:
    settings = {
        "mode": "poll",
        "base_url": URL,
        "objects": ["widgets", "Widgets!"],
        "query_per_page": 51,
        "tenants": {"acme": {"api_key": TOKEN, "api_version": "2026-03"}},
    }
    prefix = 'providers.example.tenants.acme: poll target tenant "acme" is invalid: '
    assert problems_of(tmp_path, yaml_of(settings)) == [
        prefix + "objects entry 'Widgets!' is not a valid example object name",
        prefix + "query_per_page must be at most 50 for example",
    ]
    del settings["tenants"]
    prefix = "providers.example: poll target base is invalid: "
    assert problems_of(tmp_path, yaml_of(settings)) == [
        prefix + "api_version is required",
        prefix + "access_token or api_key is required",
        prefix + "objects entry 'Widgets!' is not a valid example object name",
        prefix + "query_per_page must be at most 50 for example",
    ]


def test_its_own_checks_run(example: Provider, tmp_path: Path) -> None:
    wrong = {**POLLED, "api_version": "v1"}
    assert problems_of(tmp_path, yaml_of(wrong)) == [
        "providers.example: poll target base is invalid: api_version must look like 2026-03"
    ]
    loaded = load_text(tmp_path, yaml_of({**POLLED, "realm_id": "r", "fields": ["x"]}))
    assert loaded.warnings == [
        "providers.example.realm_id: has no effect for example",
        "providers.example.fields: has no effect for this provider (only hubspot and salesforce)",
    ]


def test_check_config_injects_the_registry(
    example: Provider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("TAP_")]:
        monkeypatch.delenv(name)
    good = write_config(tmp_path, yaml_of(POLLED), "good.yaml")
    bad = write_config(tmp_path, yaml_of({**POLLED, "api_version": "v1"}), "bad.yaml")
    passed = CliRunner().invoke(cli, ["check-config", "--config", str(good)])
    failed = CliRunner().invoke(cli, ["check-config", "--config", str(bad)])
    assert (passed.exit_code, passed.stderr) == (0, "")
    assert failed.exit_code == 1
    assert "api_version must look like 2026-03" in failed.stderr


# ---------------------------------------------------------------------------------- webhooks

BODY = (
    b'{"id":"evt_1","type":"widget.renamed","time":"2026-03-03T14:22:00Z",'
    b'"object":{"id":"w_42","name":"Sprocket"}}'
)


async def test_a_signed_webhook_is_routed_and_stored(
    example: Provider, start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers={"example": {"secret": SECRET, "tenant_id": "acme"}})
    signed = {"X-Example-Signature": hex_hmac(SECRET, BODY)}
    async with httpx.AsyncClient(base_url=app.url) as client:
        accepted = await client.post("/webhooks/example", content=BODY, headers=signed)
        # The generic verifier's header means nothing to this provider.
        generic = generic_headers(SECRET, BODY, "widget.renamed", "evt_2")
        refused = await client.post("/webhooks/example", content=BODY, headers=generic)

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["subject"] == "ensemble.tap.example.widget.renamed"
    assert refused.status_code == 401
    [stored] = await stored_messages(private_nats.url, app.config.nats.stream)
    assert stored.subject == "ensemble.tap.example.widget.renamed"
    assert stored.headers["Nats-Msg-Id"] == "example:acme:evt_1"
    event = stored.json()
    assert (event["type"], event["source"], event["subject"]) == (
        "ensemble.tap.example.widget.renamed",
        "tap/example/acme",
        "widget/w_42",
    )
    assert event["data"]["snapshot"] == {"id": "w_42", "name": "Sprocket"}


# ----------------------------------------------------------------------------------- polling


class FakeExample(FakeServer):
    """The example provider's API as its module documents it."""

    name = "example"

    def __init__(self) -> None:
        super().__init__(TOKEN)
        self.items: list[dict[str, Any]] = []

    def route(self, seen: Seen) -> Response:
        if seen.path != "/v1/items" or seen.headers.get("example-version") != "2026-03":
            return json_response({"error": "not found"}, 404)
        limit = int(seen.query["limit"][0])
        since = seen.query.get("since", [""])[0]
        start = int(seen.query.get("cursor", ["0"])[0])
        matching = [item for item in self.items if item["updated_at"] >= since]
        page = matching[start : start + limit]
        following = str(start + limit) if start + limit < len(matching) else None
        return json_response({"items": page, "next_cursor": following})


async def test_one_poll_cycle_publishes_its_records(
    example: Provider, nats_url: str, data_dir: str
) -> None:
    async with FakeExample() as fake:
        for number, time in ((1, "2026-03-03T17:00:00Z"), (2, "2026-03-03T17:05:00Z")):
            fake.items.append({"id": f"w_{number}", "updated_at": iso_ms(at(time))})
        settings = {**POLLED, "base_url": fake.url, "tenant_id": "acme", "query_per_page": 1}
        async with poll_rig(nats_url, data_dir, {"example": settings}) as rig:
            stats = await rig.cycle("acme")
            events = await rig.events()

    assert (stats.created, stats.pages) == (2, 2)
    assert [(e["type"], e["subject"], e["source"]) for e in events] == [
        ("ensemble.tap.example.widget.created", "widget/w_1", "tap/example/acme"),
        ("ensemble.tap.example.widget.created", "widget/w_2", "tap/example/acme"),
    ]
    requests = fake.data_requests()
    assert [seen.headers["authorization"] for seen in requests] == [f"Bearer {TOKEN}"] * 2
    assert [seen.query.get("cursor") for seen in requests] == [None, ["1"]]
