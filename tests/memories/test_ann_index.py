"""The approximate (HNSW) index for large stores: close to exact search, filters and TTL exact,
kept in step with writes, persisted, repaired after it lagged the database (a kill -9 before it
was saved), rebuilt when its file is unreadable; and switched to by the service past its
threshold, with the changes made during the build kept."""

from __future__ import annotations

import numpy as np
import pytest

from cortex.plugins.memories.ann_index import AnnIndex, index_path
from cortex.plugins.memories.service import content_hash, now_ms
from cortex.plugins.memories.store import Query, Record, SqliteStore
from cortex.plugins.memories.vector_index import VectorIndex

DIM, MODEL = 32, "bench-model"


def vectors(rng: np.random.Generator, n: int, centers: np.ndarray) -> np.ndarray:
    v = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def record(i: int, vector: np.ndarray, kind: str = "note", tags=(), expires_at=None, updated_at=None) -> Record:
    now = updated_at or now_ms()
    text = f"memory number {i}"
    return Record(f"m{i:05d}", kind, text, list(tags), {}, "test", now, now, expires_at, content_hash(kind, text, list(tags)),
                  MODEL, vector.astype(np.float32))


@pytest.fixture
def filled(tmp_path):
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((40, DIM)).astype(np.float32)
    store = SqliteStore(tmp_path / "memories.db", "NORMAL")
    data = vectors(rng, 3000, centers)
    for i, v in enumerate(data):
        store.insert(record(i, v, kind="fact" if i % 10 == 0 else "note", tags=["rare"] if i == 1234 else ()))
    yield store, data, rng, centers
    store.close()


def exact_top(data: np.ndarray, q: np.ndarray, k: int, allowed=None) -> list[str]:
    scores = data @ q
    order = [i for i in np.argsort(-scores) if allowed is None or allowed(i)]
    return [f"m{i:05d}" for i in order[:k]]


def test_close_to_exact_with_exact_scores_and_exact_filters(filled):
    store, data, rng, centers = filled
    ann = AnnIndex.open(store, MODEL, DIM)
    assert len(ann) == 3000 and index_path(store.path, MODEL).name == "memories.bench-model.usearch"
    queries = vectors(rng, 50, centers)
    hits = 0
    for q in queries:
        found = ann.search(q, 10, Query(), now_ms())
        hits += len({i for i, _ in found} & set(exact_top(data, q, 10)))
        for memory_id, score in found:  # the scores are the stored vectors' own dot products
            assert score == pytest.approx(float(data[int(memory_id[1:])] @ q), abs=1e-5)
    assert hits / 500 >= 0.95
    facts = ann.search(queries[0], 10, Query(kinds=["fact"]), now_ms())
    assert len(facts) == 10 and all(int(i[1:]) % 10 == 0 for i, _ in facts)
    # a filter only one memory passes: found all the same (the filtered rows are searched exactly)
    rare = ann.search(queries[1], 5, Query(tags_all=["rare"]), now_ms())
    assert [i for i, _ in rare] == ["m01234"]


def test_expired_memories_are_never_found(filled):
    store, data, _, _ = filled
    store.insert(record(5000, data[7], expires_at=now_ms() - 1))
    ann = AnnIndex.open(store, MODEL, DIM)
    found = [i for i, _ in ann.search(data[7], 3, Query(), now_ms())]
    assert "m05000" not in found and found[0] == "m00007"


def test_a_lagging_index_is_repaired_on_open(filled):
    store, data, rng, centers = filled
    ann = AnnIndex.open(store, MODEL, DIM)
    ann.save()
    # what happened after the save, before a kill -9: new memories, one deleted, one changed
    later = now_ms() + 10
    new = vectors(rng, 5, centers)
    for j, v in enumerate(new):
        store.insert(record(9000 + j, v, updated_at=later))
    store.delete("m00042")
    moved = record(43, -data[43], updated_at=later)
    store.replace(moved)
    again = AnnIndex.open(store, MODEL, DIM)
    assert len(again) == 3000 + 5 - 1
    assert again.search(new[2], 1, Query(), now_ms())[0][0] == "m09002"
    assert "m00042" not in {i for i, _ in again.search(data[42], 5, Query(), now_ms())}
    assert again.search(-data[43], 1, Query(), now_ms())[0][0] == "m00043"


