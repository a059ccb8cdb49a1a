"""Namespaces are walls for the store's upkeep too: Reindex {all} re-embeds every namespace, so
only admin may ask it; a key's (or local's) Reindex embeds its own stale memories and counts only
them; Stats counts only the caller's namespaces and says nothing of the whole store's size."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc

from ..conftest import admin_token, bearer, callers

WITHOUT_EMBEDDINGS = '[plugins]\ndisabled = ["ollama", "openai", "mlx", "cerebrum", "a2a", "mcp", "http"]\n'
WITH_EMBEDDINGS = '[plugins]\ndisabled = ["ollama", "openai", "cerebrum", "a2a", "mcp", "http"]\n'


@pytest.fixture
def stale(start_kernel, channel_to, data_dir):
    """A store whose memories (alice's two, bob's one, the owner's one) were kept without vectors
    (no embedding provider), then a kernel with one: (stub, {who: call metadata})."""
    target, first = start_kernel(WITHOUT_EMBEDDINGS, governance=True)
    who = callers(target, data_dir, "alice", "bob")
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(target, as_admin=False))
    for text, name in (("Alice's locker code is 4711.", "alice"), ("Alice's bike is the red one.", "alice"),
                       ("Bob's locker code is 0815.", "bob"), ("The owner's boat is moored at pier 3.", "admin")):
        stub.Store(pb.StoreRequest(text=text), timeout=60, metadata=who[name])
    first.stop()
    target, _ = start_kernel(WITH_EMBEDDINGS, governance=True)
    who["admin"] = bearer(admin_token(target))  # (the same data dir: the same token)
    return memories_pb2_grpc.MemoryServiceStub(channel_to(target, as_admin=False)), who


def test_reindex_all_is_admins_and_a_keys_reindex_is_its_own(stale):
    stub, who = stale
    for name in ("alice", "local"):
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Reindex(pb.ReindexRequest(all=True), timeout=60, metadata=who[name]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "every namespace" in err.value.details() and "admin" in err.value.details()
    # once the store has an embedding model (a memory embedded since), a key embeds its own stale ones
    stub.Store(pb.StoreRequest(text="Alice's garden gate sticks in the rain."), timeout=60, metadata=who["alice"])
    progress = list(stub.Reindex(pb.ReindexRequest(), timeout=60, metadata=who["alice"]))
    assert (progress[-1].done, progress[-1].total) == (2, 2)
    assert stub.Stats(pb.StatsRequest(), timeout=30, metadata=who["alice"]).stale == 0
    assert stub.Stats(pb.StatsRequest(), timeout=30, metadata=who["bob"]).stale == 1  # bob's are bob's to embed
    found = stub.Search(pb.SearchRequest(query="locker code", mode=pb.SEARCH_MODE_SEMANTIC, top_k=5), timeout=60,
                        metadata=who["alice"])
    assert "Alice's locker code is 4711." in [r.memory.text for r in found.results]
    # admin moves every namespace
    done = list(stub.Reindex(pb.ReindexRequest(all=True), timeout=60, metadata=who["admin"]))
    assert done[-1].total == 5
    assert stub.Stats(pb.StatsRequest(), timeout=30, metadata=who["bob"]).stale == 0


def test_a_model_change_is_admins_to_make(stale):
    """Before anything is embedded with the current model, Reindex would move the whole store to
    it: admin's to do, not a key's."""
    stub, who = stale
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Reindex(pb.ReindexRequest(), timeout=60, metadata=who["bob"]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "admin" in err.value.details()
    assert stub.Stats(pb.StatsRequest(), timeout=30, metadata=who["alice"]).stale == 2


def test_stats_are_the_callers_namespace_only(stale):
    stub, who = stale
    mine = stub.Stats(pb.StatsRequest(), timeout=30, metadata=who["alice"])
    assert (mine.total, mine.stale, mine.storage_bytes) == (2, 2, 0)  # the file's size is everyone's
    stub.Store(pb.StoreRequest(text="Alice's garden gate sticks in the rain."), timeout=60, metadata=who["alice"])
    assert "vectors" not in stub.Stats(pb.StatsRequest(), timeout=30, metadata=who["alice"]).index
    everything = stub.Stats(pb.StatsRequest(namespaces=["*"]), timeout=30, metadata=who["admin"])
    assert everything.total == 5 and everything.storage_bytes > 0 and "1 vectors" in everything.index
