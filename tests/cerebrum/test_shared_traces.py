"""Traces on PostgreSQL: a goal run through kernel A is a trace kernel B shows and replays (both
kernels' memories and traces in one database), and a memory changed through B makes A's replay
name the step it changed."""

from __future__ import annotations

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc

from ..conftest import cortex_env
from .test_cerebrum import GOAL, execute


def kernel(serve_process, channel_to, root, dsn):
    env = cortex_env(root, CORTEX_PLUGINS__DISABLED='["ollama", "openai", "a2a", "mcp", "http"]',
                     CORTEX_PLUGINS__MEMORIES__BACKEND="postgres", CORTEX_PLUGINS__CEREBRUM__BACKEND="postgres",
                     CORTEX_POSTGRES_DSN=dsn)
    channel = channel_to(serve_process(env=env).target)
    return cerebrum_pb2_grpc.CerebrumServiceStub(channel), memories_pb2_grpc.MemoryServiceStub(channel)


def test_a_trace_made_on_one_kernel_is_shown_and_replayed_on_another(serve_process, channel_to, postgres_dsn, tmp_path):
    brain_a, memories_a = kernel(serve_process, channel_to, tmp_path / "a", postgres_dsn)
    brain_b, memories_b = kernel(serve_process, channel_to, tmp_path / "b", postgres_dsn)
    for text in ("The garden project: raised beds go along the south fence.",
                 "Garden project budget is 300 euros for soil and seeds."):
        memories_a.Store(mem.StoreRequest(text=text, tags=["garden"]), timeout=60)
    _, summary = execute(brain_a, goal=GOAL)
    shown = brain_b.GetTrace(pb.GetTraceRequest(id=summary.trace_id), timeout=30).trace
    assert shown.summary == summary and shown == brain_a.GetTrace(pb.GetTraceRequest(id=summary.trace_id), timeout=30).trace
    assert summary.trace_id in [t.trace_id for t in brain_b.ListTraces(pb.ListTracesRequest(), timeout=30).traces]
    assert brain_b.Replay(pb.ReplayRequest(trace_id=summary.trace_id), timeout=120).status == "identical"
    budget = memories_b.Search(mem.SearchRequest(query="budget", mode=mem.SEARCH_MODE_KEYWORD, top_k=1), timeout=30)
    memories_b.Update(mem.UpdateRequest(id=budget.results[0].memory.id, text="Garden project budget is 500 euros.",
                                        update_mask={"paths": ["text"]}), timeout=60)
    changed = brain_a.Replay(pb.ReplayRequest(trace_id=summary.trace_id), timeout=120)
    assert (changed.status, changed.step_id) == ("diverged", "recall")


def test_traces_on_postgresql_are_each_callers_own(postgres_dsn):
    """The store itself: a trace is its namespaces' (and anyone's for admin, namespace None); one
    trace written twice is one row."""
    from cortex.plugins.cerebrum.pg_traces import PostgresTraceStore

    store = PostgresTraceStore(postgres_dsn)
    try:
        trace = pb.Trace(created_unix_ms=1, summary=pb.TraceSummary(answer="water the ferns", status="succeeded"))
        first = store.put(trace, "key:alice")
        assert store.put(pb.Trace(created_unix_ms=1, summary=pb.TraceSummary(answer="water the ferns", status="succeeded")),
                         "key:bob") == first
        assert store.get(first, "key:alice").summary.trace_id == first
        assert store.get(first, "key:carol") is None and store.get(first, None) is not None
        assert [t.id for t in store.recent(10, "key:bob")] == [first] and store.recent(10, "key:carol") == []
        assert len(store.recent(10, None)) == 1
    finally:
        store.close()


def test_a_postgres_setting_of_cerebrum_is_checked_at_start(start_kernel):
    _, kt = start_kernel('[plugins.cerebrum]\nbackend = "mysql"\n')
    assert 'use "sqlite" or "postgres"' in kt.kernel.host.records["cerebrum"].error
    _, kt = start_kernel('[plugins.cerebrum]\nbackend = "postgres"\npostgres_dsn = "postgresql://c:pw@db.example/c"\n')
    assert "beyond loopback" in kt.kernel.host.records["cerebrum"].error
