"""Execution traces, stored durably in `<data dir>/cerebrum/traces.db` and content-addressed:
a trace's id is the SHA-256 of its deterministic serialization with the id (and the summary's
copy of it) empty. A trace is someone's: `trace_namespaces` says whose (the namespace of the
call that made it, as the kernel gives it; one trace may be several callers' when their runs
were identical), and only they and admin see it."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.kernel.sdk import at_rest


def trace_id(trace: pb.Trace) -> str:
    bare = pb.Trace()
    bare.CopyFrom(trace)
    bare.id = ""
    bare.summary.trace_id = ""
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def loaded(body: bytes) -> pb.Trace:
    trace = pb.Trace.FromString(body)
    trace.summary.trace_id = trace.id  # the id is made from the content, so it is stored beside it
    return trace


class TraceReads:
    """The reads both trace stores answer alike (SQLite here, PostgreSQL in pg_traces.py): each
    store says how it marks a parameter and how it runs a query."""

    mark = "?"

    def _rows(self, sql: str, args: list) -> list[tuple]:
        raise NotImplementedError

    def get(self, trace_id_: str, namespace: str | None) -> pb.Trace | None:
        """The trace, when it is `namespace`'s (None: anyone's)."""
        sql, args = f"SELECT body FROM traces WHERE id = {self.mark}", [trace_id_]
        if namespace is not None:
            sql += f" AND id IN (SELECT trace_id FROM trace_namespaces WHERE namespace = {self.mark})"
            args.append(namespace)
        rows = self._rows(sql, args)
        return loaded(bytes(rows[0][0])) if rows else None

    def recent(self, limit: int, namespace: str | None) -> list[pb.Trace]:
        sql, args = "SELECT body FROM traces", []
        if namespace is not None:
            sql += f" WHERE id IN (SELECT trace_id FROM trace_namespaces WHERE namespace = {self.mark})"
            args.append(namespace)
        return [loaded(bytes(r[0])) for r in self._rows(f"{sql} ORDER BY created DESC, id LIMIT {self.mark}", [*args, limit])]


class TraceStore(TraceReads):
    def __init__(self, path: Path, data_dir: Path | None = None):
        """`data_dir`: whose encryption at rest applies (at_rest.py); by default the folder above
        `<data dir>/cerebrum/traces.db`."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = at_rest.connect(path, path.parent.parent if data_dir is None else data_dir,
                                  isolation_level=None, check_same_thread=False)
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
        if self.db.execute("PRAGMA user_version").fetchone()[0] < 2:
            self.db.executescript(
                """
                BEGIN;
                CREATE TABLE trace_namespaces (
                    trace_id TEXT NOT NULL, namespace TEXT NOT NULL, PRIMARY KEY (namespace, trace_id)
                );
                INSERT INTO trace_namespaces SELECT id, 'default' FROM traces;
                PRAGMA user_version = 2;
                COMMIT;
                """
            )

    def put(self, trace: pb.Trace, namespace: str) -> str:
        trace.id = trace_id(trace)
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT OR IGNORE INTO traces(id, created, status, body) VALUES (?, ?, ?, ?)",
                (trace.id, trace.created_unix_ms, trace.summary.status, trace.SerializeToString(deterministic=True)),
            )
            self.db.execute("INSERT OR IGNORE INTO trace_namespaces(trace_id, namespace) VALUES (?, ?)", (trace.id, namespace))
        return trace.id

    def _rows(self, sql: str, args: list) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self.lock:
            self.db.close()
