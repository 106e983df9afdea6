"""``ensemble-tap state migrate --from sqlite --to nats``: everything of the SQLite state
reaches the NATS buckets, so a replica resumes where the single process left off; a second
run copies nothing; a missing source is refused and not created."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import nats
import yaml

from ensemble_tap.poller.engine import canonical
from ensemble_tap.state import (
    NatsStateStore,
    Position,
    SnapshotWrite,
    SqliteStateStore,
    StreamState,
)
from ensemble_tap.state.base import StoredToken, TargetControl
from ensemble_tap.state.migrate import sqlite_to_nats
from ensemble_tap.state.versions import SeenVersion, VersionNote
from tests.support.fakes import at
from tests.support.nats_server import NatsServer

CLI = str(Path(sys.executable).parent / "ensemble-tap")
CHECKPOINT = StreamState(at("2026-03-03T14:22:00Z"), Position(None, {"after": "2"}))
SEEN = SeenVersion(at("2026-03-03T14:30:00Z"), deleted=False)
PAUSE = TargetControl(since_ns=at("2026-03-03T17:00:00Z"), by="primary", reason="INC-7")
COPIED = [
    "checkpoints: 2 copied, 0 already in nats",
    "legacy checkpoints: 1 copied, 0 already in nats",
    "snapshots: 1 copied, 0 already in nats",
    "tokens: 1 copied, 0 already in nats",
    "webhook versions: 1 copied, 0 already in nats",
    "pauses: 1 copied, 0 already in nats",
]


def migrate(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "state", "migrate", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_config(tmp_path: Path, nats_url: str, sqlite_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    tree = {
        "data_dir": str(tmp_path / "data"),
        "nats": {"url": nats_url},
        "state": {"backend": "nats", "sqlite_path": str(sqlite_path)},
    }
    path.write_text(yaml.safe_dump(tree))
    return path


async def fill(path: Path) -> None:
    store = SqliteStateStore(str(path))
    try:
        await store.commit("hubspot::t1", "deals",
                           [SnapshotWrite("deal", "d1", canonical({"stage": "open"}))],
                           CHECKPOINT)  # fmt: skip
        await store.commit("notion", "pages", [], StreamState(at("2026-03-03T15:00:00Z")))
        await store.save_token("quickbooks", StoredToken("rt-2", "origin"))
        await store.record_versions([VersionNote("github::acme", "issue", "7", SEEN)])
        await store.save_control("notion", PAUSE)
    finally:
        await store.close()
    db = sqlite3.connect(path)  # a checkpoint the reference's file brought along
    db.execute("INSERT INTO checkpoints VALUES ('salesforce', '2026-03-03T16:00:00Z')")
    db.commit()
    db.close()


async def test_migrate_copies_everything_once(private_nats: NatsServer, tmp_path: Path) -> None:
    """In process (``state/migrate.py``): every kind of state arrives, and a second run
    copies nothing."""
    path = tmp_path / "tap-state.db"
    await fill(path)
    nc = await nats.connect(private_nats.url)
    source = SqliteStateStore(str(path))
    try:
        store = await NatsStateStore.open(nc.jetstream(), replicas=1)
        first = await sqlite_to_nats(source, store)
        again = await sqlite_to_nats(source, store)
        assert first.lines() == COPIED
        assert again.lines() == [
            "checkpoints: 0 copied, 2 already in nats",
            "legacy checkpoints: 0 copied, 1 already in nats",
            "snapshots: 0 copied, 1 already in nats",
            "tokens: 0 copied, 1 already in nats",
            "webhook versions: 0 copied, 1 already in nats",
            "pauses: 0 copied, 1 already in nats",
        ]
        assert await store.load_stream("hubspot::t1", "deals") == CHECKPOINT
        assert await store.load_streams("notion") == {
            "pages": StreamState(at("2026-03-03T15:00:00Z"))
        }
        assert (await store.load_stream("salesforce", "Account")).cursor_ns == at(
            "2026-03-03T16:00:00Z"
        )
        found = await store.get_snapshots("hubspot::t1", [("deal", "d1")])
        assert found[("deal", "d1")] == canonical({"stage": "open"})
        assert await store.load_token("quickbooks") == StoredToken("rt-2", "origin")
        assert await store.get_versions("github::acme", [("issue", "7")]) == {("issue", "7"): SEEN}
        assert await store.load_control("notion") == PAUSE
    finally:
        await source.close()
        await nc.close()


async def test_the_cli_reports_what_it_copied(private_nats: NatsServer, tmp_path: Path) -> None:
    source = tmp_path / "tap-state.db"
    await fill(source)
    config = write_config(tmp_path, private_nats.url, source)
    first = migrate(config, "--from", "sqlite", "--to", "nats")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[1:] == COPIED


def test_migrate_refuses_a_missing_source(private_nats: NatsServer, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "tap-state.db"
    config = write_config(tmp_path, private_nats.url, missing)
    result = migrate(config, "--from", "sqlite", "--to", "nats")
    assert result.returncode == 1
    assert f"error: no SQLite state at {missing}" in result.stderr
    assert not missing.exists() and not missing.parent.exists()
    other = migrate(config, "--from", "nats", "--to", "sqlite")
    assert other.returncode == 2 and "only --from sqlite --to nats" in other.stderr
