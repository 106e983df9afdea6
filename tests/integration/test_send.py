"""``ensemble-tap send`` against a served instance (one per module: real nats-server, the
embedded ClickHouse sink, an admin token): every provider's signed sample is accepted and
arrives on the stream, ``--wait`` reads it back from the stream or the event store, and
failures are one clear line with exit status 1."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import structlog
from typer.testing import CliRunner, Result

from ensemble_tap.bus.embedded import free_port
from ensemble_tap.cli import cli
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer

CLI = str(Path(sys.executable).parent / "ensemble-tap")
FIXTURES = Path(__file__).parent.parent / "fixtures"
TOKEN = "send-admin-token"
SECRETS = {
    "stripe": "whsec_send",
    "github": "github-send",
    "hubspot": "hubspot-send",
    "linear": "linear-send",
    "shopify": "shopify-send",
    "acme": "acme-send",
}
PROVIDERS: dict[str, Any] = {
    "stripe": {"secret": SECRETS["stripe"]},
    "github": {"secret": SECRETS["github"]},
    "hubspot": {"client_secret": SECRETS["hubspot"]},
    "linear": {"secret": SECRETS["linear"]},
    "shopify": {"secret": SECRETS["shopify"]},
    "acme": {
        "secret": SECRETS["acme"],
        "tenants": {"tenant-a": {"secret": "tenant-a-send", "tenant_id": "tenant-a"}},
    },
}
# The CloudEvent type each sample becomes, as the providers' docs (docs/configuration.md) say.
SAMPLE_TYPES = {
    "stripe": "ensemble.tap.stripe.setup_intent.created",
    "github": "ensemble.tap.github.ping.updated",
    "hubspot": "ensemble.tap.hubspot.contact.created",
    "linear": "ensemble.tap.linear.issue.created",
    "shopify": "ensemble.tap.shopify.products.update",
    "acme": "ensemble.tap.acme.deal.updated",
}


class Served:
    def __init__(self, app: RunningApp, nats_server: NatsServer) -> None:
        self.app = app
        self.nats = nats_server

    @property
    def url(self) -> str:
        return self.app.url

    def send(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli, ["send", *args], env={"TAP_ADMIN_TOKEN": "", **(env or {})})

    def stored(self, event_id: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The message of one CloudEvent id, read from the stream by the test itself."""
        for message in asyncio.run(stored_messages(self.nats.url, "ENSEMBLE_TAP")):
            event = message.json()
            if event["id"] == event_id:
                return message.subject, message.headers, event
        raise AssertionError(f"{event_id} is not on the stream")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("send")
    nats_server = NatsServer(root / "nats").start()
    config = make_config(
        nats_server.url,
        str(root / "data"),
        providers=PROVIDERS,
        server={"admin_token": TOKEN},
        clickhouse={"backend": "embedded", "flush_interval": "100ms"},
    )
    # The service runs in this process and logs to the stdout CliRunner captures: only its
    # errors are kept, so the command's own lines are what the tests read.
    logging_config = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    app = RunningApp(config).start()
    try:
        yield Served(app, nats_server)
    finally:
        app.stop()
        nats_server.stop()
        structlog.configure(**logging_config)


def _answer(result: Result) -> dict[str, Any]:
    """The JSON of the 202 answer the command printed (its third line)."""
    lines = result.stdout.splitlines()
    assert lines[1].startswith("HTTP 202 Accepted (request id "), result.output
    answer: dict[str, Any] = orjson.loads(lines[2])
    return answer


