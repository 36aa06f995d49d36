"""Jobs in SQLite and their files under the data dir.

Layout: <data>/spark.db, <data>/jobs/<id>/{input.<ext>, out/<stem>.<ext>, result.zip, job.log}.
Only server-made ids (32 hex digits) and the fixed stem names ever become path parts.

States: downloading (a URL job fetching its input) -> queued -> running -> succeeded | failed | canceled.
A running job is held by one worker under a lease (`worker`, `lease_until`) that its process renews; a lease
that runs out (the process died) is reclaimed by any worker: requeued, or failed after `max_attempts` runs.
Every write that changes a job row calls the listeners (`add_listener`) with the job id after the commit.
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
ID_RE = re.compile(r"[0-9a-f]{32}")  # matched with fullmatch: no trailing newline slips through
ACTIVE = ("downloading", "queued", "running")
STATES = ACTIVE + ("succeeded", "failed", "canceled")
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
# Columns added after the first release: added to older databases at open.
_ADDED = {"worker": "TEXT", "lease_until": "REAL", "idem_key": "TEXT", "source_url": "TEXT", "idem_hash": "TEXT"}
_JSON_COLS = ("options", "input", "timings", "error", "stems")


def new_job_id() -> str:
    return uuid.uuid4().hex


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def valid_id(job_id: str) -> bool:
    return isinstance(job_id, str) and bool(ID_RE.fullmatch(job_id))


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
            have = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)")}
            for col, kind in _ADDED.items():
                if col not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {col} {kind}")
            self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(idem_key) "
                             "WHERE idem_key IS NOT NULL")

    # ---- change feed
    def add_listener(self, cb: Callable[[str], None]) -> None:
        """cb(job_id) after every committed write that changes a job row (from the writing thread)."""
        self._listeners.append(cb)

    def _changed(self, *job_ids: str) -> None:
        for job_id in job_ids:
            for cb in list(self._listeners):
                try:
                    cb(job_id)
                except Exception:
                    log.exception("job listener failed")

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
        """Append a line to the job's log; a log that cannot be written (full disk) never stops a job."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        try:
            with open(self.log_path(job_id), "a", encoding="utf-8") as f:
                f.write(f"{stamp}Z {message}\n")
        except OSError as e:
            log.warning("job %s: log line not written (%s): %s", job_id, e.strerror or e, message)

    def strip(self, job_id: str) -> None:
        """A failed job keeps its log only (no input, partial results or temp files)."""
        d = self.job_dir(job_id)
        for p in d.iterdir() if d.is_dir() else ():
            if p.name != "job.log":
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

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
               max_queued: int | None = None, idem_key: str | None = None, source_url: str | None = None,
               state: str = "queued", owner: str | None = None, lease_s: float = 0,
               idem_hash: str | None = None) -> str | None:
        """Add a job (queued, or downloading under `owner`'s lease); returns its id: the existing job's id
        when `idem_key` is already taken, None (nothing added) when `max_queued` jobs already wait."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if idem_key is not None:
                    row = self._db.execute("SELECT id FROM jobs WHERE idem_key=?", (idem_key,)).fetchone()
                    if row:
                        self._db.execute("ROLLBACK")
                        return row["id"]
                if max_queued is not None:
                    (n,) = self._db.execute(
                        "SELECT COUNT(*) FROM jobs WHERE state IN ('queued','downloading')").fetchone()
                    if n >= max_queued:
                        self._db.execute("ROLLBACK")
                        return None
                now = time.time()
                self._db.execute(
                    "INSERT INTO jobs(id, state, created_at, options, input, pack, stage, idem_key, source_url, "
                    "worker, lease_until, idem_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, state, now, json.dumps(options), json.dumps(input_facts), pack, state, idem_key,
                     source_url, owner, now + lease_s if owner else None, idem_hash))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite already rolled back after "database or disk is full"
                    self._db.execute("ROLLBACK")
                raise
        self._changed(job_id)
        return job_id

    def by_idem_key(self, key: str) -> dict | None:
        return self._row(self._exec("SELECT * FROM jobs WHERE idem_key=?", (key,)).fetchone())

    def downloaded(self, job_id: str, input_facts: dict) -> bool:
        """A downloading job has its input: it joins the queue (False when canceled meanwhile)."""
        cur = self._exec("UPDATE jobs SET state='queued', stage='queued', input=?, worker=NULL, lease_until=NULL, "
                         "source_url=NULL WHERE id=? AND state='downloading'", (json.dumps(input_facts), job_id))
        if cur.rowcount:
            self._changed(job_id)
        return cur.rowcount == 1

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

    def queue_position(self, job_id: str) -> int:
        """1 + the queued jobs ahead of this one (never 0, even if the job was claimed meanwhile)."""
        row = self._exec(
            "SELECT 1 + COUNT(*) FROM jobs WHERE state='queued' AND seq < (SELECT seq FROM jobs WHERE id=?)",
            (job_id,)).fetchone()
        return row[0]

    def claim_next(self, worker: str, lease_s: float) -> dict | None:
        """Oldest queued job -> running, held by `worker` for `lease_s` (atomically)."""
        now = time.time()
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET state='running', started_at=?, attempts=attempts+1, progress=0, "
                "stage='starting', stage_started_at=?, timings='{}', worker=?, lease_until=? "
                "WHERE seq=(SELECT seq FROM jobs WHERE state='queued' ORDER BY seq LIMIT 1) RETURNING *",
                (now, now, worker, now + lease_s)).fetchone()
        job = self._row(row)
        if job:
            self._changed(job["id"])
        return job

    def renew(self, held: list[tuple[str, str]], lease_s: float) -> None:
        """Heartbeat: extend the leases of these (job id, worker) pairs (not a visible change: no listener call).
        A job canceled while it ran stays held until its worker lets go (`let_go`): no one deletes its folder
        from under that worker."""
        until = time.time() + lease_s
        with self._lock:
            self._db.executemany("UPDATE jobs SET lease_until=? WHERE id=? AND worker=? "
                                 "AND state IN ('running','downloading','canceled')", [(until, j, w) for j, w in held])

    def expire_owner(self, process_id: str) -> int:
        """The process `process_id` is known dead (its liveness lock is free): its leases end now."""
        cur = self._exec("UPDATE jobs SET lease_until=0 WHERE worker LIKE ? ESCAPE '\\' AND lease_until > 0",
                         (_like_prefix(process_id) + "/%",))
        return cur.rowcount

    def reclaim_expired(self, max_attempts: int) -> tuple[list[dict], list[dict]]:
        """Jobs whose lease ran out (their process died): running ones are requeued, or fail once they were
        started `max_attempts` times; downloading ones fail at that cap too (`take_downloads` restarts the
        others). Returns (requeued, failed)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dead = "(lease_until IS NULL OR lease_until < ?)"
                failed = self._db.execute(
                    "UPDATE jobs SET state='failed', stage='failed', finished_at=?, worker=NULL, source_url=NULL, "
                    "error=json_object('code', 'interrupted', 'status', 500, 'message', 'interrupted ' || attempts "
                    "|| ' times (the process stopped while it ' || CASE state WHEN 'running' THEN 'ran' "
                    "ELSE 'downloaded the input' END || '); not run again') "
                    f"WHERE (state IN ('running', 'downloading') AND attempts >= ? OR state='downloading' AND "
                    f"source_url IS NULL) AND {dead} RETURNING *", (now, max_attempts, now)).fetchall()
                requeued = self._db.execute(
                    "UPDATE jobs SET state='queued', progress=0, stage='queued', started_at=NULL, worker=NULL, "
                    f"lease_until=NULL WHERE state='running' AND {dead} RETURNING *", (now,)).fetchall()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite already rolled back after "database or disk is full"
                    self._db.execute("ROLLBACK")
                raise
        self._changed(*[r["id"] for r in failed + requeued])
        return [self._row(r) for r in requeued], [self._row(r) for r in failed]

    def take_downloads(self, owner: str, lease_s: float, max_attempts: int) -> list[dict]:
        """Downloading jobs whose process stopped: `owner` takes them over to fetch their URL again."""
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "UPDATE jobs SET worker=?, lease_until=?, attempts=attempts+1 WHERE state='downloading' AND "
                "source_url IS NOT NULL AND attempts < ? AND (lease_until IS NULL OR lease_until < ?) RETURNING *",
                (owner, now + lease_s, max_attempts, now)).fetchall()
        self._changed(*[r["id"] for r in rows])
        return [self._row(r) for r in rows]

    def release(self, job_id: str, worker: str) -> bool:
        """Give a running job back to the queue without counting the run (shutdown, waiting for disk)."""
        cur = self._exec("UPDATE jobs SET state='queued', stage='queued', progress=0, started_at=NULL, worker=NULL, "
                         "lease_until=NULL, attempts=MAX(attempts-1, 0) WHERE id=? AND state='running' "
                         "AND worker=?", (job_id, worker))
        if cur.rowcount:
            self._changed(job_id)
        return cur.rowcount == 1

    def update_running(self, job_id: str, **fields) -> None:
        """Progress of a running job (no effect once it was canceled or finished)."""
        cols = ", ".join(f"{k}=?" for k in fields)
        args = [json.dumps(v) if k in _JSON_COLS else v for k, v in fields.items()]
        cur = self._exec(f"UPDATE jobs SET {cols} WHERE id=? AND state='running'", (*args, job_id))
        if cur.rowcount:
            self._changed(job_id)

    def cancel(self, job_id: str) -> str | None:
        """Cancel an active job; returns the state it had (None: it was not active). A running job stays held
        by its worker (worker, lease) until the worker lets go: its files are the worker's to remove."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
                before = row["state"] if row and row["state"] in ACTIVE else None
                if before is not None:
                    held = before == "running"
                    self._db.execute(
                        "UPDATE jobs SET state='canceled', stage='canceled', finished_at=?, source_url=NULL"
                        + ("" if held else ", worker=NULL, lease_until=NULL") + " WHERE id=?", (time.time(), job_id))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        if before is not None:
            self._changed(job_id)
        return before

    def let_go(self, job_id: str, worker: str) -> None:
        """A worker is done with a job that ended under it (canceled, failed by the watchdog)."""
        self._exec("UPDATE jobs SET worker=NULL, lease_until=NULL WHERE id=? AND worker=? AND state IN "
                   "('succeeded','failed','canceled')", (job_id, worker))

    def finish(self, job_id: str, state: str, **fields) -> bool:
        """Move an active job to a final state; False when it was not active (e.g. canceled meanwhile)."""
        fields.update(state=state, finished_at=time.time(), worker=None, lease_until=None, source_url=None)
        cols = ", ".join(f"{k}=?" for k in fields)
        args = [json.dumps(v) if k in _JSON_COLS else v for k, v in fields.items()]
        cur = self._exec(f"UPDATE jobs SET {cols} WHERE id=? AND state IN ('downloading','queued','running')",
                         (*args, job_id))
        if cur.rowcount:
            self._changed(job_id)
        return cur.rowcount == 1

    def delete(self, job_id: str) -> bool:
        """Delete a finished job, row and files; False (nothing done) while a worker still holds it (a job
        canceled mid-run whose worker has not stopped yet) or when it is still active."""
        with self._lock:
            row = self._db.execute(
                "DELETE FROM jobs WHERE id=? AND state IN ('succeeded','failed','canceled') AND "
                "(worker IS NULL OR lease_until IS NULL OR lease_until < ?) RETURNING id",
                (job_id, time.time())).fetchone()
            gone = row is not None or self._db.execute("SELECT 1 FROM jobs WHERE id=?", (job_id,)).fetchone() is None
        if not gone:
            return False
        self.delete_files(job_id)
        if row is not None:
            self._changed(job_id)
        return True

    def expired(self, ttl_s: float) -> list[str]:
        rows = self._exec("SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                          (time.time() - ttl_s,)).fetchall()
        return [r["id"] for r in rows]

    def orphan_dirs(self, min_age_s: float = 600.0) -> list[str]:
        """Job folders without a row and untouched for `min_age_s` (an upload cut short by a crash; younger ones
        may be an upload in progress, by another process on the same data dir too)."""
        known = {r["id"] for r in self._exec("SELECT id FROM jobs").fetchall()}
        old = time.time() - min_age_s
        out = []
        for p in self.jobs_dir.iterdir():
            if valid_id(p.name) and p.name not in known:
                try:
                    newest = max([p.stat().st_mtime] + [c.stat().st_mtime for c in p.iterdir()])
                except OSError:
                    continue
                if newest < old:
                    out.append(p.name)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
