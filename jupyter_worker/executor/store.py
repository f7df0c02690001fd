"""The executor's job table: SQLite in WAL mode, one row per job, nothing kept in memory only."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

from ..spec import JobRecord, JobStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner_uid INTEGER NOT NULL,
    status TEXT NOT NULL,
    finished_at REAL,
    record TEXT NOT NULL,
    launch TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner_uid, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS holders (
    uid INTEGER NOT NULL,
    holder TEXT NOT NULL,
    PRIMARY KEY (uid, holder)
);
CREATE TABLE IF NOT EXISTS held_jobs (
    job_id TEXT PRIMARY KEY,
    uid INTEGER NOT NULL,
    holder TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS held_jobs_by_holder ON held_jobs (uid, holder);
"""


def _record(text: str) -> JobRecord:
    return JobRecord.from_dict(json.loads(text))


class JobStore:
    """Rows hold the record as JSON plus the columns that queries filter and sort on."""

    def __init__(self, path: str):
        # Made root's and 0600 before SQLite opens it: SQLite gives the -wal and -shm files the
        # database's own mode, and the rows hold every job's command and environment.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """All or nothing; a savepoint, so it also nests inside a caller's transaction."""
        self.db.execute("SAVEPOINT atomic")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO atomic")
            self.db.execute("RELEASE atomic")
            raise
        self.db.execute("RELEASE atomic")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The writes made inside are committed together, once, when it ends (also when it ends by
        an exception: each write stands as it would alone). Nested, the outermost commits. Nothing
        reads the database from another connection, so holding the transaction costs no one."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def add(self, record: JobRecord, launch: dict[str, Any], holder: str | None = None) -> None:
        """A new job, and in the same transaction its holder's claim on it."""
        with self._atomic():
            self.db.execute(
                "INSERT INTO jobs (id, owner_uid, status, finished_at, record, launch) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.owner_uid,
                    record.status.value,
                    record.finished_at,
                    json.dumps(record.to_dict()),
                    json.dumps(launch),
                ),
            )
            if holder is not None:
                self.db.execute(
                    "INSERT INTO held_jobs (job_id, uid, holder) VALUES (?, ?, ?)",
                    (record.id, record.owner_uid, holder),
                )

    def save(self, record: JobRecord) -> None:
        self.db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, record = ? WHERE id = ?",
            (record.status.value, record.finished_at, json.dumps(record.to_dict()), record.id),
        )

    def save_many(self, records: list[JobRecord]) -> None:
        with self.batch():
            for record in records:
                self.save(record)

    def get(self, job_id: str) -> JobRecord | None:
        row = self.db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row[0]) if row else None

    def set_launch(self, job_id: str, launch: dict[str, Any]) -> None:
        self.db.execute("UPDATE jobs SET launch = ? WHERE id = ?", (json.dumps(launch), job_id))

    def launch_of(self, job_id: str) -> dict[str, Any]:
        row = self.db.execute("SELECT launch FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else {}

    def ids_with_prefix(self, prefix: str, owner_uid: int | None, limit: int = 2) -> list[str]:
        pattern = prefix.replace("\\", "").replace("%", "").replace("_", "") + "%"
        query, args = "SELECT id FROM jobs WHERE id LIKE ?", [pattern]
        if owner_uid is not None:
            query, args = query + " AND owner_uid = ?", [*args, owner_uid]
        return [row[0] for row in self.db.execute(query + " LIMIT ?", (*args, limit))]

    def page(
        self,
        owner_uid: int | None,
        statuses: list[str] | None,
        before: int | None,
        limit: int,
        oldest_first: bool,
        *,
        max_bytes: int | None = None,
    ) -> tuple[list[JobRecord], int | None]:
        """One page in creation order; the cursor is the seq to continue after (None at the end).
        A page holds at most limit records and, past its first, at most max_bytes of their JSON:
        however big some user's records are, a page fits a protocol frame; the cursor goes on."""
        where, args = [], []
        if owner_uid is not None:
            where.append("owner_uid = ?")
            args.append(owner_uid)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if before is not None:
            where.append("seq > ?" if oldest_first else "seq < ?")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "ASC" if oldest_first else "DESC"
        rows = self.db.execute(
            f"SELECT seq, record FROM jobs {clause} ORDER BY seq {order} LIMIT ?", (*args, limit + 1)
        )
        # Read row by row: the rows past the page are never all held in memory at once.
        taken: list[str] = []
        size, last, cursor = 0, None, None
        for seq, text in rows:
            if len(taken) == limit or (taken and max_bytes is not None and size + len(text) > max_bytes):
                cursor = last
                break
            taken.append(text)
            size, last = size + len(text), seq
        return [_record(text) for text in taken], cursor

    def with_status(self, *statuses: JobStatus) -> list[JobRecord]:
        marks = ", ".join("?" * len(statuses))
        rows = self.db.execute(
            f"SELECT record FROM jobs WHERE status IN ({marks}) ORDER BY seq", [s.value for s in statuses]
        )
        return [_record(text) for (text,) in rows]

    def running(self) -> list[tuple[str, str, str, int | None]]:
        """(id, owner, backend, disk limit in MiB) of every RUNNING job: what scheduling counts,
        read by SQLite from the stored JSON without decoding whole records (it runs at every
        submit and every end, however many jobs run)."""
        return self.db.execute(
            "SELECT id, json_extract(record, '$.owner'), json_extract(record, '$.backend'),"
            " json_extract(record, '$.limits.disk_mb') FROM jobs WHERE status = ? ORDER BY seq",
            (JobStatus.RUNNING.value,),
        ).fetchall()

    def finished_oldest_first(self) -> list[tuple[str, float]]:
        return self.db.execute(
            "SELECT id, finished_at FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at"
        ).fetchall()

    def finished_with_owners(self) -> list[tuple[str, float, int]]:
        """(id, finished_at, owner_uid) of every finished job, oldest first: retention's input."""
        return self.db.execute(
            "SELECT id, finished_at, owner_uid FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at"
        ).fetchall()

    def delete(self, job_id: str) -> None:
        self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self.db.execute("DELETE FROM held_jobs WHERE job_id = ?", (job_id,))

    # A holder is a client (a Jupyter server) whose jobs end when its connection does; the rows
    # outlive an executor restart so that a holder that does not come back still ends its jobs.

    def add_holder(self, uid: int, holder: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO holders (uid, holder) VALUES (?, ?)", (uid, holder))

    def holders(self) -> list[tuple[int, str]]:
        return self.db.execute("SELECT uid, holder FROM holders").fetchall()

    def release_holder(self, uid: int, holder: str) -> list[str]:
        """Forget the holder; the ids of the jobs it held."""
        with self._atomic():
            rows = self.db.execute("SELECT job_id FROM held_jobs WHERE uid = ? AND holder = ?", (uid, holder))
            job_ids = [job_id for (job_id,) in rows]
            self.db.execute("DELETE FROM held_jobs WHERE uid = ? AND holder = ?", (uid, holder))
            self.db.execute("DELETE FROM holders WHERE uid = ? AND holder = ?", (uid, holder))
        return job_ids
