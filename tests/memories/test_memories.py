"""MemoryService through the kernel's gRPC API, with embeddings from the mlx provider."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc

from .conftest import with_backend

CONFIG = '[plugins]\ndisabled = ["ollama", "openai"]\n'
SEMANTIC, KEYWORD, HYBRID = pb.SEARCH_MODE_SEMANTIC, pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_HYBRID


@pytest.fixture
def memories(start_kernel, channel_to, backend):
    def start(config: str = CONFIG, **kw):
        target, kt = start_kernel(with_backend(config, backend), **kw)
        return memories_pb2_grpc.MemoryServiceStub(channel_to(target)), kt

    return start


def store(stub, text, **kw):
    return stub.Store(pb.StoreRequest(text=text, **kw), timeout=60)


def ids(reply):
    return [r.memory.id for r in reply.results]


def test_store_get_and_idempotent_store(memories):
    stub, _ = memories()
    first = store(
        stub, "The dentist moved my appointment to Thursday", kind="event", tags=["health"], metadata={"who": "me"}, source="test"
    )
    assert first.created and first.id.startswith("m")
    memory = stub.Get(pb.GetRequest(id=first.id), timeout=5).memory
    assert (memory.text, memory.kind, list(memory.tags), dict(memory.metadata), memory.source) == (
        "The dentist moved my appointment to Thursday", "event", ["health"], {"who": "me"}, "test")
    assert memory.embedding_model == "all-MiniLM-L6-v2" and memory.dimension == 384 and len(memory.content_hash) == 64
    again = store(stub, "The dentist moved my appointment to Thursday", kind="event", tags=["health"])
    assert not again.created and again.id == first.id
    assert store(stub, "The dentist moved my appointment to Thursday", kind="note", tags=["health"]).created


def test_concurrent_identical_stores_make_one_memory(memories):
    """20 clients store one text at once: one memory, every caller told its id, nothing counted
    against the provider (the UNIQUE content hash once surfaced as INTERNAL and opened the circuit)."""
    from concurrent.futures import ThreadPoolExecutor

    stub, kt = memories()
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: store(stub, "Everyone says the same thing at once"), range(20)))
    assert len({r.id for r in replies}) == 1 and sum(r.created for r in replies) == 1
    provider = next(p for p in kt.kernel.registry.all_providers() if p.name == "memories")
    assert provider.failures == 0 and provider.calls == 20
    listed = stub.List(pb.ListRequest(page_size=50), timeout=10)
    assert [m.text for m in listed.memories] == ["Everyone says the same thing at once"]


def test_three_search_modes_and_what_matched(memories):
    stub, _ = memories()
    dentist = store(stub, "The dentist moved my appointment to Thursday afternoon", tags=["health"]).id
    milk = store(stub, "Buy oat milk and coffee beans on the way home", tags=["shopping"]).id
    store(stub, "The kernel serves gRPC health checks and reflection", kind="fact")
    semantic = stub.Search(pb.SearchRequest(query="when do I see the tooth doctor", mode=SEMANTIC, top_k=1), timeout=60)
    assert ids(semantic) == [dentist] and semantic.results[0].matched == [SEMANTIC]
    assert 0 < semantic.results[0].score <= 1 and semantic.embedding_model == "all-MiniLM-L6-v2"
    keyword = stub.Search(pb.SearchRequest(query="coffee", mode=KEYWORD, top_k=5), timeout=60)
    assert ids(keyword) == [milk] and keyword.results[0].matched == [KEYWORD]
    hybrid = stub.Search(pb.SearchRequest(query="groceries: milk", top_k=3), timeout=60)
    assert hybrid.mode == HYBRID and ids(hybrid)[0] == milk
    assert set(hybrid.results[0].matched) == {SEMANTIC, KEYWORD}
    assert stub.Search(pb.SearchRequest(query="milk", mode=KEYWORD, top_k=5, min_score=100), timeout=60).results == []


def test_filters(memories, monkeypatch):
    import itertools

    from cortex.plugins.memories import service

    ticks = itertools.count(service.now_ms(), 1_000)  # each look at the clock, a second later
    monkeypatch.setattr(service, "now_ms", lambda: next(ticks))
    stub, _ = memories()
    stored_a = store(stub, "Call mom about the trip", kind="task", tags=["family", "travel"], metadata={"prio": "high"})
    a = stored_a.id
    middle = Timestamp()
    middle.FromMilliseconds(stored_a.memory.created_at.ToMilliseconds() + 1)  # after a, before b
    b = store(stub, "Book the train for the trip", kind="task", tags=["travel"], metadata={"prio": "low"}).id
    c = store(stub, "The trip is in May", kind="fact", tags=["travel"]).id

    def found(**f):
        reply = stub.Search(pb.SearchRequest(query="trip", mode=HYBRID, top_k=10, filter=pb.Filter(**f)), timeout=60)
        return set(ids(reply))

    assert found() == {a, b, c}
    assert found(kinds=["task"]) == {a, b}
    assert found(exclude_kinds=["task"]) == {c}
    for mode in (SEMANTIC, KEYWORD):  # each index applies it on its own
        reply = stub.Search(pb.SearchRequest(query="trip", mode=mode, top_k=10, filter=pb.Filter(exclude_kinds=["fact"])), timeout=60)
        assert set(ids(reply)) == {a, b}
    assert found(tags_all=["family", "travel"]) == {a}
    assert found(tags_any=["family", "nope"]) == {a}
    assert found(metadata={"prio": "low"}) == {b}
    assert found(created_after=middle) == {b, c}
    assert found(created_before=middle) == {a}
    semantic = stub.Search(pb.SearchRequest(query="trip", mode=SEMANTIC, top_k=10, filter=pb.Filter(tags_all=["family"])), timeout=60)
    assert ids(semantic) == [a]


def test_update_with_a_mask_and_delete(memories):
    stub, _ = memories()
    memory_id = store(stub, "Meeting at 10", tags=["work"]).id
    updated = stub.Update(
        pb.UpdateRequest(id=memory_id, text="Meeting moved to 11", tags=["ignored"], update_mask={"paths": ["text"]}), timeout=60
    ).memory
    assert (updated.text, list(updated.tags)) == ("Meeting moved to 11", ["work"])
    assert stub.Search(pb.SearchRequest(query="moved", mode=KEYWORD, top_k=3), timeout=60).results[0].memory.id == memory_id
    assert stub.Search(pb.SearchRequest(query="10", mode=KEYWORD, top_k=3), timeout=60).results == []
    other = store(stub, "Lunch with Ana", tags=["work"]).id
    with pytest.raises(grpc.RpcError) as err:
        stub.Update(pb.UpdateRequest(id=other, text="Meeting moved to 11", update_mask={"paths": ["text"]}), timeout=60)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert stub.Delete(pb.DeleteRequest(id=memory_id), timeout=5).deleted
    assert not stub.Delete(pb.DeleteRequest(id=memory_id), timeout=5).deleted
    with pytest.raises(grpc.RpcError) as err:
        stub.Get(pb.GetRequest(id=memory_id), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert memory_id not in ids(stub.Search(pb.SearchRequest(query="meeting moved", mode=SEMANTIC, top_k=5), timeout=60))


def test_update_each_field_and_refuse_what_cannot_be(memories):
    stub, _ = memories()
    memory_id = store(stub, "Dentist on Tuesday", tags=["health"]).id
    changed = stub.Update(pb.UpdateRequest(
        id=memory_id, kind="event", tags=["health", "teeth"], metadata={"where": "clinic"}, source="calendar", ttl_seconds=3600,
        update_mask={"paths": ["kind", "tags", "metadata", "source", "ttl_seconds"]}), timeout=60).memory
    assert (changed.kind, list(changed.tags), dict(changed.metadata), changed.source) == (
        "event", ["health", "teeth"], {"where": "clinic"}, "calendar")
    assert changed.expires_at.seconds > 0 and changed.text == "Dentist on Tuesday"
    # no mask: the fields that are set are the ones to change
    assert stub.Update(pb.UpdateRequest(id=memory_id, source="phone"), timeout=60).memory.source == "phone"
    for request, words in [
        (pb.UpdateRequest(id=memory_id, update_mask={"paths": ["colour"]}), "unknown path(s) colour"),
        (pb.UpdateRequest(id=memory_id), "nothing to update"),
        (pb.UpdateRequest(id=memory_id, kind="poem", update_mask={"paths": ["kind"]}), "unknown kind 'poem'"),
        (pb.UpdateRequest(id=memory_id, ttl_seconds=10**12, update_mask={"paths": ["ttl_seconds"]}),
         "the limit is 3153600000 (uint64.lte)"),
        (pb.UpdateRequest(id="m-none", text="x", update_mask={"paths": ["text"]}), "no memory 'm-none'"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Update(request, timeout=60)
        assert words in err.value.details(), err.value.details()
    assert stub.Get(pb.GetRequest(id=memory_id), timeout=5).memory.kind == "event"  # nothing refused was stored


def test_list_pages_with_a_cursor(memories):
    stub, _ = memories()
    stored = [store(stub, f"note number {i}", tags=["n"]).id for i in range(7)]
    seen, token = [], ""
    while True:
        page = stub.List(pb.ListRequest(page_size=3, page_token=token, filter=pb.Filter(tags_all=["n"])), timeout=5)
        seen += [m.id for m in page.memories]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(stored))
    first = stub.List(pb.ListRequest(page_size=3, filter=pb.Filter(tags_all=["n"])), timeout=5)
    for token, message in [
        (first.next_page_token, "belongs to a List with another filter"),
        ("bm90IGEgdG9rZW4gYXQgYWxs", "was not made by this store"),
        ("%%%", "was not made by this store"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.List(pb.ListRequest(page_size=3, page_token=token), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()


def test_stats(memories, backend):
    stub, _ = memories()
    store(stub, "a", kind="fact", tags=["x", "y"])
    store(stub, "b", tags=["x"])
    stats = stub.Stats(pb.StatsRequest(), timeout=30)
    assert stats.total == 2 and dict(stats.by_kind) == {"fact": 1, "note": 1} and dict(stats.by_tag) == {"x": 2, "y": 1}
    assert stats.storage_bytes > 0 and stats.stale == 0 and stats.schema_version == (1 if backend else 6)
    assert stats.embedding_model == "all-MiniLM-L6-v2" and "2 vectors of 384 dims" in stats.index


def test_expired_memories_never_come_back(memories, monkeypatch):
    from cortex.plugins.memories import service

    stub, kt = memories()
    short = store(stub, "the wifi password is hunter2", ttl_seconds=1).id
    store(stub, "the wifi router is in the hall")
    real_now = service.now_ms
    monkeypatch.setattr(service, "now_ms", lambda: real_now() + 1_200)  # 1.2 s later, without waiting
    with pytest.raises(grpc.RpcError):
        stub.Get(pb.GetRequest(id=short), timeout=5)
    for mode in (SEMANTIC, KEYWORD, HYBRID):
        assert short not in ids(stub.Search(pb.SearchRequest(query="wifi password", mode=mode, top_k=5), timeout=60))
    assert short not in [m.id for m in stub.List(pb.ListRequest(), timeout=5).memories]
    assert stub.Stats(pb.StatsRequest(), timeout=5).total == 1
    again = store(stub, "the wifi password is hunter2")
    assert again.created and not again.memory.HasField("expires_at")
    kt.run(kt.kernel.refresh_health())  # the sweeper drops expired rows for good


def test_memories_persist_across_a_restart(start_kernel, channel_to, backend):
    first_target, first = start_kernel(with_backend(CONFIG, backend))
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(first_target))
    memory_id = store(stub, "My passport expires in 2031", kind="fact").id
    first.stop()
    second_target, _ = start_kernel(with_backend(CONFIG, backend))
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(second_target))
    assert stub.Get(pb.GetRequest(id=memory_id), timeout=5).memory.text == "My passport expires in 2031"
    found = stub.Search(pb.SearchRequest(query="travel document validity", mode=SEMANTIC, top_k=1), timeout=60)
    assert ids(found) == [memory_id]


def test_without_an_embedding_provider_memories_are_kept_and_reindexed_later(start_kernel, channel_to, backend):
    target, kt = start_kernel(with_backend('[plugins]\ndisabled = ["ollama", "openai", "mlx"]\n', backend))
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    memory_id = store(stub, "Water the fern every Sunday").id
    assert store(stub, "Water the fern every Sunday").id == memory_id
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(pb.SearchRequest(query="plants", mode=SEMANTIC, top_k=3), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    hybrid = stub.Search(pb.SearchRequest(query="fern", top_k=3), timeout=30)
    assert hybrid.mode == KEYWORD and ids(hybrid) == [memory_id]
    kt.stop()
    target, _ = start_kernel(with_backend(CONFIG, backend))
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    assert stub.Stats(pb.StatsRequest(), timeout=30).stale == 1
    progress = list(stub.Reindex(pb.ReindexRequest(), timeout=60))
    assert (progress[-1].done, progress[-1].total, progress[-1].embedding_model) == (1, 1, "all-MiniLM-L6-v2")
    assert stub.Stats(pb.StatsRequest(), timeout=30).stale == 0
    assert ids(stub.Search(pb.SearchRequest(query="houseplant care", mode=SEMANTIC, top_k=1), timeout=60)) == [memory_id]


@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [
        ("Store", pb.StoreRequest(text="   "), "text is empty"),
        ("Store", pb.StoreRequest(text="x" * 32_001), "text is 32001 characters; the limit is 32000"),
        ("Store", pb.StoreRequest(text="x", kind="poem"), "unknown kind 'poem'; use one of note, fact, event"),
        ("Store", pb.StoreRequest(text="x", tags=[""]), "tags: at most 32"),
        ("Search", pb.SearchRequest(query="x", top_k=0), "top_k is 0; ask for 1 to 100"),
        ("Search", pb.SearchRequest(query="x", top_k=10**6), "top_k is 1000000"),
        ("Search", pb.SearchRequest(query="", top_k=3), "query is empty"),
        ("Search", pb.SearchRequest(query="x", top_k=3, filter=pb.Filter(kinds=["poem"])), "unknown kind 'poem'"),
        ("Search", pb.SearchRequest(query="x", top_k=3, filter=pb.Filter(created_after={"seconds": 10}, created_before={"seconds": 5})),
         "created_after must be before created_before"),
        ("Search", pb.SearchRequest(query="x", top_k=3, mode=9), "unknown mode 9"),
        ("List", pb.ListRequest(page_size=10_000), "page_size is 10000"),
        ("Update", pb.UpdateRequest(id="m1", update_mask={"paths": ["owner"]}), "unknown path(s) owner"),
    ],
)
def test_bad_input_is_refused_and_nothing_stored_changes(memories, method, request_, message):
    stub, _ = memories()
    kept = store(stub, "keep me", tags=["safe"]).memory
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, method)(request_, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert stub.Stats(pb.StatsRequest(), timeout=30).total == 1
    assert stub.Get(pb.GetRequest(id=kept.id), timeout=5).memory == kept


def test_hostile_query_text_is_just_words(memories):
    stub, _ = memories()
    memory_id = store(stub, "quotes \" and NEAR( stars * and -minus").id
    for query in ['"unbalanced', "NEAR(a b", "* OR -", "DROP TABLE memories; --", "a:b AND"]:
        reply = stub.Search(pb.SearchRequest(query=query, mode=KEYWORD, top_k=3), timeout=30)
        assert all(r.memory.id == memory_id for r in reply.results)
    assert stub.Stats(pb.StatsRequest(), timeout=30).total == 1


def test_a_burst_of_bad_requests_leaves_the_service_up_for_others(memories):
    """Out-of-range input is the client's error: it never opens the provider's circuit (it once
    came back INTERNAL, and three such calls took memories away from everyone for 30 s)."""
    stub, kt = memories()
    far = Timestamp(seconds=2**63 - 1)
    bad = [
        lambda: stub.Store(pb.StoreRequest(text="x", ttl_seconds=10**12), timeout=10),
        lambda: stub.Search(pb.SearchRequest(query="x", top_k=1, filter=pb.Filter(tags_all=[f"t{i}" for i in range(1000)])), timeout=10),
        lambda: stub.Search(pb.SearchRequest(query="x", top_k=1, filter=pb.Filter(created_after=far)), timeout=10),
        lambda: stub.List(pb.ListRequest(filter=pb.Filter(metadata={f"k{i}": "v" for i in range(100)})), timeout=10),
    ]
    for _ in range(3):
        for call in bad:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert kt.kernel.registry.breaker("memories").state.value == "closed"
    assert store(stub, "another client's note").created