def test_an_unreadable_index_is_rebuilt(filled, caplog):
    store, data, _, _ = filled
    AnnIndex.open(store, MODEL, DIM).save()
    index_path(store.path, MODEL).write_bytes(b"not an index")
    rebuilt = AnnIndex.open(store, MODEL, DIM)
    assert len(rebuilt) == 3000 and rebuilt.search(data[9], 1, Query(), now_ms())[0][0] == "m00009"


def test_the_service_switches_past_the_threshold_and_keeps_what_was_written_meanwhile(filled, tmp_path):
    import asyncio
    from types import SimpleNamespace

    from cortex.plugins.memories.service import MemoryServicer

    store, data, rng, centers = filled

    async def scenario():
        servicer = MemoryServicer(SimpleNamespace(store=store, ann_threshold=3001))
        servicer.index = VectorIndex(MODEL)
        for i, v in enumerate(data):
            servicer.index.add(record(i, v), v)
        late = vectors(rng, 3, centers)
        for j, v in enumerate(late):  # the 3001st starts the switch; the next two come during the build
            r = record(7000 + j, v)
            store.insert(r)
            servicer.index_add(r)
        assert servicer._switching is not None
        await servicer.switch_task
        found = servicer.index.search(late[2], 1, Query(), now_ms())
        servicer.close()
        return servicer.index, found

    index, found = asyncio.run(scenario())
    assert isinstance(index, AnnIndex) and len(index) == 3003 and found[0][0] == "m07002"
    assert index_path(store.path, MODEL).exists()  # saved on close


def test_reindex_rebuilds_the_saved_index_and_small_stores_stay_exact(filled):
    from types import SimpleNamespace

    from cortex.plugins.memories.service import MemoryServicer

    store, data, _, _ = filled
    stale = AnnIndex.open(store, MODEL, DIM)
    stale.remove("m00005")  # an index that no longer matches what Reindex will have written
    stale.save()
    servicer = MemoryServicer(SimpleNamespace(store=store, ann_threshold=100))
    rebuilt = servicer._load_index(MODEL, rebuild=True)
    assert isinstance(rebuilt, AnnIndex) and len(rebuilt) == 3000
    assert rebuilt.search(data[5], 1, Query(), now_ms())[0][0] == "m00005"
    exact = MemoryServicer(SimpleNamespace(store=store, ann_threshold=10_000))._load_index(MODEL)
    assert isinstance(exact, VectorIndex) and len(exact) == 3000
    servicer.close()


def test_a_small_repair_leaves_every_vector_reachable_in_the_graph(tmp_path):
    """usearch's multi-threaded add left one node of a 40-vector graph unreachable in about one
    build in five (a kill -9 test found it: an acknowledged memory missing from semantic search).
    Small batches are added by one thread, and a search that would ask the graph for every node
    reads the vectors instead."""
    rng = np.random.default_rng(5)
    for trial in range(25):
        store = SqliteStore(tmp_path / f"small{trial}.db", "OFF")
        data = vectors(rng, 40, rng.standard_normal((4, DIM)).astype(np.float32))
        for i, v in enumerate(data):
            store.insert(record(i, v))
        ann = AnnIndex.open(store, MODEL, DIM)
        held = set(np.asarray(ann.graph.search(data[0], 40).keys).tolist())
        assert len(held) == 40, f"build {trial}: {40 - len(held)} vector(s) unreachable"
        for i in (0, 17, 39):
            assert ann.search(data[i], 1, Query(), now_ms())[0][0] == f"m{i:05d}"
        store.close()
