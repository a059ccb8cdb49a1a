"""Traces on PostgreSQL (`[plugins.cerebrum] backend = "postgres"`): the store several kernels
share, so a trace made through kernel A is shown, critiqued and replayed through kernel B. The
same content-addressed traces and namespaces as traces.py: a trace's id is its content's hash, so
two kernels writing one trace write one row."""

from __future__ import annotations

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb

from .traces import TraceReads, trace_id

MIGRATIONS = [
    """
    CREATE TABLE traces (id text PRIMARY KEY, created bigint NOT NULL, status text NOT NULL, body bytea NOT NULL);
    CREATE INDEX traces_created ON traces (created DESC, id);
    CREATE TABLE trace_namespaces (trace_id text NOT NULL, namespace text NOT NULL, PRIMARY KEY (namespace, trace_id));
    """,
]


class PostgresTraceStore(TraceReads):
    mark = "%s"

    def __init__(self, dsn: str, pool_size: int = 2):
        from cortex.kernel.sdk import PostgresPool

        self.pool = PostgresPool(dsn, "cortex_traces_schema", MIGRATIONS, pool_size)
        self.location = self.pool.location

    def put(self, trace: pb.Trace, namespace: str) -> str:
        trace.id = trace_id(trace)
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO traces (id, created, status, body) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (trace.id, trace.created_unix_ms, trace.summary.status, trace.SerializeToString(deterministic=True)))
            conn.execute("INSERT INTO trace_namespaces (trace_id, namespace) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                         (trace.id, namespace))
        return trace.id

    def _rows(self, sql: str, args: list) -> list[tuple]:
        with self.pool.connection() as conn:
            return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        self.pool.close()
