"""Jobs in SQLite and their files under the data dir.

Layout: <data>/spark.db, <data>/jobs/<id>/{input.<ext>, out/<stem>.<ext>, result.zip, job.log}.
Only server-made ids (32 hex digits) and the fixed stem names ever become path parts.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

log = logging.getLogger("spark.store")

ID_RE = re.compile(r"^[0-9a-f]{32}$")
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "canceled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    options TEXT NOT NULL,
    input TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT,
    stage_started_at REAL,
    timings TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    stems TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    pack TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""
_JSON_COLS = ("options", "input", "timings", "error", "stems")


def new_job_id() -> str:
    return uuid.uuid4().hex


def valid_id(job_id: str) -> bool:
    return bool(ID_RE.match(job_id))


class Store:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        # One connection shared by the loop's threadpool and the worker; every call is short.
        self._db = sqlite3.connect(self.data_dir / "spark.db", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")  # survives kill -9 of the process
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def add_listener(self, cb: Callable[[str], None]) -> None:
        """Call cb(job_id) after every committed change of a job row, from the writing thread."""
        self._listeners.append(cb)

    def _changed(self, job_id: str) -> None:
        for cb in list(self._listeners):
            try:
                cb(job_id)
            except Exception:
                log.exception("job change listener failed")

    # ---- paths (the id is validated here, the only way a request's data reaches the filesystem)
    def job_dir(self, job_id: str) -> Path:
        if not valid_id(job_id):
            raise ValueError("bad job id")
        return self.jobs_dir / job_id

    def log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "job.log"

    def out_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "out"

    def zip_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "result.zip"

    def log(self, job_id: str, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        with open(self.log_path(job_id), "a", encoding="utf-8") as f:
            f.write(f"{stamp}Z {message}\n")

    def delete_files(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # ---- rows
    def _row(self, row: sqlite3.Row | None) -> dict | None:
        if row is None:
            return None
        job = dict(row)
        for col in _JSON_COLS:
            job[col] = json.loads(job[col]) if job[col] is not None else None
        return job

    def _exec(self, sql: str, args=()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def insert(self, job_id: str, options: dict, input_facts: dict, pack: str | None,
               max_queued: int | None = None) -> bool:
        """Add a queued job; False (nothing added) when `max_queued` jobs already wait."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if max_queued is not None:
                    (n,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()
                    if n >= max_queued:
                        self._db.execute("ROLLBACK")
                        return False
                self._db.execute(
                    "INSERT INTO jobs(id, state, created_at, options, input, pack, stage) "
                    "VALUES (?, 'queued', ?, ?, ?, ?, 'queued')",
                    (job_id, time.time(), json.dumps(options), json.dumps(input_facts), pack))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._changed(job_id)
        return True

    def get(self, job_id: str) -> dict | None:
        if not valid_id(job_id):
            return None
        return self._row(self._exec("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    def list(self, state: str | None = None, limit: int = 100) -> list[dict]:
        if state:
            rows = self._exec("SELECT * FROM jobs WHERE state=? ORDER BY seq DESC LIMIT ?", (state, limit))
        else:
            rows = self._exec("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        return [self._row(r) for r in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        rows = self._exec("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}

    def queue_position(self, job_id: str) -> int | None:
        row = self._exec(
            "SELECT COUNT(*) FROM jobs WHERE state='queued' AND seq <= (SELECT seq FROM jobs WHERE id=?)",
            (job_id,)).fetchone()
        return row[0] if row else None

    def claim_next(self) -> dict | None:
        """Oldest queued job -> running (atomically)."""
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET state='running', started_at=?, attempts=attempts+1, progress=0, "
                "stage='starting', stage_started_at=?, timings='{}' "
                "WHERE seq=(SELECT seq FROM jobs WHERE state='queued' ORDER BY seq LIMIT 1) RETURNING *",
                (time.time(), time.time())).fetchone()
        if row is not None:
            self._changed(row["id"])
        return self._row(row)

    def requeue_running(self) -> list[str]:
        """After a crash or restart: the jobs that were running go back to the queue, in order."""
        with self._lock:
            rows = self._db.execute(
                "UPDATE jobs SET state='queued', progress=0, stage='queued', started_at=NULL "
                "WHERE state='running' RETURNING id").fetchall()
        return [r["id"] for r in rows]

    def update_running(self, job_id: str, **fields) -> None:
        """Progress of a running job (no effect once it was canceled or finished)."""
        cols = ", ".join(f"{k}=?" for k in fields)
        args = [json.dumps(v) if k in _JSON_COLS else v for k, v in fields.items()]
        if self._exec(f"UPDATE jobs SET {cols} WHERE id=? AND state='running'", (*args, job_id)).rowcount:
            self._changed(job_id)

    def finish(self, job_id: str, state: str, **fields) -> bool:
        """Move an active job to a final state; False when it was not active (e.g. canceled meanwhile)."""
        fields.update(state=state, finished_at=time.time())
        cols = ", ".join(f"{k}=?" for k in fields)
        args = [json.dumps(v) if k in _JSON_COLS else v for k, v in fields.items()]
        cur = self._exec(f"UPDATE jobs SET {cols} WHERE id=? AND state IN ('queued','running')",
                         (*args, job_id))
        if cur.rowcount == 1:
            self._changed(job_id)
        return cur.rowcount == 1

    def delete(self, job_id: str) -> None:
        self._exec("DELETE FROM jobs WHERE id=?", (job_id,))
        self.delete_files(job_id)
        self._changed(job_id)

    def expired(self, ttl_s: float) -> list[str]:
        rows = self._exec("SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                          (time.time() - ttl_s,)).fetchall()
        return [r["id"] for r in rows]

    def orphan_dirs(self) -> list[str]:
        """Job folders without a row (e.g. an upload cut short by a crash)."""
        known = {r["id"] for r in self._exec("SELECT id FROM jobs").fetchall()}
        return [p.name for p in self.jobs_dir.iterdir() if valid_id(p.name) and p.name not in known]

    def close(self) -> None:
        with self._lock:
            self._db.close()
