"""State stores: round trips, atomic page commits, errors that are not "not found", and the
migration of the reference's SQLite file (docs/polling.md, "State")."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ensemble_tap.config.models import StateConfig
from ensemble_tap.poller.engine import canonical
from ensemble_tap.state import (
    MemoryStateStore,
    Position,
    SnapshotWrite,
    SqliteStateStore,
    StateError,
    StateStore,
    StoredSnapshot,
    StreamState,
    open_state_store,
)
from ensemble_tap.state.base import StoredToken, TargetControl
from ensemble_tap.state.sqlite import SCHEMA_VERSION
from ensemble_tap.state.versions import SeenVersion, VersionNote
from tests.support.fakes import at
from tests.support.nats_server import NatsServer
from tests.support.nats_state import nats_store


@pytest.fixture(params=["memory", "sqlite", "nats"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer
) -> AsyncIterator[StateStore]:
    if request.param == "nats":
        async with nats_store(nats_server.url) as in_nats:
            yield in_nats
        return
    opened: StateStore = (
        MemoryStateStore()
        if request.param == "memory"
        else SqliteStateStore(str(tmp_path / "s.db"))
    )
    yield opened
    await opened.close()


def put(entity_id: str, **values: object) -> SnapshotWrite:
    return SnapshotWrite("deal", entity_id, canonical(dict(values)))


async def test_round_trip(store: StateStore) -> None:
    assert await store.load_stream("hubspot", "deals") == StreamState()
    state = StreamState(at("2026-03-03T14:22:00Z"), Position(None, {"after": "2"}))
    await store.commit("hubspot::t1", "deals", [put("d1", stage="open")], state)
    assert await store.load_stream("hubspot::t1", "deals") == state
    assert await store.load_stream("hubspot", "deals") == StreamState()  # scoped by key
    assert await store.load_streams("hubspot::t1") == {"deals": state}
    found = await store.get_snapshots("hubspot::t1", [("deal", "d1"), ("deal", "nope")])
    assert list(found) == [("deal", "d1")]
    assert found[("deal", "d1")].data() == {"stage": "open"}
    assert await store.known_entities("hubspot::t1", ["deal"]) == {("deal", "d1")}
    await store.commit("hubspot::t1", "deals", [SnapshotWrite("deal", "d1", None)], state)
    assert await store.get_snapshots("hubspot::t1", [("deal", "d1")]) == {}


def seen(
    entity_id: str, version: str, *, deleted: bool = False, key: str = "hubspot"
) -> VersionNote:
    return VersionNote(key, "deal", entity_id, SeenVersion(at(version), deleted))


async def test_versions_keep_the_newest_and_a_delete_at_the_same_version(
    store: StateStore,
) -> None:
    """What the webhook path saw (webhook+poll): an older version never lowers a newer one,
    and at one version a delete wins; scoped by state key like snapshots."""
    assert await store.get_versions("hubspot", [("deal", "1")]) == {}
    await store.record_versions(
        [seen("1", "2026-03-03T14:05:00Z"), seen("2", "2026-03-03T14:00:00Z")]
    )
    await store.record_versions([seen("1", "2026-03-03T14:01:00Z")])  # late, older
    await store.record_versions([seen("2", "2026-03-03T14:00:00Z", deleted=True)])
    await store.record_versions(
        [seen("1", "2026-03-03T14:05:00Z", key="hubspot::t1", deleted=True)]
    )
    found = await store.get_versions("hubspot", [("deal", "1"), ("deal", "2"), ("deal", "3")])
    assert found == {
        ("deal", "1"): SeenVersion(at("2026-03-03T14:05:00Z")),
        ("deal", "2"): SeenVersion(at("2026-03-03T14:00:00Z"), deleted=True),
    }
    await store.record_versions([seen("2", "2026-03-03T14:00:00Z")])  # the delete stays
    newer = SeenVersion(at("2026-03-03T14:09:00Z"))
    await store.record_versions([VersionNote("hubspot", "deal", "2", newer)])
    assert (await store.get_versions("hubspot", [("deal", "2")]))[("deal", "2")] == newer
    assert await store.get_versions("hubspot::t1", [("deal", "1")]) == {
        ("deal", "1"): SeenVersion(at("2026-03-03T14:05:00Z"), deleted=True)
    }


async def test_snapshots_are_copies(store: StateStore) -> None:
    original = {"stage": "open"}
    await store.commit("k", "s", [SnapshotWrite("deal", "d1", canonical(original))], StreamState())
    original["stage"] = "changed"
    first = (await store.get_snapshots("k", [("deal", "d1")]))[("deal", "d1")].data()
    first["stage"] = "mutated"
    again = (await store.get_snapshots("k", [("deal", "d1")]))[("deal", "d1")].data()
    assert again == {"stage": "open"}


async def test_keys_with_colons_do_not_collide(store: StateStore) -> None:
    await store.commit("a::b", "s", [SnapshotWrite("c", "d", canonical({"x": 1}))], StreamState())
    assert await store.get_snapshots("a", [("b:c", "d")]) == {}
    assert await store.get_snapshots("a::b:c", [("", "d")]) == {}


async def test_tokens(store: StateStore) -> None:
    assert await store.load_token("quickbooks") is None
    await store.save_token("quickbooks", StoredToken("rt-2", "origin"))
    await store.save_token("quickbooks", StoredToken("rt-3", "origin"))
    assert await store.load_token("quickbooks") == StoredToken("rt-3", "origin")


async def test_pause_controls_and_checkpoint_reset(store: StateStore) -> None:
    assert await store.load_control("hubspot::t1") is None
    pause = TargetControl(since_ns=at("2026-03-03T14:00:00Z"), by="primary", reason="upstream down")
    await store.save_control("hubspot::t1", pause)
    assert await store.load_control("hubspot::t1") == pause
    assert await store.load_control("hubspot") is None  # scoped by key
    await store.save_control("hubspot::t1", None)
    await store.save_control("hubspot::t1", None)  # lifting no pause is fine
    assert await store.load_control("hubspot::t1") is None

    state = StreamState(at("2026-03-03T14:22:00Z"), Position(None, {"after": "2"}))
    for stream in ("deals", "contacts"):
        await store.commit("hubspot::t1", stream, [put(f"{stream}-1", v=1)], state)
    await store.commit("hubspot::t2", "deals", [], state)
    assert await store.reset_checkpoints("hubspot::t1") == 2
    assert await store.load_stream("hubspot::t1", "deals") == StreamState()
    assert await store.load_stream("hubspot::t2", "deals") == state  # other targets keep theirs
    kept = await store.get_snapshots("hubspot::t1", [("deal", "deals-1")])
    assert list(kept) == [("deal", "deals-1")]  # snapshots stay: unchanged records stay quiet
    # The store commits again after a reset (in NATS: over the reset revision).
    await store.load_stream("hubspot::t1", "deals")
    await store.commit("hubspot::t1", "deals", [], state)
    assert await store.load_stream("hubspot::t1", "deals") == state


async def test_a_failed_sqlite_commit_changes_nothing(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path / "s.db"))
    try:
        state = StreamState(at("2026-03-03T14:00:00Z"))
        await store.commit("k", "s", [put("d1", v=1)], state)
        # The second write of the page fails (not UTF-8) after the first one was applied.
        broken = SnapshotWrite("deal", "d3", StoredSnapshot("digest", b"\xff\xfe"))
        with pytest.raises(UnicodeDecodeError):
            await store.commit(
                "k", "s", [put("d1", v=2), broken], StreamState(at("2026-03-03T15:00:00Z"))
            )
        assert await store.load_stream("k", "s") == state
        found = await store.get_snapshots("k", [("deal", "d1"), ("deal", "d3")])
        assert {key: snap.data() for key, snap in found.items()} == {("deal", "d1"): {"v": 1}}
    finally:
        await store.close()


async def test_sqlite_survives_a_restart_and_keeps_its_file_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tap-state.db"
    first = SqliteStateStore(str(path))
    await first.commit("hubspot", "deals", [put("d1", stage="open")], StreamState(5))
    await first.close()
    again = SqliteStateStore(str(path))
    assert (await again.load_stream("hubspot", "deals")).cursor_ns == 5
    assert (await again.get_snapshots("hubspot", [("deal", "d1")]))[("deal", "d1")].data() == {
        "stage": "open"
    }
    await again.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_a_pause_survives_a_sqlite_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "tap-state.db")
    pause = TargetControl(since_ns=5, by="primary", reason="maintenance", request_id="r-1")
    first = SqliteStateStore(path)
    await first.save_control("notion", pause)
    await first.close()
    again = SqliteStateStore(path)
    assert await again.load_control("notion") == pause
    await again.close()


async def test_migrates_the_reference_schema(tmp_path: Path) -> None:
    path = tmp_path / "tap-state.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE checkpoints (provider TEXT PRIMARY KEY, checkpoint TEXT NOT NULL);
        CREATE TABLE snapshots (provider TEXT NOT NULL, entity_type TEXT NOT NULL,
            entity_id TEXT NOT NULL, snapshot_json TEXT NOT NULL,
            PRIMARY KEY (provider, entity_type, entity_id));
        INSERT INTO checkpoints VALUES ('hubspot::t1', '2026-03-03T14:22:00Z');
        INSERT INTO checkpoints VALUES ('salesforce', '2026-03-03T15:00:00.000+0000');
        INSERT INTO snapshots VALUES ('hubspot::t1', 'deals', 'd1', '{"id":"d1","stage":"open"}');
        INSERT INTO snapshots VALUES ('salesforce', 'opportunity', '006', '{"Id":"006"}');
        PRAGMA user_version = 1;
        """
    )
    db.close()
    store = SqliteStateStore(str(path))
    try:
        # The old single checkpoint starts every stream of its state key.
        assert (await store.load_stream("hubspot::t1", "deals")).cursor_ns == at(
            "2026-03-03T14:22:00Z"
        )
        assert (await store.load_stream("salesforce", "Account")).cursor_ns == at(
            "2026-03-03T15:00:00Z"
        )
        # HubSpot's plural entity types became the webhook names; snapshots are kept.
        found = await store.get_snapshots("hubspot::t1", [("deal", "d1")])
        assert found[("deal", "d1")].data() == {"id": "d1", "stage": "open"}
        assert await store.known_entities("salesforce", ["opportunity"]) == {("opportunity", "006")}
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    db.close()


async def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "tap-state.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StateError, match="schema version 99"):
        SqliteStateStore(str(path))


async def test_read_errors_are_errors_not_missing_rows(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path / "s.db"))
    try:
        await store._run(lambda db: db.execute("DROP TABLE snapshots"))
        with pytest.raises(StateError):
            await store.get_snapshots("k", [("deal", "d1")])
    finally:
        await store.close()


async def test_open_state_store_defaults_to_the_data_dir(tmp_path: Path) -> None:
    memory = open_state_store(StateConfig(), str(tmp_path))
    assert isinstance(memory, MemoryStateStore)
    sqlite_store = open_state_store(StateConfig(backend="sqlite"), str(tmp_path / "d"))
    try:
        assert isinstance(sqlite_store, SqliteStateStore)
        assert sqlite_store.path == str(tmp_path / "d" / "tap-state.db")
    finally:
        await sqlite_store.close()