@pytest.mark.parametrize("provider", list(SECRETS))
def test_each_providers_sample_is_accepted_arrives_and_is_printed(
    served: Served, provider: str
) -> None:
    result = served.send(
        provider, "--url", served.url, "--secret", SECRETS[provider], "--wait", "--nats",
        served.nats.url,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    answer = _answer(result)
    assert answer["type"] == SAMPLE_TYPES[provider]
    assert answer["status"] == "accepted"
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"POST {served.url}/webhooks/{provider} (")
    assert lines[3] == f"arrived: {answer['id']} in {answer['subject']}"
    printed = orjson.loads(lines[4])
    subject, headers, stored = served.stored(answer["id"])
    assert printed == stored
    assert subject == answer["subject"]
    assert stored["type"] == SAMPLE_TYPES[provider]
    assert headers["X-Request-ID"] == answer["request_id"] == stored["data"]["request_id"]
    # A second send is a new event: fresh ids, not a duplicate JetStream drops.
    again = served.send(provider, "--url", served.url, "--secret", SECRETS[provider])
    assert again.exit_code == 0, again.output
    assert _answer(again)["id"] != answer["id"]
    served.stored(_answer(again)["id"])


@pytest.mark.parametrize(
    ("provider", "event_type", "cloudevent_type"),
    [
        ("stripe", "invoice.paid", "ensemble.tap.stripe.invoice.paid"),
        ("github", "issues", "ensemble.tap.github.issues.updated"),
        ("hubspot", "deal.propertyChange", "ensemble.tap.hubspot.deal.updated"),
        ("linear", "Comment.update", "ensemble.tap.linear.comment.updated"),
        ("shopify", "orders/paid", "ensemble.tap.shopify.orders.paid"),
        ("acme", "invoice.paid", "ensemble.tap.acme.invoice.paid"),
    ],
)
def test_event_type_names_the_event(
    served: Served, provider: str, event_type: str, cloudevent_type: str
) -> None:
    result = served.send(
        provider, "--url", served.url, "--secret", SECRETS[provider], "--event-type", event_type
    )
    assert result.exit_code == 0, result.output
    assert _answer(result)["type"] == cloudevent_type
    assert served.stored(_answer(result)["id"])[2]["type"] == cloudevent_type


