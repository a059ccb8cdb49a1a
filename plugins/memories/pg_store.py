"""Memories on PostgreSQL + pgvector: the store several kernels share (`backend = "postgres"`).

The same `MemoryStore` as the SQLite file, so the service above cannot tell them apart; what
differs is where the work is done:

- Vectors are a `vector` column searched by the database: an HNSW index per embedding model
  (inner product, the vectors being L2-normalised) over the vectors cast to `vector(dimension)`,
  partial on that model, made when the model's first vector arrives. Not `halfvec`: where the
  planner prefers a scan (a small table, a selective filter) every row would be cast to half
  precision, which made a 5,000-memory search 20 ms (bench_memories.py --postgres); the cast to
  `vector(n)` costs nothing. pgvector's iterative scan keeps filtered searches full; scores are the
  exact float32 inner products. Every kernel sees every other kernel's memories at once: there is
  no index in any kernel's memory.
- Keyword search is PostgreSQL's full text: a `tsvector` of text and tags (the `simple`
  configuration: no stemming and no stopword list, as SQLite's FTS5 here), ranked by
  `ts_rank_cd` with length normalisation; the words looked for are chosen as for SQLite.
- Idempotent Store is the unique content hash: `INSERT ... ON CONFLICT DO NOTHING`, so two kernels
  storing one text at once make one memory and both answer with it.
- The schema is versioned in `cortex_memories_schema`; migrations run on start (and by `cortex
  memories migrate`) inside one transaction holding an advisory lock, so two kernels starting at
  once migrate once (the kernel's PostgresPool).
- A server that cannot be reached makes a call UNAVAILABLE (the kernel's DatabaseUnavailable),
  never a crash: another kernel, or a retry, may do better. Connections are checked as they leave
  the pool, so a restarted server costs no failed call.

Run against any PostgreSQL 14+ with pgvector 0.8+ (iterative index scans); the role needs to own
its tables, and `CREATE EXTENSION vector` to have been run by an administrator if the role may not.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator

import numpy as np
import structlog

from .store import (
    COMMON_SHARE,
    COMMON_WINDOW,
    DuplicateContent,
    Link,
    MemoryStore,
    Query,
    Record,
    Version,
    query_words,
    version_body,
    version_record,
)

log = structlog.get_logger("cortex.memories.postgres")

TEXT_SEARCH = "simple"
# HNSW graph and search widths (scripts/bench_memories.py --postgres). pgvector's defaults
# (ef_construction 64, ef_search 40) gave recall@10 0.75 at a million memories, ef_search 100 0.83
# and 400 0.94: the graph was built too narrow, as usearch's was at expansion_add 64.
EF_CONSTRUCTION = 128
EF_SEARCH = 200
COMMON_SAMPLE = 10_000  # the newest memories whose words tell this corpus's common terms

MIGRATIONS = [
    # 1: memories with their vectors and words; versions, supersessions, meta; one HNSW index per model
    """
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE memories (
        id text PRIMARY KEY,
        kind text NOT NULL,
        text text NOT NULL,
        tags text[] NOT NULL,
        metadata jsonb NOT NULL,
        source text NOT NULL,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        expires_at bigint,
        content_hash text NOT NULL UNIQUE,
        embedding_model text NOT NULL DEFAULT '',
        embedding vector,
        namespace text NOT NULL DEFAULT 'default',
        words tsvector NOT NULL
    );
    CREATE INDEX memories_created ON memories (created_at DESC, id DESC);
    CREATE INDEX memories_namespace ON memories (namespace, created_at DESC, id DESC);
    CREATE INDEX memories_model ON memories (embedding_model);
    CREATE INDEX memories_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX memories_tags ON memories USING gin (tags);
    CREATE INDEX memories_words ON memories USING gin (words);
    CREATE TABLE memory_versions (
        memory_id text NOT NULL, version integer NOT NULL, body text NOT NULL, replaced_at bigint NOT NULL,
        cause text NOT NULL, PRIMARY KEY (memory_id, version)
    );
    CREATE TABLE supersessions (old_id text PRIMARY KEY, new_id text NOT NULL, rule text NOT NULL, at bigint NOT NULL);
    CREATE INDEX supersessions_new ON supersessions (new_id);
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE vector_indexes (model text PRIMARY KEY, dimension integer NOT NULL, name text NOT NULL);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
COLUMNS = ("id, kind, text, tags, metadata, source, created_at, updated_at, expires_at, content_hash, embedding_model, "
           "embedding, namespace")
