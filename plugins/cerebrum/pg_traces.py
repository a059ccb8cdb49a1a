"""Traces on PostgreSQL (`[plugins.cerebrum] backend = "postgres"`): the store several kernels
share, so a trace made through kernel A is shown, critiqued and replayed through kernel B. The
same content-addressed traces and namespaces as traces.py: a trace's id is its content's hash, so
two kernels writing one trace write one row."""

from __future__ import annotations

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb

from .traces import loaded, trace_id

MIGRATIONS = [
    """
    CREATE TABLE traces (id text PRIMARY KEY, created bigint NOT NULL, status text NOT NULL, body bytea NOT NULL);
    CREATE INDEX traces_created ON traces (created DESC, id);
    CREATE TABLE trace_namespaces (trace_id text NOT NULL, namespace text NOT NULL, PRIMARY KEY (namespace, trace_id));
    """,
]


class PostgresTraceStore:
    def __init__(self, dsn: str, pool_size: int = 2):
        from cortex.kernel import PostgresPool

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

    def get(self, trace_id_: str, namespace: str | None) -> pb.Trace | None:
        """The trace, when it is `namespace`'s (None: anyone's)."""
        sql, args = "SELECT body FROM traces WHERE id = %s", [trace_id_]
        if namespace is not None:
            sql += " AND id IN (SELECT trace_id FROM trace_namespaces WHERE namespace = %s)"
            args.append(namespace)
        with self.pool.connection() as conn:
            row = conn.execute(sql, args).fetchone()
        return loaded(bytes(row[0])) if row else None

    def recent(self, limit: int, namespace: str | None) -> list[pb.Trace]:
        sql, args = "SELECT body FROM traces", []
        if namespace is not None:
            sql += " WHERE id IN (SELECT trace_id FROM trace_namespaces WHERE namespace = %s)"
            args.append(namespace)
        with self.pool.connection() as conn:
            rows = conn.execute(sql + " ORDER BY created DESC, id LIMIT %s", [*args, limit]).fetchall()
        return [loaded(bytes(r[0])) for r in rows]

    def close(self) -> None:
        self.pool.close()
