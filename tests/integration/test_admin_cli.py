"""``ensemble-tap admin …`` against the real service: DLQ tables, replay jobs followed to the
end, job listing, showing and cancelling, and the one-line errors an operator sees."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
import structlog
from typer.testing import CliRunner, Result

from ensemble_tap import admin_cli
from ensemble_tap.bus.embedded import free_port
from ensemble_tap.cli import cli
from tests.integration.conftest import StartApp
from tests.support.app import RunningApp
from tests.support.jetstream import stored_messages
from tests.support.nats_server import NatsServer
from tests.support.signing import generic_headers

TOKEN = "primary-admin-token"
READ_TOKEN = "read-only-admin-token"
SERVER = {
    "admin_token": TOKEN,
    "admin_token_read": READ_TOKEN,
    "admin_rate_limit_per_sec": 1000,
    "admin_rate_limit_burst": 1000,
}
SECRET = "s3cret"
PROVIDERS = {"acme": {"secret": SECRET}, "globex": {"secret": SECRET}}
FAST = ["--poll-interval", "0.05"]
CLI = str(Path(sys.executable).parent / "ensemble-tap")


@pytest.fixture(autouse=True)
def server_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """The in-process server's log lines, kept out of the CLI's captured stdout."""
    with structlog.testing.capture_logs() as logs:
        yield logs


def admin(url: str, *args: str, token: str | None = TOKEN) -> Result:
    """Run ``ensemble-tap admin ARGS`` the way an operator does: URL and token from the env."""
    env = {"TAP_ADMIN_URL": url, "TAP_ADMIN_TOKEN": token, "COLUMNS": "200"}
    return CliRunner().invoke(cli, ["admin", *args], env=env)


def rows(result: Result) -> list[str]:
    return result.stdout.splitlines()


def send(app: RunningApp, provider: str, event_id: str, size: int = 10) -> int:
    body = orjson.dumps({"id": event_id, "pad": "x" * size})
    headers = generic_headers(SECRET, body, "deal.updated", event_id)
    return httpx.post(f"{app.url}/webhooks/{provider}", content=body, headers=headers).status_code


def job_status(app: RunningApp, job_id: str) -> str:
    answer = httpx.get(f"{app.url}/admin/replay-dlq/{job_id}", headers={"X-Admin-Token": TOKEN})
    return str(answer.json()["job"]["status"])


def test_dlq_listing_job_listing_and_cancel(
    start_app: StartApp, server_logs: list[MutableMapping[str, Any]]
) -> None:
    app = start_app(
        providers=PROVIDERS,
        server={
            **SERVER,
            "admin_replay_max_concurrent_jobs": 1,
            "admin_replay_job_timeout": "2.5s",
        },
        nats={"stream_max_msg_size": 1000},
    )
    assert send(app, "acme", "evt_small") == 202
    # Over the stream's message size limit: publish records.
    assert [send(app, p, f"evt_big_{p}", 1500) for p in ("acme", "globex")] == [500, 500]
    forged = httpx.post(f"{app.url}/webhooks/globex", content=b"{}", headers={"X-Signature": "0"})
    assert forged.status_code == 401  # verify record

    listed = admin(app.url, "dlq")
    assert listed.exit_code == 0, listed.output
    header, *records, summary = rows(listed)
    assert header.split() == [
        "SEQ",
        "OCCURRED_AT",
        "STAGE",
        "PROVIDER",
        "TENANT",
        "REPLAYABLE",
        "REQUEST_ID",
        "REASON",
    ]
    # Newest first, columns aligned under their headers.
    assert [line[header.index("STAGE") :].split()[:2] for line in records] == [
        ["verify", "globex"],
        ["publish", "globex"],
        ["publish", "acme"],
    ]
    assert [line[header.index("REPLAYABLE") :].split()[0] for line in records] == [
        "no",
        "yes",
        "yes",
    ]
    assert summary == "in the DLQ by stage: publish 2, verify 1"

    as_json = admin(app.url, "dlq", "--stage", "publish", "--json")
    assert as_json.exit_code == 0, as_json.output
    found = json.loads(as_json.stdout)["records"]
    assert [(r["stage"], r["provider"], r["replayable"]) for r in found] == [
        ("publish", "globex", True),
        ("publish", "acme", True),
    ]

    first_page = admin(app.url, "dlq", "--limit", "1")
    assert len(rows(first_page)) == 4  # header, one record, summary, "more" hint
    assert rows(first_page)[-1].startswith("more: ensemble-tap admin dlq --cursor ")
    every_page = admin(app.url, "dlq", "--limit", "1", "--all-pages")
    assert len(rows(every_page)) == 5  # header, three records, summary
    assert "no dead-letter records match" in admin(app.url, "dlq", "--provider", "nobody").stdout

    dry = admin(app.url, "replay", "--dry-run", *FAST)
    assert dry.exit_code == 0, dry.output
    assert rows(dry)[0].startswith("dry run job replay_")
    assert rows(dry)[-1].endswith(
        "succeeded: 2 record(s) would be replayed, 1 skipped (not replayable)"
    )

    # A real replay that cannot finish: the records are still too big; each is retried with
    # backoff (1.5 s) before it is parked, so the second one runs into the job timeout
    # (2.5 s). Meanwhile a second job waits for the only worker slot, and is cancelled.
    running = admin(app.url, "replay", "--no-follow", "--json", "--reason", "limit raised now")
    assert running.exit_code == 0, running.output
    running_id = json.loads(running.stdout)["job"]["job_id"]
    queued = admin(app.url, "replay", "--dry-run", "--no-follow")
    assert queued.exit_code == 0, queued.output
    assert "accepted: up to 100 records" in queued.stdout
    queued_id = queued.stdout.split()[3].rstrip(":")
    assert job_status(app, queued_id) == "queued"
    cancelled = admin(app.url, "jobs", "cancel", queued_id, "--reason", "not needed after all")
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout == f"job {queued_id} cancelled\n"
    refused = admin(app.url, "jobs", "cancel", running_id)
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        "error: replay job cannot be cancelled once running or completed "
        "(HTTP 409, request id admin-"
    )

    followed = admin(app.url, "jobs", "show", running_id, "--follow", *FAST)
    assert followed.exit_code == 1, followed.output
    assert rows(followed)[0].split()[1:2] == ["replayed"]  # progress lines, then the outcome
    assert rows(followed)[-5].endswith(
        f"{running_id} failed: replayed 0, skipped 0 (not replayable), failed 1"
    )
    assert rows(followed)[-2].split() == ["SEQ", "RECORD_ID", "ERROR"]
    seq, record_id, *error = rows(followed)[-1].split()
    assert (seq, record_id[:4]) == ("1", "dlq_")
    assert "message size exceeds maximum allowed" in " ".join(error)
    assert f"error: job {running_id} failed: replay timed out after 2.5s" in followed.stderr
    cancelled_follow = admin(app.url, "jobs", "show", queued_id, "--follow", *FAST)
    assert cancelled_follow.exit_code == 1
    assert f"error: job {queued_id} was cancelled: not needed after all" in cancelled_follow.stderr

    listing = admin(app.url, "jobs")
    assert listing.exit_code == 0, listing.output
    header, *jobs, states = rows(listing)
    assert header.split()[:3] == ["JOB_ID", "STATUS", "MODE"]
    assert [line.split()[:3] for line in jobs] == [
        [queued_id, "cancelled", "dry"],
        [running_id, "failed", "replay"],
        [jobs[2].split()[0], "succeeded", "dry"],
    ]
    assert jobs[1].endswith("limit raised now")
    assert states == "jobs by state: queued 0, running 0, succeeded 1, failed 1, cancelled 1"
    only_cancelled = json.loads(admin(app.url, "jobs", "--status", "cancelled", "--json").stdout)
    assert [job["job_id"] for job in only_cancelled["jobs"]] == [queued_id]
    first_page = admin(app.url, "jobs", "--limit", "2")
    assert rows(first_page)[-1].startswith("more: ensemble-tap admin jobs --cursor ")
    assert len(rows(admin(app.url, "jobs", "--limit", "2", "--all-pages"))) == 5

    shown = admin(app.url, "jobs", "show", queued_id)
    assert shown.exit_code == 0, shown.output
    fields = dict(line.split(None, 1) for line in rows(shown))
    assert (fields["status"], fields["mode"]) == ("cancelled", "dry run")
    assert fields["cancel_reason"] == "not needed after all"
    missing = admin(app.url, "jobs", "show", "replay_0_0")
    assert missing.exit_code == 1
    assert "error: replay job not found (HTTP 404, request id " in missing.stderr
    # Options given to `jobs` before the subcommand apply to it; list filters do not.
    inherited = CliRunner().invoke(
        cli,
        ["admin", "jobs", "--url", app.url, "show", queued_id, "--json"],
        env={"TAP_ADMIN_URL": f"http://127.0.0.1:{free_port()}", "TAP_ADMIN_TOKEN": TOKEN},
    )
    assert json.loads(inherited.stdout)["job"]["job_id"] == queued_id
    assert admin(app.url, "jobs", "--status", "failed", "show", queued_id).exit_code == 2

    # Wrong token, and a read-only token asking to replay: one line naming what to check.
    for token, args in ((f"{TOKEN}-typo", ["dlq"]), (READ_TOKEN, ["replay", "--no-follow"])):
        denied = admin(app.url, *args, token=token)
        assert denied.exit_code == 1
        [line] = denied.stderr.splitlines()
        assert line.startswith("error: unauthorized (HTTP 401, request id admin-")
        assert "TAP_ADMIN_TOKEN" in line and "scope" in line
        assert token not in denied.output
    assert admin(app.url, "jobs", token=READ_TOKEN).exit_code == 0

    # The server's audit log names the CLI and never holds a token.
    audit = [line for line in server_logs if line.get("endpoint") == "dlq_list"]
    assert audit and all(line["user_agent"].startswith("ensemble-tap-cli/") for line in audit)
    assert TOKEN not in repr(server_logs) and READ_TOKEN not in repr(server_logs)


def test_dlq_show_prints_one_record_with_its_request(start_app: StartApp) -> None:
    app = start_app(providers=PROVIDERS, server=SERVER, nats={"stream_max_msg_size": 1000})
    assert send(app, "acme", "evt_big", 1500) == 500  # the CloudEvent is kept
    body = b"not json at all"
    headers = generic_headers(SECRET, body, "deal.updated", "evt_bad")
    httpx.post(f"{app.url}/webhooks/globex", content=body, headers=headers)
    bad, big = json.loads(admin(app.url, "dlq", "--json").stdout)["records"]
    assert (bad["stage"], big["stage"]) == ("normalize", "publish")

    shown = admin(app.url, "dlq", "show", bad["id"])
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    fields = dict(line.split(None, 1) for line in text.split("\n\n")[0].splitlines())
    assert (fields["stage"], fields["provider"]) == ("normalize", "globex")
    assert fields["sequence"] == str(bad["sequence"])
    assert fields["request"] == "POST /webhooks/globex"
    assert "\nheaders:\n" in text and "  x-signature: " in text
    assert text.endswith("\nbody:\nnot json at all\n"), text
    cloudevent = admin(app.url, "dlq", "show", str(big["sequence"]), "--json")
    record = json.loads(cloudevent.stdout)["record"]
    assert "x" * 1500 in record["original_payload_text"]
    missing = admin(app.url, "dlq", "show", "424242")
    assert missing.exit_code == 1
    assert "error: dead-letter record not found (HTTP 404, request id " in missing.stderr
    assert admin(app.url, "dlq", "--stage", "publish", "show", "1").exit_code == 2


def test_tables_align_and_neutralise_control_characters() -> None:
    table = admin_cli._table(
        ("NAME", "COUNT", "NOTE"),
        [("a", "1", "x\x1b[31mred\nline"), ("longer", "100", "y" * 80)],
        numeric={"COUNT"},
        widths={"NOTE": 20},
    )
    assert table.splitlines() == [
        "NAME    COUNT  NOTE",
        "a           1  x [31mred line",
        "longer    100  " + "y" * 19 + "…",
    ]


async def test_replay_follows_the_job_and_reports_failed_records(
    start_app: StartApp, private_nats: NatsServer
) -> None:
    app = start_app(providers=PROVIDERS, server=SERVER)
    nc = await nats.connect(private_nats.url)
    js = nc.jetstream()
    for record_id, subject in (
        ("dlq_poison", "nowhere.no.stream"),
        ("dlq_good", "ensemble.tap.acme.deal.updated"),
    ):
        record = {
            "id": record_id,
            "stage": "publish",
            "provider": "acme",
            "reason": "nats: maximum payload exceeded",
            "original_subject": subject,
            "original_dedup_id": f"acme::{record_id}",
            "original_payload": "eyJpZCI6ImV2dF9nb29kIn0=",
            "occurred_at": "2026-11-28T00:00:00.123456789Z",
        }
        await js.publish("ensemble.dlq.publish.acme", orjson.dumps(record))
    await nc.close()

    listed = admin(app.url, "dlq")
    assert [line.split()[:2] for line in rows(listed)[1:3]] == [
        ["2", "2026-11-28T00:00:00Z"],
        ["1", "2026-11-28T00:00:00Z"],
    ]

    dry = admin(app.url, "replay", "--dry-run", "--provider", "acme", *FAST)
    assert dry.exit_code == 0, dry.output
    assert "accepted: up to 100 records, provider=acme" in rows(dry)[0]
    assert rows(dry)[-1].endswith(
        "succeeded: 2 record(s) would be replayed, 0 skipped (not replayable)"
    )

    replayed = admin(
        app.url, "replay", "--stage", "publish", "--reason", "stream limit raised", *FAST
    )
    assert replayed.exit_code == 0, replayed.output
    lines = rows(replayed)
    assert "stage=publish" in lines[0]
    assert lines[-5].startswith("replay replay_")
    assert lines[-5].endswith(" succeeded: replayed 1, skipped 0 (not replayable), failed 1")
    assert lines[-3] == "failed records (still in the DLQ; 1 in all):"
    assert lines[-2].split() == ["SEQ", "RECORD_ID", "ERROR"]
    assert lines[-1].split()[:2] == ["1", "dlq_poison"]
    assert "is not captured by the event stream" in lines[-1]
    assert any(line.split()[:2] == ["succeeded", "replayed"] for line in lines)
    assert replayed.stderr.startswith("warning: 1 record(s) could not be replayed and stay in")
    events = await stored_messages(private_nats.url, "ENSEMBLE_TAP")
    assert [m.headers["Nats-Msg-Id"] for m in events] == ["acme::dlq_good"]

    # Idempotency keys: a re-send returns the same job; other parameters are a conflict.
    first = admin(app.url, "replay", "--idempotency-key", "ticket-42", "--no-follow", "--json")
    job_id = json.loads(first.stdout)["job"]["job_id"]
    again = admin(app.url, "replay", "--idempotency-key", "ticket-42", *FAST)
    assert again.exit_code == 0, again.output
    assert rows(again)[0] == f"idempotency key already used: following existing replay job {job_id}"
    other = admin(app.url, "replay", "--idempotency-key", "ticket-42", "--dry-run")
    assert other.exit_code == 1
    assert other.stderr.startswith(
        "error: idempotency key already used for different replay parameters (HTTP 409, "
    )

    followed_json = admin(app.url, "jobs", "show", job_id, "--follow", "--json")
    assert json.loads(followed_json.stdout)["job"]["status"] == "succeeded"
    short_reason = admin(app.url, "replay", "--reason", "because")
    assert short_reason.exit_code == 1
    assert "X-Admin-Reason must be at least 12 characters (HTTP 400" in short_reason.stderr

    pollers = admin(app.url, "pollers")
    assert (pollers.exit_code, pollers.stdout) == (0, "no pollers are running on this server\n")
    assert json.loads(admin(app.url, "pollers", "--json").stdout)["pollers"] == []


def test_errors_without_a_reachable_admin_api(start_app: StartApp) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    # The installed entry point, as an operator runs it.
    refused = subprocess.run(
        [CLI, "admin", "jobs", "--url", nowhere],
        env={"TAP_ADMIN_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: cannot connect to {nowhere} (")
    assert "is `ensemble-tap serve` running there? Point --url or TAP_ADMIN_URL at it" in (
        refused.stderr
    )
    assert refused.stdout == ""
    assert time.monotonic() - started < 15

    no_token = admin(nowhere, "dlq", token=None)
    assert no_token.exit_code == 1
    assert (
        no_token.stderr
        == "error: no admin token: export TAP_ADMIN_TOKEN=<token> (or pass --token)\n"
    )

    no_admin = start_app(providers=PROVIDERS)  # no admin token configured
    disabled = admin(no_admin.url, "dlq")
    assert disabled.exit_code == 1
    assert "no admin API there; set server.admin_token" in disabled.stderr


def test_help_on_every_command() -> None:
    for args in (
        [],
        ["dlq"],
        ["dlq", "show"],
        ["replay"],
        ["jobs"],
        ["jobs", "show"],
        ["jobs", "cancel"],
        ["pollers"],
        ["pollers", "pause"],
    ):
        result = CliRunner().invoke(cli, ["admin", *args, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (args, result.output)
        assert f"admin {' '.join(args)}".strip() + " [OPTIONS]" in result.stdout
    replay_help = CliRunner().invoke(cli, ["admin", "replay", "--help"], env={"COLUMNS": "200"})
    assert "shell history" in replay_help.stdout
    assert "TAP_ADMIN_TOKEN" in replay_help.stdout
