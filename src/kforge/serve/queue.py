"""The service's job queue: one small SQLite file (WAL), separate from any run store.

Every accepted job is committed before the HTTP answer says so, and every result is committed the
moment it arrives. A job moves queued -> running -> done (or cancelled). After a crash (even SIGKILL),
:meth:`JobQueue.recover` puts the jobs that were running back in the queue: their judging never
produced a result, so they are judged from the start; a job with a result is never judged again.
Idempotency keys are unique per token, so a retried submission returns the job it first created.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"
STATES = (QUEUED, RUNNING, DONE, CANCELLED)
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    batch_id TEXT,
    token TEXT NOT NULL,
    idem_key TEXT,
    body_hash TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(token, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs(batch_id, seq);
CREATE INDEX IF NOT EXISTS jobs_token ON jobs(token, state);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    idem_key TEXT,
    body_hash TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_idem ON batches(token, idem_key) WHERE idem_key IS NOT NULL;
"""


class IdempotencyConflict(Exception):
    """An idempotency key was used before for a different request."""


@dataclass
class Job:
    id: str
    batch_id: str | None
    token: str
    problem_id: str
    request: dict[str, Any]
    state: str
    result: dict[str, Any] | None
    attempts: int
    created: float
    started: float | None
    finished: float | None

    def public(self) -> dict[str, Any]:
        """The job as the HTTP API shows it (no token, no request body)."""
        return {"id": self.id, "batch_id": self.batch_id, "problem_id": self.problem_id, "state": self.state,
                "attempts": self.attempts, "created_at": self.created, "started_at": self.started,
                "finished_at": self.finished, "result": self.result}


@dataclass
class NewJob:
    """A job to insert: ``request`` is its EvalRequest as a dict; ``body_hash`` identifies the submitted
    body for idempotency."""

    problem_id: str
    request: dict[str, Any]
    body_hash: str
    idem_key: str | None = None


_COLUMNS = "id, batch_id, token, problem_id, request, state, result, attempts, created, started, finished"


def _job(row: tuple[Any, ...]) -> Job:
    return Job(id=row[0], batch_id=row[1], token=row[2], problem_id=row[3], request=json.loads(row[4]),
               state=row[5], result=json.loads(row[6]) if row[6] else None, attempts=row[7], created=row[8],
               started=row[9], finished=row[10])


class JobQueue:
    """Used from one thread (the server's event loop); each method is one short transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    def _tx(self) -> Any:
        return _Transaction(self.db)

    # -- submission -------------------------------------------------------------------------------
    def submit(self, token: str, jobs: list[NewJob], batch_key: str | None = None, batch_hash: str = "",
               as_batch: bool = False) -> tuple[str | None, list[tuple[Job, bool]]]:
        """Insert jobs (all or none). Returns (batch id, [(job, created)]): ``created`` is False where an
        idempotency key matched an earlier submission, which is returned instead. A key reused for a
        different body raises IdempotencyConflict."""
        now = time.time()
        out: list[tuple[Job, bool]] = []
        with self._tx():
            batch_id = None
            if as_batch:
                if batch_key is not None:
                    row = self.db.execute("SELECT id, body_hash FROM batches WHERE token=? AND idem_key=?",
                                          (token, batch_key)).fetchone()
                    if row is not None:
                        if row[1] != batch_hash:
                            raise IdempotencyConflict(f"idempotency key {batch_key!r} was used for a different batch")
                        return row[0], [(j, False) for j in self.batch_jobs(row[0])]
                batch_id = "b_" + uuid.uuid4().hex[:20]
                self.db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?)", (batch_id, token, batch_key,
                                                                              batch_hash, now))
            for new in jobs:
                if new.idem_key is not None:
                    row = self.db.execute(f"SELECT {_COLUMNS}, body_hash FROM jobs WHERE token=? AND idem_key=?",
                                          (token, new.idem_key)).fetchone()
                    if row is not None:
                        if row[-1] != new.body_hash:
                            raise IdempotencyConflict(f"idempotency key {new.idem_key!r} was used for a "
                                                      "different request")
                        out.append((_job(row[:-1]), False))
                        continue
                job_id = "j_" + uuid.uuid4().hex[:20]
                request = dict(new.request, request_id=job_id)
                self.db.execute(
                    "INSERT INTO jobs (id, batch_id, token, idem_key, body_hash, problem_id, request, state, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, batch_id, token, new.idem_key, new.body_hash, new.problem_id, json.dumps(request),
                     QUEUED, now))
                out.append((Job(job_id, batch_id, token, new.problem_id, request, QUEUED, None, 0, now, None, None),
                            True))
        return batch_id, out

    # -- the dispatcher's side --------------------------------------------------------------------
    def claim(self, n: int) -> list[Job]:
        """The ``n`` oldest queued jobs, now running (attempts counted)."""
        if n <= 0:
            return []
        now = time.time()
        with self._tx():
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state=? ORDER BY seq LIMIT ?",
                                   (QUEUED, n)).fetchall()
            jobs = [_job(r) for r in rows]
            for j in jobs:
                self.db.execute("UPDATE jobs SET state=?, started=?, attempts=attempts+1 WHERE id=?",
                                (RUNNING, now, j.id))
                j.state, j.started, j.attempts = RUNNING, now, j.attempts + 1
        return jobs

    def finish(self, job_id: str, result: dict[str, Any]) -> bool:
        """Record a running job's result; False if the job was no longer running (cancelled meanwhile)."""
        cur = self.db.execute("UPDATE jobs SET state=?, result=?, finished=? WHERE id=? AND state=?",
                              (DONE, json.dumps(result, default=str), time.time(), job_id, RUNNING))
        return cur.rowcount == 1

    def requeue(self, job_id: str) -> None:
        """A running job whose judging was stopped by a shutdown goes back to the queue."""
        self.db.execute("UPDATE jobs SET state=?, started=NULL WHERE id=? AND state=?", (QUEUED, job_id, RUNNING))

    def recover(self) -> int:
        """At start-up: jobs left running by a crash go back to the queue. Returns how many."""
        cur = self.db.execute("UPDATE jobs SET state=?, started=NULL WHERE state=?", (QUEUED, RUNNING))
        return cur.rowcount

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued or running job; returns the state it had (None: no such job)."""
        with self._tx():
            row = self.db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] in (QUEUED, RUNNING):
                self.db.execute("UPDATE jobs SET state=?, finished=? WHERE id=?", (CANCELLED, time.time(), job_id))
            return str(row[0])

    # -- reading ----------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def batch_jobs(self, batch_id: str) -> list[Job]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE batch_id=? ORDER BY seq", (batch_id,)).fetchall()
        return [_job(r) for r in rows]

    def batch_exists(self, batch_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM batches WHERE id=?", (batch_id,)).fetchone() is not None

    def counts(self) -> dict[str, int]:
        found = dict(self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        return {s: int(found.get(s, 0)) for s in STATES}

    def active(self) -> int:
        """Jobs queued or running."""
        row = self.db.execute("SELECT COUNT(*) FROM jobs WHERE state IN (?, ?)", (QUEUED, RUNNING)).fetchone()
        return int(row[0])

    def pending_for(self, token: str) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM jobs WHERE token=? AND state IN (?, ?)",
                              (token, QUEUED, RUNNING)).fetchone()
        return int(row[0])


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
