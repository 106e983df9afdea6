"""The replay job registry of one process: cursors, and what a restart does to queued and
running jobs of the sqlite store. The behaviour every store shares (idempotency, queue caps,
cancel, retention, paging) is tested over all three backends in
tests/inprocess/test_replay_jobs.py."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from ensemble_tap.admin import jobs as jobs_module
from ensemble_tap.admin import sqlite_store
from ensemble_tap.admin.cursors import InvalidCursor, decode_job_cursor, encode_job_cursor
from ensemble_tap.admin.jobs import (
    Job,
    JobRegistry,
    JobStatus,
    Limits,
    MemoryJobStore,
    NewJob,
    ReplayRequest,
)
from ensemble_tap.admin.sqlite_store import SCHEMA_VERSION, SqliteJobStore

START_NS = 1_800_000_000_000_000_000


class Clock:
    """Stands in for the ``time`` module of jobs.py: time moves only when told."""

    def __init__(self) -> None:
        self.now = START_NS

    def time_ns(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1_000_000_000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(jobs_module, "time", fake)
    return fake


def limits(ttl: float = 3600, max_jobs: int = 1000, per_ip: int = 0, per_token: int = 0) -> Limits:
    return Limits(
        ttl_seconds=ttl, max_jobs=max_jobs, max_queued_per_ip=per_ip, max_queued_per_token=per_token
    )


def create(
    registry: JobRegistry,
    *,
    limit: int = 100,
    dry_run: bool = False,
    key: str = "",
    ip: str = "10.0.0.1",
    token: str = "fp-a",
    provider: str = "",
    stage: str = "",
    tenant: str = "",
    requested: int = 0,
    reason: str = "",
    request_id: str = "req-1",
) -> tuple[Job, bool]:
    return registry.create(
        NewJob(
            request=ReplayRequest(
                effective_limit=limit,
                dry_run=dry_run,
                provider=provider,
                stage=stage,
                tenant=tenant,
            ),
            requested_limit=requested,
            max_limit=2000,
            capped=False,
            idempotency_key=key,
            creator_ip=ip,
            token_fingerprint=token,
            request_id=request_id,
            reason=reason,
        )
    )


def finish(registry: JobRegistry, job: Job, error: str = "") -> Job:
    started = registry.start(job.job_id)
    assert started is job
    registry.finish(job, error)
    return job


# --- cursors and paging --------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_cursor_round_trip(clock: Clock) -> None:
    job, _ = create(JobRegistry(MemoryJobStore(), limits()))
    cursor = encode_job_cursor(job.created_ns, job.job_id)
    assert cursor == _b64(f"{START_NS}|{job.job_id}".encode())
    assert "=" not in cursor
    assert decode_job_cursor(cursor) == (START_NS, job.job_id)
    assert decode_job_cursor(_b64(b"-5|x")) == (-5, "x")
    assert decode_job_cursor(_b64(b"7|a|b")) == (7, "a|b")


@pytest.mark.parametrize(
    ("cursor", "message"),
    [
        (_b64(b"12|job") + "=", "invalid cursor: malformed encoding"),
        (base64.urlsafe_b64encode(b"12|j").decode(), "invalid cursor: malformed encoding"),
        ("MTI8am9i!", "invalid cursor: malformed encoding"),
        ("MTI+am9i", "invalid cursor: malformed encoding"),
        ("MTI/am9i", "invalid cursor: malformed encoding"),
        ("abcde", "invalid cursor: malformed encoding"),
        (_b64(b"\xff\xfe|job"), "invalid cursor: malformed encoding"),
        (_b64(b"12345"), "invalid cursor: malformed payload"),
        (_b64(b"abc|job"), "invalid cursor: bad timestamp"),
        (_b64(b"|job"), "invalid cursor: bad timestamp"),
        (_b64(b"--5|job"), "invalid cursor: bad timestamp"),
        (_b64(b"1_0|job"), "invalid cursor: bad timestamp"),
        (_b64("²|job".encode()), "invalid cursor: bad timestamp"),
        (_b64(b"9223372036854775808|job"), "invalid cursor: bad timestamp"),
        (_b64(b"12|"), "invalid cursor: missing job id"),
        (_b64(b"12|   "), "invalid cursor: missing job id"),
    ],
)
def test_every_invalid_cursor_message(cursor: str, message: str) -> None:
    with pytest.raises(InvalidCursor) as raised:
        decode_job_cursor(cursor)
    assert str(raised.value) == message
    registry = JobRegistry(MemoryJobStore(), limits())
    with pytest.raises(InvalidCursor, match=message):
        registry.page(None, 10, cursor)


# --- restart with the sqlite store ---------------------------------------------------------


def test_restart_runs_queued_jobs_again_and_fails_running_ones(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "nested" / "jobs.db"
    store = SqliteJobStore(path)
    registry = JobRegistry(store, limits())
    later_queued, _ = create(registry, key="k", provider="acme", reason="because of INC-7")
    clock.advance(-1)  # created earlier, so it must be run first
    early_queued, _ = create(registry, dry_run=True)
    clock.advance(1)
    running, _ = create(registry)
    registry.start(running.job_id)
    running.replayed = 4
    running.failures.append({"record_id": "dlq_1", "sequence": "9", "error": "boom"})
    registry.update(running)
    done = finish(registry, create(registry)[0])
    store.close()

    clock.advance(5)
    store = SqliteJobStore(path)
    restarted = JobRegistry(store, limits())
    to_run = restarted.load()
    assert [job.job_id for job in to_run] == [early_queued.job_id, later_queued.job_id]
    assert all(job.status is JobStatus.QUEUED for job in to_run)
    assert to_run[1].to_json() == later_queued.to_json()

    failed = restarted.get(running.job_id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.error == "interrupted: the service stopped while this job was running"
    assert failed.to_json()["completed_at"] == "2027-01-15T08:00:05Z"
    assert (failed.replayed, failed.failures) == (4, running.failures)
    stored_done = restarted.get(done.job_id)
    assert stored_done is not None and stored_done.to_json() == done.to_json()

    # The idempotency key survived; new ids continue after the highest stored one.
    assert create(restarted, key="k", provider="acme") == (to_run[1], True)
    fresh, _ = create(restarted)
    assert fresh.job_id.endswith("_5")
    store.close()

    store = SqliteJobStore(path)  # the "failed" verdict was persisted
    statuses = {job.job_id: job.status for job in store.load()}
    assert statuses[running.job_id] is JobStatus.FAILED
    store.close()


def test_memory_store_starts_empty(clock: Clock) -> None:
    registry = JobRegistry(MemoryJobStore(), limits())
    assert registry.load() == []
    assert create(registry)[0].job_id.endswith("_1")


def test_sqlite_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    SqliteJobStore(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer than this release"):
        SqliteJobStore(path)


def test_a_failed_migration_leaves_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobs.db"
    SqliteJobStore(path).close()
    broken = "CREATE TABLE half_done (x INTEGER); SELECT * FROM no_such_table;"
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(sqlite_store._MIGRATIONS, SCHEMA_VERSION + 1, broken)
    with pytest.raises(sqlite3.OperationalError):
        SqliteJobStore(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in tables
    db.close()
