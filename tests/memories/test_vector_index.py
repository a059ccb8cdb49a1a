"""The in-memory vector index against a brute-force reference: after adds, replacements, removals
and growth past its first capacity, every filtered top-k equals sorting all live vectors by cosine."""

from __future__ import annotations

import numpy as np
import pytest

from cortex.plugins.memories.store import Query, Record
from cortex.plugins.memories.vector_index import VectorIndex


def record(i: int, kind: str, expires_at: int | None = None, tags: tuple[str, ...] = ()) -> Record:
    return Record(id=f"m{i}", kind=kind, text=f"t{i}", tags=list(tags), metadata={}, source="", created_at=1_000 + i,
                  updated_at=1_000 + i, expires_at=expires_at, content_hash=f"h{i}")


def unit(rng, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_index_agrees_with_brute_force():
    rng = np.random.default_rng(7)
    index = VectorIndex("test", capacity=4)  # grows several times
    vectors = unit(rng, 40, 16)
    live = {}
    for i, v in enumerate(vectors):
        r = record(i, "note" if i % 3 else "task", expires_at=500 if i % 7 == 0 else None, tags=("a",) if i % 2 else ())
        index.add(r, v)
        live[r.id] = (r, v)
    for i in (3, 4, 5, 39):  # removals, the last row among them
        index.remove(f"m{i}")
        live.pop(f"m{i}")
    index.remove("m3")  # twice: nothing happens
    replaced = unit(rng, 1, 16)[0]
    index.add(record(10, "task"), replaced)  # the same id again: replaced, not duplicated
    live["m10"] = (record(10, "task"), replaced)
    assert len(index) == len(live)
    question = unit(rng, 1, 16)[0]
    for query in (Query(), Query(kinds=["task"]), Query(exclude_kinds=["task"]), Query(tags_all=["a"]),
                  Query(created_after=1_010, created_before=1_030)):
        expected = sorted(
            ((rid, float(v @ question)) for rid, (r, v) in live.items()
             if query.matches(r) and (r.expires_at is None or r.expires_at > 1_000)),
            key=lambda item: -item[1],
        )[:5]
        got = index.search(question, 5, query, now=1_000)
        assert [i for i, _ in got] == [i for i, _ in expected], query
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert index.search(question, 0, Query(), now=1_000) == []


def test_a_vector_of_another_size_is_refused():
    index = VectorIndex("test")
    index.add(record(1, "note"), np.ones(4, dtype=np.float32) / 2)
    with pytest.raises(ValueError, match="a 3-dim vector in a 4-dim index of test"):
        index.add(record(2, "note"), np.ones(3, dtype=np.float32))
