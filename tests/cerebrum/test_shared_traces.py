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