M_COLUMNS = ", ".join(f"m.{c}" for c in COLUMNS.split(", "))


def _record(row: tuple) -> Record:
    vector = row[11]
    return Record(
        id=row[0], kind=row[1], text=row[2], tags=list(row[3]), metadata=row[4], source=row[5], created_at=row[6],
        updated_at=row[7], expires_at=row[8], content_hash=row[9], embedding_model=row[10],
        embedding=vector.to_numpy().astype(np.float32, copy=False) if vector is not None else None, namespace=row[12],
    )


def _words(record: Record) -> str:
    return " ".join([record.text, *record.tags])


def tsquery(words: list[str], every: bool) -> str:
    """A tsquery of plain words (each a run of \\w, quoted: no operator gets through)."""
    return (" & " if every else " | ").join(f"'{w}'" for w in words)


class PostgresStore(MemoryStore):
    def __init__(self, dsn: str, pool_size: int = 4, timeout: float = 5.0):
        import psycopg
        from pgvector.psycopg import register_vector

        from cortex.kernel.sdk import PostgresPool

        self._psycopg = psycopg
        self.pool = PostgresPool(dsn, "cortex_memories_schema", MIGRATIONS, pool_size, timeout, configure=register_vector)
        self.location, self.version = self.pool.location, self.pool.version
        self._indexed: set[str] = set()  # models whose HNSW index exists
        self._common: frozenset[str] = frozenset()
        self._common_at = 0.0  # when they were counted (time.monotonic)

    def _conn(self):
        """A pooled connection in a transaction, committed on leaving; the server away is DatabaseUnavailable."""
        return self.pool.connection()

    def own_index(self, model: str) -> PgVectorSearch:
        return PgVectorSearch(self, model)

    # -- writes --------------------------------------------------------------------------------
    def _ensure_vector_index(self, model: str, dimension: int) -> None:
        """The HNSW index of `model`'s vectors, made once (by whichever kernel writes one first)."""
        if model in self._indexed or not model:
            return
        from psycopg import sql

        with self._conn() as conn, conn.transaction():
            self.pool.exclusive(conn)  # one kernel makes it
            if conn.execute("SELECT 1 FROM vector_indexes WHERE model = %s", (model,)).fetchone() is None:
                name = f"memories_hnsw_{hashlib.sha256(model.encode()).hexdigest()[:16]}"
                conn.execute(sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON memories USING hnsw ((embedding::vector({})) vector_ip_ops) "
                    "WITH (m = 16, ef_construction = {}) WHERE embedding_model = {}").format(
                        sql.Identifier(name), sql.Literal(dimension), sql.Literal(EF_CONSTRUCTION), sql.Literal(model)))
                conn.execute("INSERT INTO vector_indexes (model, dimension, name) VALUES (%s, %s, %s)", (model, dimension, name))
                log.info("memories.postgres_vector_index", model=model, dimension=dimension, index=name)
        self._indexed.add(model)

    def _write(self, conn, record: Record, if_new: bool = False) -> bool:
        """INSERT the memory; with `if_new`, only when no memory has its content hash (False then)."""
        row = conn.execute(
            f"INSERT INTO memories ({COLUMNS}, words) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            f"to_tsvector('{TEXT_SEARCH}', %s)) " + ("ON CONFLICT (content_hash) DO NOTHING " if if_new else "") + "RETURNING id",
            (record.id, record.kind, record.text, record.tags, json.dumps(record.metadata, sort_keys=True), record.source,
             record.created_at, record.updated_at, record.expires_at, record.content_hash, record.embedding_model,
             record.embedding.astype(np.float32) if record.embedding is not None else None, record.namespace,
             _words(record)),
        ).fetchone()
        return row is not None

    def _vector_ready(self, record: Record) -> None:
        if record.embedding is not None:
            self._ensure_vector_index(record.embedding_model, len(record.embedding))

    def insert(self, record: Record) -> None:
        self._vector_ready(record)
        with self._conn() as conn:
            self._write(conn, record)

    def put(self, record: Record, now: int) -> tuple[Record, bool]:
        self._vector_ready(record)
        with self._conn() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM memories WHERE content_hash = %s FOR UPDATE",
                               (record.content_hash,)).fetchone()
            if row is not None:
                existing = _record(row)
                if existing.expires_at is None or existing.expires_at > now:
                    return existing, False
                conn.execute("DELETE FROM memories WHERE id = %s", (existing.id,))
                record.id = existing.id  # the same content, expired: it comes back as new, under its id
            if not self._write(conn, record, if_new=True):
                # another kernel stored this content since the SELECT: its memory is the one
                row = conn.execute(f"SELECT {COLUMNS} FROM memories WHERE content_hash = %s", (record.content_hash,)).fetchone()
                return _record(row), False
        return record, True

    def replace(self, record: Record, previous: Record | None = None, cause: str = "update", now: int = 0) -> None:
        self._vector_ready(record)
        try:
            with self._conn() as conn:
                if previous is not None:
                    # the row lock orders two kernels' changes of one memory, so versions never collide
                    conn.execute("SELECT 1 FROM memories WHERE id = %s FOR UPDATE", (record.id,))
                    (last,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM memory_versions WHERE memory_id = %s",
                                           (record.id,)).fetchone()
                    conn.execute("INSERT INTO memory_versions (memory_id, version, body, replaced_at, cause) "
                                 "VALUES (%s, %s, %s, %s, %s)", (record.id, last + 1, version_body(previous), now, cause))
                conn.execute("DELETE FROM memories WHERE id = %s", (record.id,))
                self._write(conn, record)
        except self._psycopg.errors.UniqueViolation:
            raise DuplicateContent(self.by_hash(record.content_hash)) from None

    @staticmethod
    def _forget(conn, ids: list[str]) -> None:
        """A memory's versions and links go with it (deleted means deleted)."""
        conn.execute("DELETE FROM memory_versions WHERE memory_id = ANY(%s)", (ids,))
        conn.execute("DELETE FROM supersessions WHERE old_id = ANY(%s) OR new_id = ANY(%s)", (ids, ids))

    def delete(self, memory_id: str) -> bool:
        return bool(self.delete_many([memory_id]))

    def delete_many(self, ids: list[str]) -> list[str]:
        """One transaction for all of them: a bulk delete is done or not done."""
        with self._conn() as conn:
            present = {r[0] for r in conn.execute("DELETE FROM memories WHERE id = ANY(%s) RETURNING id", (ids,))}
            self._forget(conn, list(present))
        return [i for i in ids if i in present]

    def versions(self, memory_id: str) -> list[Version]:
        with self._conn() as conn:
            rows = conn.execute("SELECT version, body, replaced_at, cause FROM memory_versions WHERE memory_id = %s "
                                "ORDER BY version", (memory_id,)).fetchall()
        return [Version(v, version_record(memory_id, body), at, cause) for v, body, at, cause in rows]

    def supersede(self, old_id: str, new_id: str, rule: str, now: int) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO supersessions (old_id, new_id, rule, at) VALUES (%s, %s, %s, %s) ON CONFLICT (old_id) "
                         "DO UPDATE SET new_id = excluded.new_id, rule = excluded.rule, at = excluded.at",
                         (old_id, new_id, rule, now))

    def links(self, ids: list[str]) -> list[Link]:
        if not ids:
            return []
        with self._conn() as conn:
            rows = conn.execute("SELECT old_id, new_id, rule, at FROM supersessions WHERE old_id = ANY(%s) OR new_id = ANY(%s)",
                                (ids, ids)).fetchall()
        return [Link(*row) for row in rows]

    def import_batch(self, items: list[tuple[Record, list[Version]]], now: int) -> list[str]:
        for record, _ in items:
            self._vector_ready(record)
        outcomes = []
        with self._conn() as conn:
            for record, versions in items:
                same_id = conn.execute("SELECT content_hash FROM memories WHERE id = %s", (record.id,)).fetchone()
                same_content = conn.execute("SELECT id FROM memories WHERE content_hash = %s", (record.content_hash,)).fetchone()
                if same_id is not None:
                    outcomes.append("unchanged" if same_id[0] == record.content_hash else "id in use by another memory here")
                elif same_content is not None:
                    outcomes.append(f"the same content is memory {same_content[0]} here")
                elif record.expires_at is not None and record.expires_at <= now:
                    outcomes.append("expired")
                else:
                    self._write(conn, record)
                    with conn.cursor() as cursor:
                        cursor.executemany(
                            "INSERT INTO memory_versions (memory_id, version, body, replaced_at, cause) VALUES (%s, %s, %s, %s, %s) "
                            "ON CONFLICT DO NOTHING",
                            [(record.id, v.version, version_body(v.record), v.replaced_at, v.cause) for v in versions])
                    outcomes.append("added")
        return outcomes

    def import_links(self, links: list[Link]) -> int:
        added = 0
        with self._conn() as conn:
            for link in links:
                both = conn.execute("SELECT COUNT(*) FROM memories WHERE id IN (%s, %s)", (link.old_id, link.new_id)).fetchone()[0]
                if both == 2:
                    added += conn.execute("INSERT INTO supersessions (old_id, new_id, rule, at) VALUES (%s, %s, %s, %s) "
                                          "ON CONFLICT DO NOTHING", (link.old_id, link.new_id, link.rule, link.at)).rowcount
        return added

    def set_embedding(self, memory_id: str, model: str, vector: np.ndarray) -> None:
        self._ensure_vector_index(model, len(vector))
        with self._conn() as conn:
            conn.execute("UPDATE memories SET embedding_model = %s, embedding = %s WHERE id = %s",
                         (model, vector.astype(np.float32), memory_id))

    def purge_expired(self, now: int) -> list[str]:
        with self._conn() as conn:
            ids = [r[0] for r in conn.execute(
                "DELETE FROM memories WHERE expires_at IS NOT NULL AND expires_at <= %s RETURNING id", (now,))]
            self._forget(conn, ids)
        return ids

    def meta(self, key: str, value: str | None = None) -> str | None:
        with self._conn() as conn:
            if value is not None:
                conn.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                             (key, value))
                return value
            row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def shared_secret(self, name: str) -> bytes:
        with self._conn() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                         (f"secret:{name}", os.urandom(32).hex()))
            (value,) = conn.execute("SELECT value FROM meta WHERE key = %s", (f"secret:{name}",)).fetchone()
        return bytes.fromhex(value)

    # -- reads ---------------------------------------------------------------------------------
    @staticmethod
    def _where(query: Query, now: int) -> tuple[str, list]:
        clauses, args = ["(m.expires_at IS NULL OR m.expires_at > %s)"], [now]
        if query.namespaces is not None:
            clauses.append("m.namespace = ANY(%s)")
            args.append(list(query.namespaces))
        if query.kinds:
            clauses.append("m.kind = ANY(%s)")
            args.append(list(query.kinds))
        if query.exclude_kinds:
            clauses.append("m.kind <> ALL(%s)")
            args.append(list(query.exclude_kinds))
        if query.tags_all:
            clauses.append("m.tags @> %s")
            args.append(list(query.tags_all))
        if query.tags_any:
            clauses.append("m.tags && %s")
            args.append(list(query.tags_any))
        if query.created_after is not None:
            clauses.append("m.created_at > %s")
            args.append(query.created_after)
        if query.created_before is not None:
            clauses.append("m.created_at < %s")
            args.append(query.created_before)
        if query.metadata:
            clauses.append("m.metadata @> %s::jsonb")
            args.append(json.dumps(query.metadata))
        return " AND ".join(clauses), args

    def get(self, memory_id: str, now: int) -> Record | None:
        return self.get_many([memory_id], now).get(memory_id)

    def get_many(self, ids: list[str], now: int) -> dict[str, Record]:
        if not ids:
            return {}
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM memories WHERE id = ANY(%s) AND (expires_at IS NULL OR expires_at > %s)",
                                (ids, now)).fetchall()
        return {r[0]: _record(r) for r in rows}

    def by_hash(self, content_hash: str) -> Record | None:
        with self._conn() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM memories WHERE content_hash = %s", (content_hash,)).fetchone()
        return _record(row) if row else None

    def page(self, query: Query, now: int, after: tuple[int, str] | None, limit: int) -> list[Record]:
        where, args = self._where(query, now)
        if after is not None:
            where += " AND (m.created_at, m.id) < (%s, %s)"
            args += [after[0], after[1]]
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {M_COLUMNS} FROM memories m WHERE {where} ORDER BY m.created_at DESC, m.id DESC LIMIT %s",
                                [*args, limit]).fetchall()
        return [_record(r) for r in rows]

    def common_terms(self) -> frozenset[str]:
        """Words in more than COMMON_SHARE of the newest memories, recounted every minute at most
        (every kernel writes here: a count of this kernel's writes would tell nothing)."""
        if time.monotonic() - self._common_at > 60:
            self._common_at = time.monotonic()
            with self._conn() as conn:
                rows = conn.execute(
                    "SELECT word FROM ts_stat(%s) WHERE ndoc > %s",
                    (f"SELECT words FROM memories ORDER BY created_at DESC LIMIT {COMMON_SAMPLE}",
                     max(50, int(COMMON_SAMPLE * COMMON_SHARE)))).fetchall()
            self._common = frozenset(r[0] for r in rows)
        return self._common

    def keyword(self, text: str, query: Query, now: int, limit: int) -> list[tuple[str, float]]:
        words, every = query_words(text, self.common_terms())
        if not words:
            return []
        where, args = self._where(query, now)
        if every:  # ranking most of the store costs much and tells little: the newest memories only
            where += (" AND m.created_at >= COALESCE((SELECT created_at FROM memories ORDER BY created_at DESC "
                      "OFFSET %s LIMIT 1), 0)")
            args.append(COMMON_WINDOW - 1)
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT m.id, ts_rank_cd(m.words, q, 1) AS score FROM memories m, to_tsquery('{TEXT_SEARCH}', %s) q "
                f"WHERE m.words @@ q AND {where} ORDER BY score DESC, m.id LIMIT %s",
                [tsquery(words, every), *args, limit]).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def nearest(self, model: str, vector: np.ndarray, k: int, query: Query, now: int) -> list[tuple[str, float]]:
        """The k memories of `model` nearest `vector` that pass the filters, by exact inner product."""
        from psycopg import sql

        dimension = len(vector)
        where, args = self._where(query, now)
        vector = vector.astype(np.float32)
        statement = sql.SQL(
            "SELECT m.id, -(m.embedding <#> %s) AS score FROM memories m WHERE m.embedding_model = {model} AND {where} "
            "ORDER BY m.embedding::vector({dim}) <#> %s::vector({dim}) LIMIT %s"
        ).format(model=sql.Literal(model), where=sql.SQL(where), dim=sql.Literal(dimension))
        with self._conn() as conn:
            # the planner matches the partial index by the model's literal; filters keep scanning the graph
            conn.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k)}")
            conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            rows = conn.execute(statement, [vector, *args, vector, k]).fetchall()
        return sorted(((r[0], float(r[1])) for r in rows), key=lambda pair: -pair[1])

    def count_vectors(self, model: str) -> int:
        with self._conn() as conn:
            return conn.execute("SELECT COUNT(*) FROM memories WHERE embedding_model = %s AND embedding IS NOT NULL",
                                (model,)).fetchone()[0]

    def vector_dimension(self, model: str) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT vector_dims(embedding) FROM memories WHERE embedding_model = %s AND embedding IS NOT NULL "
                               "LIMIT 1", (model,)).fetchone()
        return int(row[0]) if row else 0

    def vectors(self, model: str, now: int) -> Iterator[Record]:
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM memories WHERE embedding_model = %s AND embedding IS NOT NULL "
                                "AND (expires_at IS NULL OR expires_at > %s)", (model, now)).fetchall()
        for row in rows:
            yield _record(row)

    def unembedded(self, model: str, everything: bool) -> list[Record]:
        sql = f"SELECT {COLUMNS} FROM memories"
        args: tuple = ()
        if not everything:
            sql += " WHERE embedding_model <> %s OR embedding IS NULL"
            args = (model,)
        with self._conn() as conn:
            return [_record(r) for r in conn.execute(sql + " ORDER BY created_at", args).fetchall()]

    def stats(self, model: str, now: int, namespaces: list[str] | None = None) -> dict:
        live = "(m.expires_at IS NULL OR m.expires_at > %s)"
        mine, spaces = ("", []) if namespaces is None else (" AND m.namespace = ANY(%s)", [list(namespaces)])
        with self._conn() as conn:
            def count(sql: str, *args) -> list[tuple]:
                return conn.execute(sql, (*args, *spaces)).fetchall()

            total = count(f"SELECT COUNT(*) FROM memories m WHERE {live}{mine}", now)[0][0]
            by_kind = dict(count(f"SELECT m.kind, COUNT(*) FROM memories m WHERE {live}{mine} GROUP BY m.kind", now))
            by_tag = dict(count(f"SELECT t.tag, COUNT(*) FROM memories m, unnest(m.tags) AS t(tag) WHERE {live}{mine} "
                                "GROUP BY t.tag", now))
            stale = count(f"SELECT COUNT(*) FROM memories m WHERE {live} AND (m.embedding_model <> %s OR m.embedding IS NULL)"
                          f"{mine}", now, model)[0][0]
            expired = count(f"SELECT COUNT(*) FROM memories m WHERE m.expires_at IS NOT NULL AND m.expires_at <= %s{mine}",
                            now)[0][0]
            (size,) = conn.execute("SELECT pg_total_relation_size('memories') + pg_total_relation_size('memory_versions')"
                                   ).fetchone()
        return {"total": total, "by_kind": by_kind, "by_tag": by_tag, "stale": stale, "expired": expired,
                "storage_bytes": int(size)}

    def close(self) -> None:
        self.pool.close()


class PgVectorSearch:
    """Semantic search in PostgreSQL, in the shape of VectorIndex: the rows hold the vectors, so
    adding and removing are nothing to do here."""

    def __init__(self, store: PostgresStore, model: str):
        self.store, self.model = store, model

    def __len__(self) -> int:
        return self.store.count_vectors(self.model)

    def describe(self) -> str:
        return (f"pgvector HNSW (inner product) in {self.store.location}, {len(self)} vectors of "
                f"{self.store.vector_dimension(self.model)} dims")

    def add(self, record: Record, vector: np.ndarray) -> None:
        pass

    def remove(self, memory_id: str) -> None:
        pass

    def search(self, vector: np.ndarray, k: int, query: Query, now: int) -> list[tuple[str, float]]:
        return self.store.nearest(self.model, vector, k, query, now)
