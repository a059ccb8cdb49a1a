#!/usr/bin/env python3
"""Memory store throughput and search latency at 10k and 100k memories (384-d vectors), in one run:

- store: acknowledged Store writes per second into the SQLite store (synchronous=FULL and NORMAL);
- semantic search p50/p99: the exact in-memory matrix this project uses, next to sqlite-vec's
  exact vec0 KNN in the same run when `sqlite-vec` and `apsw` are installed
  (`pip install sqlite-vec apsw`), with recall@10 of each against brute-force numpy;
- keyword search (FTS5) p50/p99.

    python scripts/bench_memories.py [--sizes 10000 100000] [--queries 200]

Vectors are random unit vectors (the timing does not depend on the model); texts are 24 words
drawn by a Zipf law from a 20,000-word vocabulary, queries 3 words from the same law. Target
(issue #4): search p99 under 50 ms at 100k memories.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cortex.plugins.memories.service import content_hash, new_id, now_ms
from cortex.plugins.memories.store import COLUMNS, Query, Record, SqliteStore
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
            f"INSERT INTO memories ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.id, r.kind, r.text, json.dumps(r.tags), "{}", r.source, r.created_at, r.updated_at, None,
              r.content_hash, r.embedding_model, r.embedding.tobytes()) for r in records],
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
    opts = parser.parse_args()
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="cortex-bench-mem-"))

    for sync in ("FULL", "NORMAL"):
        store = SqliteStore(folder / f"writes-{sync}.db", sync)
        vectors = unit(rng, opts.writes)
        started = time.perf_counter()
        for i in range(opts.writes):
            store.insert(record(rng, i, vectors[i]))
        rate = opts.writes / (time.perf_counter() - started)
        print(f"store (synchronous={sync}): {rate:8.0f} acknowledged writes/s")
        store.close()

    for size in opts.sizes:
        print(f"\n{size:,} memories")
        vectors = unit(rng, size)
        records = [record(rng, i, vectors[i]) for i in range(size)]
        store = SqliteStore(folder / f"search-{size}.db", "NORMAL")
        started = time.perf_counter()
        bulk_fill(store, records)
        index = VectorIndex("bench-model")
        for r in store.vectors("bench-model", now_ms()):
            index.add(r, r.embedding)
        print(f"  load: store filled and index built in {time.perf_counter() - started:.1f}s")
        queries = unit(rng, opts.queries)
        exact = [set(np.argsort(-(vectors @ q))[:10].tolist()) for q in queries]
        position = {r.id: i for i, r in enumerate(records)}
        everything = Query()

        samples, hits = [], 0
        for q, truth in zip(queries, exact, strict=True):
            t0 = time.perf_counter()
            found = index.search(q, 10, everything, now_ms())
            samples.append(time.perf_counter() - t0)
            hits += len({position[i] for i, _ in found} & truth)
        print(f"  semantic, exact in-memory matrix: p50 {pct(samples, .5):6.2f} ms  p99 {pct(samples, .99):6.2f} ms  "
              f"recall@10 {hits / (10 * len(queries)):.3f}")
        ours_p99 = pct(samples, .99)

        vec = sqlite_vec_index(vectors)
        if vec is None:
            print("  sqlite-vec: not installed (pip install sqlite-vec apsw) - no comparison")
        else:
            samples, hits = [], 0
            for q, truth in zip(queries, exact, strict=True):
                t0 = time.perf_counter()
                found = vec(q, 10)
                samples.append(time.perf_counter() - t0)
                hits += len(set(found) & truth)
            print(f"  semantic, sqlite-vec vec0 (exact): p50 {pct(samples, .5):6.2f} ms  p99 {pct(samples, .99):6.2f} ms  "
                  f"recall@10 {hits / (10 * len(queries)):.3f}  (ratio p99 in-memory/sqlite-vec {ours_p99 / pct(samples, .99):.2f})")

        samples, both = [], []
        for q in queries:
            text = " ".join(words(rng, 3))
            t0 = time.perf_counter()
            store.keyword(text, everything, now_ms(), 40)
            t1 = time.perf_counter()
            index.search(q, 40, everything, now_ms())
            samples.append(t1 - t0)
            both.append(time.perf_counter() - t0)
        print(f"  keyword, FTS5 BM25 (top 40):      p50 {pct(samples, .5):6.2f} ms  p99 {pct(samples, .99):6.2f} ms")
        print(f"  hybrid (both, before fusion):     p50 {pct(both, .5):6.2f} ms  p99 {pct(both, .99):6.2f} ms")
        hybrid_p99 = pct(both, .99)
        print(f"  target p99 < 50 ms: semantic {'met' if ours_p99 < 50 else 'MISSED'}, "
              f"keyword+semantic {'met' if hybrid_p99 < 50 else 'MISSED'}")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
