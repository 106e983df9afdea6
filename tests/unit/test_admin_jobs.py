"""The replay job registry over both stores: idempotency, queue caps, cancel, retention,
cursor paging and what a restart does to queued and running jobs."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ensemble_tap.admin import jobs as jobs_module
from ensemble_tap.admin import sqlite_store
from ensemble_tap.admin.cursors import InvalidCursor, decode_job_cursor, encode_job_cursor
from ensemble_tap.admin.jobs import (
    IdempotencyConflict,
    Job,
    JobRegistry,
    JobStatus,
    JobStore,
    Limits,
    MemoryJobStore,
    NotCancellable,
    QueueLimitExceeded,
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


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    made: JobStore = (
        MemoryJobStore() if request.param == "memory" else SqliteJobStore(tmp_path / "jobs.db")
    )
    yield made
    made.close()


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
        ReplayRequest(
            effective_limit=limit, dry_run=dry_run, provider=provider, stage=stage, tenant=tenant
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


def finish(registry: JobRegistry, job: Job, error: str = "") -> Job:
    started = registry.start(job.job_id)
    assert started is job
    registry.finish(job, error)
    return job


# --- creation and the API view -------------------------------------------------------------


def test_a_new_job_is_queued_and_shows_only_what_is_set(store: JobStore, clock: Clock) -> None:
    registry = JobRegistry(store, limits())
    job, reused = create(registry, provider="acme", stage="publish", reason="ticket INC-42")
    assert not reused
    assert job.status is JobStatus.QUEUED
    assert job.job_id == f"replay_{START_NS}_1"
    body = job.to_json()
    assert body == {
        "job_id": job.job_id,
        "status": "queued",
        "effective_limit": 100,
        "max_limit": 2000,
        "capped": False,
        "dry_run": False,
        "provider": "acme",
        "stage": "publish",
        "created_at": "2027-01-15T08:00:00Z",
        "replayed": 0,
        "skipped": 0,
        "failed": 0,
        "request_id": "req-1",
        "operator_reason": "ticket INC-42",
    }


def test_the_api_view_of_a_finished_dry_run(clock: Clock) -> None:
    registry = JobRegistry(MemoryJobStore(), limits())
    job, _ = create(registry, dry_run=True, requested=5, limit=5)
    clock.advance(1)
    registry.start(job.job_id)
    job.would_replay = 3
    clock.advance(0.5)
    registry.finish(job)
    body = job.to_json()
    assert body["requested_limit"] == 5
    assert body["started_at"] == "2027-01-15T08:00:01Z"
    assert body["completed_at"] == "2027-01-15T08:00:01.5Z"
    assert body["would_replay"] == 3
    assert "error" not in body


# --- idempotency ---------------------------------------------------------------------------


def test_an_equal_request_with_the_same_key_returns_the_job(store: JobStore, clock: Clock) -> None:
    registry = JobRegistry(store, limits())
    job, _ = create(registry, key="k1", dry_run=True, provider="acme")
    # Omitting limit and sending limit=100 are the same normalised request; reason, IP and
    # request id are not part of it.
    again, reused = create(
        registry,
        key="k1",
        dry_run=True,
        provider="acme",
        requested=100,
        ip="10.9.9.9",
        reason="something else entirely",
        request_id="req-2",
    )
    assert reused and again is job
    finish(registry, job, error="boom")  # a finished (even failed) job is still returned
    again, reused = create(registry, key="k1", dry_run=True, provider="acme")
    assert reused and again is job and again.status is JobStatus.FAILED


@pytest.mark.parametrize(
    "change",
    [
        {"limit": 99},
        {"dry_run": False},
        {"provider": "globex"},
        {"stage": "normalize"},
        {"tenant": "t2"},
    ],
)
def test_a_different_request_with_the_same_key_conflicts(
    store: JobStore, clock: Clock, change: dict[str, Any]
) -> None:
    registry = JobRegistry(store, limits())
    base: dict[str, Any] = {"limit": 100, "dry_run": True, "provider": "acme", "tenant": "t1"}
    job, _ = create(registry, key="k1", **base)
    with pytest.raises(IdempotencyConflict) as raised:
        create(registry, key="k1", **{**base, **change})
    assert raised.value.job is job
    assert str(raised.value) == "idempotency key already used for different replay parameters"
    assert registry.page(None, 10, "").summary["queued"] == 1


def test_keys_are_scoped_to_the_calling_token(clock: Clock) -> None:
    registry = JobRegistry(MemoryJobStore(), limits())
    mine, _ = create(registry, key="shared", token="fp-a")
    theirs, reused = create(registry, key="shared", token="fp-b", dry_run=True)
    assert not reused and theirs is not mine
    assert create(registry, key="shared", token="fp-a") == (mine, True)


def test_a_blank_key_never_deduplicates(clock: Clock) -> None:
    registry = JobRegistry(MemoryJobStore(), limits())
    first, _ = create(registry, key="")
    second, reused = create(registry, key="")
    assert not reused and first is not second


# --- queue caps ----------------------------------------------------------------------------


def test_per_ip_queue_cap_counts_queued_jobs_of_that_ip(store: JobStore, clock: Clock) -> None:
    registry = JobRegistry(store, limits(per_ip=2))
    first, _ = create(registry, ip="10.0.0.1", token="fp-a")
    create(registry, ip="10.0.0.1", token="fp-b")
    with pytest.raises(QueueLimitExceeded) as raised:
        create(registry, ip="10.0.0.1", token="fp-c")
    assert (raised.value.scope, raised.value.count) == ("ip", 2)
    assert str(raised.value) == "replay queue limit exceeded for caller scope"
    create(registry, ip="10.0.0.2", token="fp-c")  # another IP has its own allowance
    registry.start(first.job_id)  # running jobs do not count
    create(registry, ip="10.0.0.1", token="fp-c")
    with pytest.raises(QueueLimitExceeded):
        create(registry, ip="10.0.0.1", token="fp-d")


def test_per_token_queue_cap_counts_queued_jobs_of_that_token(
    store: JobStore, clock: Clock
) -> None:
    registry = JobRegistry(store, limits(per_token=1))
    first, _ = create(registry, ip="10.0.0.1", token="fp-a", key="k")
    with pytest.raises(QueueLimitExceeded) as raised:
        create(registry, ip="10.0.0.2", token="fp-a")
    assert (raised.value.scope, raised.value.count) == ("token", 1)
    # An idempotent re-send is not a new job: caps are not evaluated for it.
    assert create(registry, ip="10.0.0.2", token="fp-a", key="k") == (first, True)
    create(registry, ip="10.0.0.1", token="fp-b")
    registry.cancel(first.job_id, "")  # cancelled jobs do not count
    create(registry, ip="10.0.0.1", token="fp-a")


def test_the_ip_cap_is_checked_before_the_token_cap(clock: Clock) -> None:
    registry = JobRegistry(MemoryJobStore(), limits(per_ip=1, per_token=1))
    create(registry)
    with pytest.raises(QueueLimitExceeded) as raised:
        create(registry)
    assert raised.value.scope == "ip"


def test_unknown_callers_are_not_counted_together(clock: Clock) -> None:
    registry = JobRegistry(MemoryJobStore(), limits(per_ip=1, per_token=1))
    for _ in range(3):
        create(registry, ip="", token="")


def test_zero_disables_the_queue_caps(clock: Clock) -> None:
    registry = JobRegistry(MemoryJobStore(), limits(per_ip=0, per_token=0))
    for _ in range(50):
        create(registry)
    assert registry.page(None, 500, "").summary["queued"] == 50


# --- cancel --------------------------------------------------------------------------------


def test_only_queued_jobs_can_be_cancelled(store: JobStore, clock: Clock) -> None:
    registry = JobRegistry(store, limits())
    queued, _ = create(registry)
    clock.advance(2)
    cancelled = registry.cancel(queued.job_id, "wrong filters, sorry")
    assert cancelled is queued
    assert queued.status is JobStatus.CANCELLED
    assert queued.cancel_reason == "wrong filters, sorry"
    assert queued.error == "cancelled by operator: wrong filters, sorry"
    assert queued.to_json()["completed_at"] == "2027-01-15T08:00:02Z"
    assert registry.start(queued.job_id) is None  # its worker finds it no longer queued

    plain, _ = create(registry)
    registry.cancel(plain.job_id, "")
    assert plain.error == "cancelled by operator"
    assert "cancel_reason" not in plain.to_json()

    running, _ = create(registry)
    registry.start(running.job_id)
    done = finish(registry, create(registry)[0])
    for job in (running, done, queued):
        with pytest.raises(NotCancellable) as raised:
            registry.cancel(job.job_id, "")
        assert raised.value.job is job
        assert str(raised.value) == "replay job cannot be cancelled once running or completed"
    assert running.status is JobStatus.RUNNING
    assert registry.cancel("replay_0_404", "") is None


# --- retention -----------------------------------------------------------------------------


def test_ttl_evicts_finished_jobs_only(store: JobStore, clock: Clock) -> None:
    registry = JobRegistry(store, limits(ttl=60))
    queued, _ = create(registry)
    running, _ = create(registry)
    registry.start(running.job_id)
    succeeded = finish(registry, create(registry, key="k")[0])
    failed = finish(registry, create(registry)[0], error="boom")
    cancelled, _ = create(registry)
    registry.cancel(cancelled.job_id, "")
    clock.advance(30)
    touched = finish(registry, create(registry)[0])  # TTL counts from the last change
    clock.advance(31)

    for job in (queued, running, touched):
        assert registry.get(job.job_id) is job
    for job in (succeeded, failed, cancelled):
        assert registry.get(job.job_id) is None
    # The key of an evicted job is free again.
    assert create(registry, key="k")[1] is False
    clock.advance(31)
    assert registry.get(touched.job_id) is None
    assert registry.get(queued.job_id) is queued

    if isinstance(store, SqliteJobStore):  # evicted rows are deleted from the file too
        stored = {job.job_id for job in store.load()}
        assert stored == {job.job_id for job in registry.page(None, 500, "").jobs}


def test_max_jobs_evicts_the_oldest_finished_jobs(store: JobStore, clock: Clock) -> None:
    registry = JobRegistry(store, limits(max_jobs=2))
    first = finish(registry, create(registry)[0])
    clock.advance(1)
    second = finish(registry, create(registry)[0])
    clock.advance(1)
    third, _ = create(registry)  # cleanup runs before the insert: 3 jobs for a moment
    assert len(registry.page(None, 500, "").jobs) == 2
    assert registry.get(first.job_id) is None
    assert registry.get(second.job_id) is second
    assert registry.get(third.job_id) is third


def test_max_jobs_never_evicts_queued_or_running_jobs(clock: Clock) -> None:
    registry = JobRegistry(MemoryJobStore(), limits(max_jobs=1))
    made = [create(registry)[0] for _ in range(3)]
    registry.start(made[0].job_id)
    clock.advance(10)
    assert [job.job_id for job in registry.page(None, 10, "").jobs] == [
        job.job_id for job in reversed(made)
    ]


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


def test_pages_are_newest_first_with_ties_broken_by_job_id(store: JobStore, clock: Clock) -> None:
    registry = JobRegistry(store, limits())
    tied = [create(registry)[0] for _ in range(11)]  # same created_at: replay_<ns>_1 … _11
    clock.advance(1)
    newer = [create(registry)[0] for _ in range(2)]
    expected = sorted(newer, key=lambda job: job.job_id, reverse=True) + sorted(
        tied, key=lambda job: job.job_id, reverse=True
    )
    # Plain string order, as the reference: ..._9 comes before ..._11 and ..._10.
    assert [job.job_id.rsplit("_", 1)[1] for job in expected[2:5]] == ["9", "8", "7"]

    seen: list[Job] = []
    cursor = ""
    for _ in range(10):
        page = registry.page(None, 3, cursor)
        seen += page.jobs
        cursor = page.next_cursor
        if not cursor:
            break
    assert [job.job_id for job in seen] == [job.job_id for job in expected]
    assert len(page.jobs) == 1  # 13 jobs in pages of 3: the last page holds one

    exact = registry.page(None, 13, "")
    assert (len(exact.jobs), exact.next_cursor) == (13, "")


def test_status_filter_and_summary(store: JobStore, clock: Clock) -> None:
    registry = JobRegistry(store, limits())
    create(registry)
    running, _ = create(registry)
    registry.start(running.job_id)
    done = [finish(registry, create(registry)[0]) for _ in range(3)]
    finish(registry, create(registry)[0], error="boom")

    page = registry.page(JobStatus.SUCCEEDED, 2, "")
    assert [job.status for job in page.jobs] == [JobStatus.SUCCEEDED] * 2
    expected_summary = {"queued": 1, "running": 1, "succeeded": 3, "failed": 1, "cancelled": 0}
    assert page.summary == expected_summary
    rest = registry.page(JobStatus.SUCCEEDED, 2, page.next_cursor)
    assert [job.job_id for job in page.jobs + rest.jobs] == [job.job_id for job in done[::-1]]
    assert rest.summary == expected_summary  # over all jobs, whatever the filter or cursor
    assert registry.page(JobStatus.CANCELLED, 5, "").jobs == []


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
