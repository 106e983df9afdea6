"""Replay jobs in SQLite, so queued jobs run after a restart and history survives.

One row per job; the whole job is written on every change (the registry is the source of
truth). The schema is versioned with ``PRAGMA user_version`` and migrated in order.

A file written by the reference service (one column per job field, its own ``user_version``
1 or 2) is converted in place at open: its jobs are rewritten in this layout, its table is kept
as ``admin_replay_jobs_reference``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import orjson

from ensemble_tap.admin.jobs import JOB_FIELDS, Job, JobStatus
from ensemble_tap.events import parse_rfc3339_ns

SCHEMA_VERSION = 1
_MIGRATIONS = {
    1: """
        CREATE TABLE admin_replay_jobs (
            job_id     TEXT PRIMARY KEY,
            status     TEXT NOT NULL,
            created_ns INTEGER NOT NULL,
            updated_ns INTEGER NOT NULL,
            body       TEXT NOT NULL
        );
        CREATE INDEX admin_replay_jobs_status ON admin_replay_jobs (status);
        CREATE INDEX admin_replay_jobs_updated ON admin_replay_jobs (updated_ns);
    """,
}


class SqliteJobStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        if reference_layout(self.db):
            convert_reference_table(self.db)
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this release "
                f"({SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # One transaction per step. executescript() commits any open transaction before
            # it runs, so BEGIN/COMMIT must be part of the script itself.
            try:
                self.db.executescript(
                    f"BEGIN;\n{_MIGRATIONS[target]}\nPRAGMA user_version = {target};\nCOMMIT;"
                )
            except sqlite3.Error:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def load(self) -> list[Job]:
        rows = self.db.execute("SELECT body FROM admin_replay_jobs ORDER BY created_ns").fetchall()
        jobs = []
        for (body,) in rows:
            values = orjson.loads(body)
            values["status"] = JobStatus(values["status"])
            jobs.append(Job(**values))
        return jobs

    def save(self, job: Job) -> None:
        values = {name: getattr(job, name) for name in JOB_FIELDS}
        self.db.execute(
            "INSERT INTO admin_replay_jobs (job_id, status, created_ns, updated_ns, body) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
            "status = excluded.status, updated_ns = excluded.updated_ns, body = excluded.body",
            (
                job.job_id,
                job.status.value,
                job.created_ns,
                job.updated_ns,
                orjson.dumps(values).decode(),
            ),
        )

    def delete(self, job_ids: Iterable[str]) -> None:
        self.db.executemany(
            "DELETE FROM admin_replay_jobs WHERE job_id = ?", [(job_id,) for job_id in job_ids]
        )

    def close(self) -> None:
        self.db.close()


REFERENCE_TABLE = "admin_replay_jobs_reference"
# The reference never resumed a job it found queued or running at start; run here, it would
# replay dead letters nobody asked for again, so such a job ends failed with this reason.
NOT_RESUMED = "not resumed: queued or running in the reference service when it was replaced"


def reference_layout(db: sqlite3.Connection) -> bool:
    """True when ``admin_replay_jobs`` has the reference's columns (no ``body``)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(admin_replay_jobs)")}
    return bool(columns) and "body" not in columns


def convert_reference_table(db: sqlite3.Connection) -> None:
    """Rename the reference's table, create this layout and copy every job into it, in one
    transaction (a failure leaves the file as it was)."""
    db.row_factory = sqlite3.Row
    try:
        db.execute("BEGIN")
        rows = db.execute("SELECT * FROM admin_replay_jobs").fetchall()
        for (index,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = "
            "'admin_replay_jobs' AND sql IS NOT NULL"
        ).fetchall():
            db.execute(f'DROP INDEX "{index}"')  # its names could clash with this layout's
        db.execute(f"ALTER TABLE admin_replay_jobs RENAME TO {REFERENCE_TABLE}")
        for statement in _MIGRATIONS[1].split(";"):
            if statement.strip():
                db.execute(statement)
        for row in rows:
            job = reference_job(row)
            db.execute(
                "INSERT INTO admin_replay_jobs (job_id, status, created_ns, updated_ns, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.status.value,
                    job.created_ns,
                    job.updated_ns,
                    orjson.dumps({name: getattr(job, name) for name in JOB_FIELDS}).decode(),
                ),
            )
        db.execute("PRAGMA user_version = 1")
        db.execute("COMMIT")
    except (sqlite3.Error, ValueError):
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.row_factory = None


def reference_job(row: sqlite3.Row) -> Job:
    """One reference row as a Job: RFC 3339 times to nanoseconds, NULL texts to ""."""
    columns = set(row.keys())

    def text(name: str) -> str:  # request_id came with the reference's v2
        return str(row[name] or "").strip() if name in columns else ""

    def optional_ns(name: str) -> int:
        return _ns(row[name]) if row[name] else 0

    job = Job(
        job_id=text("job_id"),
        status=JobStatus(text("status").lower()),
        requested_limit=int(row["requested_limit"]),
        effective_limit=int(row["effective_limit"]),
        max_limit=int(row["max_limit"]),
        capped=bool(row["capped"]),
        dry_run=bool(row["dry_run"]),
        created_ns=_ns(row["created_at"]),
        updated_ns=_ns(row["updated_at"]),
        started_ns=optional_ns("started_at"),
        completed_ns=optional_ns("completed_at"),
        replayed=int(row["replayed"]),
        request_id=text("request_id"),
        operator_reason=text("operator_reason"),
        cancel_reason=text("cancel_reason"),
        error=text("error"),
        idempotency_key=text("idempotency_key"),
        creator_ip=text("creator_ip"),
        creator_token_fingerprint=text("creator_token_fingerprint"),
    )
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        job.status = JobStatus.FAILED
        job.error = NOT_RESUMED
        job.completed_ns = time.time_ns()
    return job


def _ns(text: str) -> int:
    """The reference's RFC 3339 (nanosecond) text → epoch nanoseconds; the reference refused to
    start on an unparsable time, so the conversion fails (and rolls back) on one too."""
    value = parse_rfc3339_ns(str(text).strip())
    if value is None:
        raise ValueError(f"unparsable time {text!r} in the reference's replay-job table")
    return value
