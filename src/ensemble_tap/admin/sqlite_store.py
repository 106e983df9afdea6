"""Replay jobs in SQLite, so queued jobs run after a restart and history survives.

One row per job; the whole job is written on every change (the registry is the source of
truth). The schema is versioned with ``PRAGMA user_version`` and migrated in order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import orjson

from ensemble_tap.admin.jobs import JOB_FIELDS, Job, JobStatus

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
