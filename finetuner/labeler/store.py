"""The label store: one SQLite file in the labeler's output folder.

A label is committed (WAL journal, `synchronous=FULL`) before the page gets its answer, so a
label the page saw acknowledged survives the server stopping, a crash or a closed browser.
Each submission carries a client-made id: a submission sent twice (a retry, a double click)
is stored once and answered as a duplicate.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    query INTEGER NOT NULL,
    model_version INTEGER NOT NULL,
    num_marks INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    query INTEGER NOT NULL,
    item INTEGER NOT NULL,
    relevant INTEGER NOT NULL CHECK (relevant IN (0, 1)),
    submission TEXT NOT NULL REFERENCES submissions(id),
    PRIMARY KEY (query, item)
);
CREATE TABLE IF NOT EXISTS rounds (
    version INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Ack:
    """The store's answer to a submission.

    Attributes:
        submission_id: the id the client sent.
        duplicate: True when this id was stored before (nothing was written now).
        num_labels: labels in the store after this submission.
        num_sessions: labelled queries in the store after this submission.
    """

    submission_id: str
    duplicate: bool
    num_labels: int
    num_sessions: int


class LabelStore:
    """Labels of (query item, result item) pairs, submissions, training rounds and settings,
    in one SQLite file; safe to call from several threads.

    Labels are keyed by (query, item): labelling the same pair again replaces the old label
    (the latest click wins); items are positions in the labeler's data.

    Args:
        path: the SQLite file; its folder is created. An existing file is opened and continued.

    Raises:
        sqlite3.DatabaseError: `path` exists but is not a SQLite database.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # one connection shared by the server's threads, serialised by the lock
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before we answer
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database (later calls raise `sqlite3.ProgrammingError`)."""
        with self._lock:
            self._db.close()

    # ---- labels ------------------------------------------------------------------------
    def add(self, submission_id: str, query: int, marks: list[tuple[int, bool]], model_version: int = 0) -> Ack:
        """Store one labelled result page atomically, or nothing if `submission_id` is known.

        Args:
            submission_id: the client's id for this submission (idempotency key).
            query: the query item's position.
            marks: (item position, relevant) for each labelled result.
            model_version: the model version that produced the page (for the metrics).

        Returns:
            `Ack`, once the labels are committed to disk.
        """
        now = time.time()
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                known = cur.execute("SELECT 1 FROM submissions WHERE id = ?", (submission_id,)).fetchone()
                if known is None:
                    cur.execute("INSERT INTO submissions VALUES (?, ?, ?, ?, ?)",
                                (submission_id, int(query), int(model_version), len(marks), now))
                    cur.executemany(
                        "INSERT INTO labels VALUES (?, ?, ?, ?) ON CONFLICT (query, item) DO UPDATE "
                        "SET relevant = excluded.relevant, submission = excluded.submission",
                        [(int(query), int(i), int(bool(r)), submission_id) for i, r in marks])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            n_labels, n_sessions = self._counts(cur)
        return Ack(submission_id, known is not None, n_labels, n_sessions)

    def _counts(self, cur) -> tuple[int, int]:
        return cur.execute("SELECT COUNT(*), COUNT(DISTINCT query) FROM labels").fetchone()

    def counts(self) -> tuple[int, int]:
        """(number of labels, number of labelled queries)."""
        with self._lock:
            return self._counts(self._db.cursor())

    def labels(self) -> list[tuple[int, int, int, str]]:
        """Every label as (query, item, relevant 0/1, submission id), ordered by query then item."""
        with self._lock:
            return self._db.execute(
                "SELECT query, item, relevant, submission FROM labels ORDER BY query, item").fetchall()

    def sessions(self) -> dict[int, list[tuple[int, int]]]:
        """Labels grouped by query: {query: [(item, relevant 0/1), ...]} (queries in first-label order)."""
        return self.snapshot()[0]

    def snapshot(self) -> tuple[dict[int, list[tuple[int, int]]], int]:
        """(`sessions()`, number of submissions), read in one transaction: the count is that of
        exactly the submissions whose labels are in the sessions (a training round records it,
        so a page stored meanwhile still counts as new for the next round)."""
        out: dict[int, list[tuple[int, int]]] = {}
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN")
            try:
                rows = cur.execute(
                    "SELECT l.query, l.item, l.relevant FROM labels l JOIN submissions s ON s.id = l.submission "
                    "ORDER BY s.created, l.query, l.item").fetchall()
                count = cur.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
            finally:
                cur.execute("COMMIT")
        for q, i, r in rows:
            out.setdefault(q, []).append((i, r))
        return out, count

    def submissions(self, offset: int = 0, limit: int = 100) -> list[dict]:
        """Submissions, newest first: dicts with id, query, model_version, num_marks, created
        (unix s) and marks (the labels this submission still holds: [{"item", "relevant"}])."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, query, model_version, num_marks, created FROM submissions "
                "ORDER BY created DESC, id LIMIT ? OFFSET ?", (int(limit), int(offset))).fetchall()
            ids = [r[0] for r in rows]
            marks: dict[str, list] = {}
            for i in range(0, len(ids), 500):  # SQLite caps the number of parameters
                chunk = ids[i:i + 500]
                for sub, item, rel in self._db.execute(
                        f"SELECT submission, item, relevant FROM labels WHERE submission IN "
                        f"({','.join('?' * len(chunk))}) ORDER BY item", chunk):
                    marks.setdefault(sub, []).append({"item": item, "relevant": bool(rel)})
        keys = ("id", "query", "model_version", "num_marks", "created")
        return [{**dict(zip(keys, r)), "marks": marks.get(r[0], [])} for r in rows]

    def submission_count(self) -> int:
        """Number of submissions stored (duplicates of a known id are not stored)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]

    def submission_versions(self) -> dict[int, int]:
        """{query: model version that showed its latest page}."""
        with self._lock:
            rows = self._db.execute("SELECT query, model_version FROM submissions ORDER BY created").fetchall()
        return {q: v for q, v in rows}

    # ---- training rounds and settings ---------------------------------------------------
    def add_round(self, version: int, record: dict) -> None:
        """Record what training round `version` did (labels used, metrics, seconds)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?, ?)",
                             (int(version), time.time(), json.dumps(record, default=float)))

    def rounds(self) -> list[dict]:
        """Training rounds, oldest first: the dicts given to `add_round`, plus "version"."""
        with self._lock:
            rows = self._db.execute("SELECT version, record FROM rounds ORDER BY version").fetchall()
        return [{"version": v, **json.loads(r)} for v, r in rows]

    def last_round(self) -> dict | None:
        """The newest training round's record (with "version"), or None before the first."""
        with self._lock:
            row = self._db.execute("SELECT version, record FROM rounds ORDER BY version DESC LIMIT 1").fetchone()
        return {"version": row[0], **json.loads(row[1])} if row else None

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """The stored setting `key`, or `default`."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        """Store the setting `key` (committed before returning)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))
