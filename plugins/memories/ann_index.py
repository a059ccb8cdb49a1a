"""Approximate search for large stores: an HNSW graph (usearch) over the memories' vectors,
persisted beside the SQLite file.

Below `ann_threshold` embedded memories the exact in-memory matrix (vector_index.py) answers;
from there on, this index does. Chosen by measurement (scripts/bench_memories.py): usearch
keeps the graph and half-precision vectors in one file that loads in a second per million,
answers a query in well under a millisecond at recall@10 above 0.95, and supports removal;
hnswlib (last release 2023) needs a compiler here and has no half precision.

- Keys are 63 bits of BLAKE2b of the memory id (`vector_key`), stored in the `vkey` column, so a
  memory's vector can be removed by id and candidates found back in SQLite by key.
- Filters and TTL stay exact: the graph proposes candidates, SQLite keeps those that pass the
  query's filters (the same WHERE clause as keyword search), and their scores are the exact
  dot products of the stored float32 vectors. Too few pass: ask the graph for four times as
  many; past `MAX_CANDIDATES`, search the filtered rows exactly instead.
- Consistency: the index file records the newest `updated_at` it holds (its watermark). On open,
  the keys it holds are compared with the store's, and memories written after the watermark are
  re-added, so an index that lags the database (a kill -9 before it was saved) is repaired; one
  that cannot be read is rebuilt. Both log their progress. It is saved on stop and by Reindex.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import structlog

from .store import Query, Record, vector_key

log = structlog.get_logger("cortex.memories")

MAX_CANDIDATES = 4096
# usearch's multi-threaded add leaves a node or two unreachable in a small graph (measured with
# usearch 2.26.6: 40 vectors added by 2 threads, a search for all 40 misses one in 5 builds; by
# 1 thread, none in 200), so batches below this size are added by one thread
PARALLEL_ADD_FROM = 4096
PROGRESS_EVERY = 100_000


def index_path(db_path: Path, model: str) -> Path:
    return db_path.with_name(f"{db_path.stem}.{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}.usearch")


class AnnIndex:
    # on a million clustered 384-d vectors (scripts/bench_memories.py prints the sweep): recall@10
    # 0.945 at expansion_search 64, 0.999 at 256 with p99 2.9 ms; expansion_add 128 (not 64) is
    # what lifts recall there, for 1.4x the build time
    def __init__(self, store, model: str, dimension: int, connectivity: int = 16, expansion_add: int = 128,
                 expansion_search: int = 256):
        from usearch.index import Index  # imported only where an index this large is asked for

        self.store, self.model, self.dimension = store, model, dimension
        self.path = index_path(store.path, model)
        self.meta_path = self.path.with_suffix(".json")
        self._new = lambda: Index(ndim=dimension, metric="ip", dtype="f16", connectivity=connectivity,
                                  expansion_add=expansion_add, expansion_search=expansion_search)
        self.graph = self._new()
        self.watermark = 0  # the newest updated_at this index holds
        self._lock = threading.RLock()  # usearch: one writer, and no search while it writes

    def __len__(self) -> int:
        return len(self.graph)

    def describe(self) -> str:
        return f"approximate (HNSW, usearch, half precision), {len(self)} vectors of {self.dimension} dims, in {self.path.name}"

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, store, model: str, dimension: int, **options) -> AnnIndex:
        """The saved index, repaired to match the store; or one built from the store."""
        index = cls(store, model, dimension, **options)
        started = time.monotonic()
        try:
            meta = json.loads(index.meta_path.read_text())
            if meta.get("model") != model or meta.get("dimension") != dimension:
                raise ValueError(f"it indexes {meta.get('model')} ({meta.get('dimension')} dims)")
            index.graph.load(str(index.path))
            index.watermark = int(meta["watermark"])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if index.path.exists() or index.meta_path.exists():
                log.warning("memories.ann_unreadable", path=str(index.path), error=str(exc), action="rebuilding")
            index.graph = index._new()
            index.watermark = 0
        index.repair()
        log.info("memories.ann_ready", model=model, vectors=len(index), seconds=round(time.monotonic() - started, 2))
        return index

    @classmethod
    def discard(cls, store, model: str) -> None:
        """Remove the saved index of `model` (Reindex builds it anew)."""
        path = index_path(store.path, model)
        for file in (path, path.with_suffix(".json")):
            file.unlink(missing_ok=True)

    def repair(self) -> None:
        """Make the index hold exactly the store's vectors of this model: remove keys the store
        no longer has, add what it lacks or what changed after the watermark."""
        stored = self.store.vector_keys(self.model)  # (keys, updated_at)
        keys, updated = stored if len(stored[0]) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        held = np.asarray(self.graph.keys, dtype=np.int64) if len(self.graph) else np.zeros(0, np.int64)
        gone = np.setdiff1d(held, keys, assume_unique=True)
        wanted = np.union1d(np.setdiff1d(keys, held, assume_unique=True), keys[updated > self.watermark])
        if len(gone):
            with self._lock:
                self.graph.remove(gone)
        if not len(wanted):
            return
        log.info("memories.ann_repair", model=self.model, adding=len(wanted), removing=len(gone),
                 held=len(held), stored=len(keys))
        done = 0
        for batch_keys, vectors, newest in self.store.vectors_by_key(self.model, wanted):
            with self._lock:
                present = [k for k in batch_keys.tolist() if k in self.graph]
                if present:
                    self.graph.remove(present)
                threads = (os.cpu_count() or 1) if len(batch_keys) >= PARALLEL_ADD_FROM else 1
                self.graph.add(batch_keys, vectors, threads=threads)
            self.watermark = max(self.watermark, newest)
            done += len(batch_keys)
            if done % PROGRESS_EVERY < len(batch_keys) or done == len(wanted):
                log.info("memories.ann_progress", model=self.model, done=done, total=len(wanted))

    def save(self) -> None:
        """Write the index and its watermark (atomically: a kill -9 leaves the old pair or the new)."""
        with self._lock:
            tmp = self.path.with_suffix(".usearch.tmp")
            self.graph.save(str(tmp))
            os.replace(tmp, self.path)
            meta = {"model": self.model, "dimension": self.dimension, "watermark": self.watermark, "count": len(self)}
        self.meta_path.with_suffix(".tmp").write_text(json.dumps(meta))
        os.replace(self.meta_path.with_suffix(".tmp"), self.meta_path)

    # -- keeping in step ---------------------------------------------------------------------------
    def add(self, record: Record, vector: np.ndarray) -> None:
        key = vector_key(record.id)
        with self._lock:
            if key in self.graph:
                self.graph.remove(key)
            self.graph.add(key, np.asarray(vector, dtype=np.float32))
        self.watermark = max(self.watermark, record.updated_at)

    def remove(self, memory_id: str) -> None:
        key = vector_key(memory_id)
        with self._lock:
            if key in self.graph:
                self.graph.remove(key)

    # -- searching -----------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, query: Query, now: int) -> list[tuple[str, float]]:
        if k <= 0 or not len(self):
            return []
        vector = np.asarray(vector, dtype=np.float32)
        wanted = max(4 * k, 64)
        if wanted >= len(self.graph):  # asking the graph for every node: reading them is exact, and as cheap
            return _top(self.store.filtered_vectors(self.model, query, now), vector, k)
        while True:
            with self._lock:
                found = self.graph.search(vector, min(wanted, len(self.graph)))
            keys = np.asarray(found.keys, dtype=np.int64)
            passing = self.store.filtered_vectors_by_key(self.model, keys, query, now)
            if len(passing) >= k or wanted >= len(self.graph):
                return _top(passing, vector, k)
            if wanted >= MAX_CANDIDATES:  # a selective filter: search what passes it, exactly
                return _top(self.store.filtered_vectors(self.model, query, now), vector, k)
            wanted *= 4


def _top(rows: list[tuple[str, np.ndarray]], vector: np.ndarray, k: int) -> list[tuple[str, float]]:
    if not rows:
        return []
    scores = np.stack([v for _, v in rows]) @ vector
    order = np.argsort(-scores, kind="stable")[:k]
    return [(rows[i][0], float(scores[i])) for i in order]