def test_wait_reads_the_event_back_from_the_event_store(served: Served) -> None:
    result = served.send(
        "acme", "--url", served.url, "--secret", SECRETS["acme"], "--wait", "--wait-timeout",
        "30", env={"TAP_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    answer = _answer(result)
    lines = result.stdout.splitlines()
    assert lines[3] == f"arrived: {answer['id']} in the event store"
    row = orjson.loads(lines[4])
    assert row["id"] == answer["id"]
    assert row["request_id"] == answer["request_id"]
    assert row["provider"] == "acme"
    assert row["entity_id"] == "deal_42"


def test_files_and_tenants(served: Served) -> None:
    # A documented Linear delivery from months ago: its webhookTimestamp is renewed, as
    # Linear does on every attempt, or the 60 s replay window would refuse it.
    linear = served.send(
        "linear", "--url", served.url, "--secret", SECRETS["linear"], "--file",
        str(FIXTURES / "linear" / "issue-update.json"),
    )  # fmt: skip
    assert linear.exit_code == 0, linear.output
    assert _answer(linear)["type"] == "ensemble.tap.linear.issue.updated"

    # A HubSpot batch in the older documented field name; a trailing / in --url is not
    # doubled in the URL HubSpot's signature covers.
    hubspot = served.send(
        "hubspot", "--url", served.url + "/", "--secret", SECRETS["hubspot"], "--file",
        str(FIXTURES / "hubspot" / "contact.propertyChange.json"),
    )  # fmt: skip
    assert hubspot.exit_code == 0, hubspot.output
    assert _answer(hubspot)["type"] == "ensemble.tap.hubspot.contact.updated"

    tenant = served.send(
        "acme", "--tenant", "tenant-a", "--url", served.url, "--secret", "tenant-a-send"
    )
    assert tenant.exit_code == 0, tenant.output
    assert tenant.stdout.startswith(f"POST {served.url}/webhooks/acme/tenant-a (")
    assert served.stored(_answer(tenant)["id"])[2]["data"]["tenant_id"] == "tenant-a"


def test_a_repeated_event_is_reported_as_stored_once(served: Served) -> None:
    """Stripe identifies an event by the body's id: a file sent twice is one event, and
    --wait says the copy on the stream came from the first delivery."""
    args = [
        "stripe", "--url", served.url, "--secret", SECRETS["stripe"], "--file",
        str(FIXTURES / "stripe" / "v2.core.event_destination.ping.json"), "--wait", "--nats",
        served.nats.url,
    ]  # fmt: skip
    first = served.send(*args)
    second = served.send(*args)

    assert first.exit_code == second.exit_code == 0, second.output
    assert first.stdout.splitlines()[3] == (
        "arrived: evt_test_65RM8sQH2oXnebF5Rpc16RJyfa2xSQLHJJh1sxm7H0KI92 in "
        "ensemble.tap.stripe.v2_core_event_destination.ping"
    )
    earlier = _answer(first)["request_id"]
    assert second.stdout.splitlines()[3].endswith(
        f"(stored from an earlier delivery, request id {earlier}: this one repeated its "
        "event id and was dropped as a duplicate)"
    )


@pytest.mark.parametrize("provider", ["stripe", "hubspot", "acme"])
def test_a_wrong_secret_is_401_and_exit_1_unless_expected(served: Served, provider: str) -> None:
    wrong = served.send(provider, "--url", served.url, "--secret", "not-the-secret")
    assert wrong.exit_code == 1
    assert "HTTP 401 Unauthorized (request id " in wrong.stdout
    assert "signature verification failed" in wrong.stdout
    assert wrong.stderr == "error: expected HTTP 202, got 401\n"

    expected = served.send(
        provider, "--url", served.url, "--secret", "not-the-secret", "--expect", "401"
    )
    assert expected.exit_code == 0, expected.output
    assert expected.stderr == ""


def test_a_bad_file_or_wait_option_is_one_line_and_nothing_is_sent(
    served: Served, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    cases = {
        "cannot read --file": ["--file", str(tmp_path / "missing.json")],
        "is not JSON": ["--file", str(broken)],
        "--wait needs an accepted delivery": ["--wait", "--expect", "401"],
        "--wait reads the event back through GET /admin/events, which needs the admin token": [
            "--wait"
        ],
    }
    for message, args in cases.items():
        result = served.send("acme", "--url", served.url, "--secret", "s", *args)
        assert result.exit_code == 1, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith("error: ") and message in line
        assert result.stdout == ""


def test_an_event_that_does_not_arrive_is_a_clear_error(served: Served, tmp_path: Path) -> None:
    """--nats pointed at the wrong NATS: first one with no stream for the subject, then one
    whose stream never receives the event."""
    decoy = NatsServer(tmp_path / "decoy").start()
    try:
        args = ["acme", "--url", served.url, "--secret", SECRETS["acme"], "--wait"]
        no_stream = served.send(*args, "--nats", decoy.url)
        assert no_stream.exit_code == 1
        assert no_stream.stderr == (
            f"error: no JetStream stream on {decoy.url} holds subject "
            "ensemble.tap.acme.deal.updated: is --nats the service's NATS?\n"
        )

        asyncio.run(_add_stream(decoy.url))
        missing = served.send(*args, "--nats", decoy.url, "--wait-timeout", "0.5")
        assert missing.exit_code == 1
        event_id = _answer(missing)["id"]
        assert missing.stderr == (
            f"error: not seen on the stream at {decoy.url} within 0.5s: "
            f"{event_id} (ensemble.tap.acme.deal.updated)\n"
        )
    finally:
        decoy.stop()


async def _add_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(name="ELSEWHERE", subjects=["ensemble.tap.>"])
    finally:
        await nc.close()


def test_an_unreachable_url_is_one_line_and_exit_1() -> None:
    """The installed command, as a user runs it: no traceback."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [CLI, "send", "acme", "--url", nowhere],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TAP_SEND_SECRET": "s"},
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot connect to {nowhere}/webhooks/acme (")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
