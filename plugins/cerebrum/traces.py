"""Execution traces, stored durably in `<data dir>/cerebrum/traces.db` and content-addressed:
a trace's id is the SHA-256 of its deterministic serialization with the id (and the summary's
copy of it) empty."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb


def trace_id(trace: pb.Trace) -> str:
    bare = pb.Trace()
    bare.CopyFrom(trace)
    bare.id = ""
    bare.summary.trace_id = ""
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def _loaded(body: bytes) -> pb.Trace:
    trace = pb.Trace.FromString(body)
    trace.summary.trace_id = trace.id  # the id is made from the content, so it is stored beside it
    return trace


class TraceStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        if self.db.execute("PRAGMA user_version").fetchone()[0] < 1:
            self.db.executescript(
                """
                BEGIN;
                CREATE TABLE IF NOT EXISTS traces (
                    id TEXT PRIMARY KEY, created INTEGER NOT NULL, status TEXT NOT NULL, body BLOB NOT NULL
                );
                CREATE INDEX IF NOT EXISTS traces_created ON traces(created DESC);
                PRAGMA user_version = 1;
                COMMIT;
                """
            )

    def put(self, trace: pb.Trace) -> str:
        trace.id = trace_id(trace)
        with self.lock:
            self.db.execute(
                "INSERT OR IGNORE INTO traces(id, created, status, body) VALUES (?, ?, ?, ?)",
                (trace.id, trace.created_unix_ms, trace.summary.status, trace.SerializeToString(deterministic=True)),
            )
        return trace.id

    def get(self, trace_id_: str) -> pb.Trace | None:
        with self.lock:
            row = self.db.execute("SELECT body FROM traces WHERE id = ?", (trace_id_,)).fetchone()
        return _loaded(row[0]) if row else None

    def recent(self, limit: int) -> list[pb.Trace]:
        with self.lock:
            rows = self.db.execute("SELECT body FROM traces ORDER BY created DESC, id LIMIT ?", (limit,)).fetchall()
        return [_loaded(r[0]) for r in rows]

    def close(self) -> None:
        with self.lock:
            self.db.close()
