"""A replay-job SQLite file written by the reference service opens: its table is converted in
place (kept as ``admin_replay_jobs_reference``), its jobs keep their fields, and a job it had
queued or running is not run again here."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from ensemble_tap.admin.jobs import JobRegistry, JobStatus, Limits
from ensemble_tap.admin.sqlite_store import (
    NOT_RESUMED,
    REFERENCE_TABLE,
    SCHEMA_VERSION,
    SqliteJobStore,
)

# The reference's table (docs: its migrations v1, then v2 adding request_id), with index names
# that include this layout's own, to show a clash cannot stop the conversion.
REFERENCE_SCHEMA = """
CREATE TABLE admin_replay_jobs (
    job_id TEXT PRIMARY KEY, status TEXT NOT NULL, requested_limit INTEGER NOT NULL,
    effective_limit INTEGER NOT NULL, max_limit INTEGER NOT NULL, capped INTEGER NOT NULL,
    dry_run INTEGER NOT NULL, created_at TEXT NOT NULL, started_at TEXT, completed_at TEXT,
    replayed INTEGER NOT NULL, operator_reason TEXT, cancel_reason TEXT, error TEXT,
    idempotency_key TEXT, creator_ip TEXT, creator_token_fingerprint TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX admin_replay_jobs_status ON admin_replay_jobs (status);
CREATE INDEX idx_admin_replay_jobs_updated_at ON admin_replay_jobs (updated_at);
CREATE INDEX idx_admin_replay_jobs_idempotency_key ON admin_replay_jobs (idempotency_key);
ALTER TABLE admin_replay_jobs ADD COLUMN request_id TEXT;
PRAGMA user_version = 2;
"""
ROWS = [
    # job_id, status, requested, effective, max, capped, dry_run, created, started, completed,
    # replayed, operator_reason, cancel_reason, error, idempotency_key, ip, fingerprint,
    # updated, request_id
    (
        "replay_1767225600000000000_7", "succeeded", 5000, 2000, 2000, 1, 0,
        "2026-01-01T00:00:00.123456789Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:02.5Z",
        42, " incident 12 ", None, None, "key-1", "10.0.0.1", "0123456789abcdef",
        "2026-01-01T00:00:02.5Z", "req-1",
    ),
    (
        "replay_1767225600000000000_8", "queued", 0, 100, 2000, 0, 1,
        "2026-01-01T01:00:00+01:00", None, None, 0, None, None, None, None, None, None,
        "2026-01-01T01:00:00+01:00", None,
    ),
    (
        "replay_1767225600000000000_9", "running", 10, 10, 2000, 0, 0,
        "2026-01-01T00:00:03Z", "2026-01-01T00:00:03Z", None, 3, None, None, None, None, None,
        None, "2026-01-01T00:00:04Z", None,
    ),
]  # fmt: skip


def reference_file(path: Path, rows: Sequence[tuple[object, ...]]) -> Path:
    db = sqlite3.connect(path)
    db.executescript(REFERENCE_SCHEMA)
    db.executemany(f"INSERT INTO admin_replay_jobs VALUES ({', '.join('?' * 19)})", rows)
    db.commit()
    db.close()
    return path


def test_a_reference_file_is_converted_and_its_jobs_load(tmp_path: Path) -> None:
    store = SqliteJobStore(reference_file(tmp_path / "tap-admin-replay.db", ROWS))
    jobs = {job.job_id: job for job in store.load()}
    done = jobs["replay_1767225600000000000_7"]
    assert (done.status, done.requested_limit, done.effective_limit, done.capped) == (
        JobStatus.SUCCEEDED, 5000, 2000, True,
    )  # fmt: skip
    assert (done.created_ns, done.started_ns, done.completed_ns) == (
        1767225600123456789, 1767225601000000000, 1767225602500000000,
    )  # fmt: skip
    assert (done.replayed, done.operator_reason, done.idempotency_key, done.request_id) == (
        42, "incident 12", "key-1", "req-1",
    )  # fmt: skip
    assert (done.creator_ip, done.creator_token_fingerprint, done.cancel_reason) == (
        "10.0.0.1", "0123456789abcdef", "",
    )  # fmt: skip
    queued = jobs["replay_1767225600000000000_8"]
    assert queued.created_ns == 1767225600000000000  # +01:00 is applied
    for stopped in (queued, jobs["replay_1767225600000000000_9"]):
        assert (stopped.status, stopped.error) == (JobStatus.FAILED, NOT_RESUMED)
        assert stopped.completed_ns > 0
    db = store.db
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute(f"SELECT count(*) FROM {REFERENCE_TABLE}").fetchone()[0] == 3
    store.close()
    reopened = SqliteJobStore(tmp_path / "tap-admin-replay.db")  # converted once, then as ours
    assert len(reopened.load()) == 3
    reopened.close()


def test_the_registry_runs_nothing_and_continues_the_id_sequence(tmp_path: Path) -> None:
    store = SqliteJobStore(reference_file(tmp_path / "jobs.db", ROWS))
    registry = JobRegistry(
        store, Limits(ttl_seconds=10**9, max_jobs=1000, max_queued_per_ip=0, max_queued_per_token=0)
    )
    assert registry.load() == []  # the reference's queued job is not run
    assert registry.get("replay_1767225600000000000_7") is not None
    store.close()


def test_an_unparsable_time_fails_and_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    broken = [(*ROWS[0][:7], "yesterday", *ROWS[0][8:])]
    path = reference_file(tmp_path / "jobs.db", broken)
    with pytest.raises(ValueError, match="unparsable time 'yesterday'"):
        SqliteJobStore(path)
    db = sqlite3.connect(path)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"admin_replay_jobs"}
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
