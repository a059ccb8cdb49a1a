"""Namespaces are walls for Cerebrum's taught plans: a learning-example names a trace by id, and
Plan (and Execute of a goal) reuses that trace only when it is the caller's own, as GetTrace would
show it; a learning-example pointing at another namespace's trace is ignored."""

from __future__ import annotations

import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc

from ..conftest import callers

CONFIG = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp", "http"]\n'
GOAL = "summarise what I noted about the garden project"
SECRET_STEP = '{"query": "alice private diary entry", "top_k": 3}'


@pytest.fixture
def brain(start_kernel, channel_to, data_dir):
    target, _ = start_kernel(CONFIG, governance=True)
    who = callers(target, data_dir, "alice", "bob")
    channel = channel_to(target, as_admin=False)
    return cerebrum_pb2_grpc.CerebrumServiceStub(channel), memories_pb2_grpc.MemoryServiceStub(channel), who


def alices_trace(stub, who) -> str:
    plan = pb.Plan(goal=GOAL, steps=[pb.Step(id="recall", method="cortex.memories.v1.MemoryService/Search",
                                             request_json=SECRET_STEP)])
    events = list(stub.Execute(pb.ExecuteRequest(plan=plan), timeout=120, metadata=who["alice"]))
    assert events[-1].summary.status == "succeeded"
    return events[-1].summary.trace_id


def test_a_learning_example_naming_anothers_trace_is_not_reused(brain):
    stub, memories, who = brain
    trace_id = alices_trace(stub, who)
    # bob keeps a learning-example of his own that names alice's trace
    forged = memories.Store(mem.StoreRequest(text=GOAL, kind="learning-example", metadata={"trace_id": trace_id}),
                            timeout=60, metadata=who["bob"])
    planned = stub.Plan(pb.PlanRequest(goal=GOAL), timeout=120, metadata=who["bob"])
    assert planned.plan.source != f"example:{forged.id}"
    assert all(s.request_json != SECRET_STEP for s in planned.plan.steps)
    ran = list(stub.Execute(pb.ExecuteRequest(goal=GOAL), timeout=120, metadata=who["bob"]))
    assert all(SECRET_STEP not in e.step.request_json for e in ran if e.HasField("step"))
    # alice's own example is hers to reuse, as admin may reuse any
    taught = stub.Teach(pb.TeachRequest(trace_id=trace_id), timeout=60, metadata=who["alice"])
    mine = stub.Plan(pb.PlanRequest(goal=GOAL), timeout=120, metadata=who["alice"])
    assert mine.plan.source == f"example:{taught.memory_id}" and mine.plan.steps[0].request_json == SECRET_STEP
    owners = memories.Store(mem.StoreRequest(text=GOAL, kind="learning-example", metadata={"trace_id": trace_id}),
                            timeout=60, metadata=who["admin"])
    assert stub.Plan(pb.PlanRequest(goal=GOAL), timeout=120, metadata=who["admin"]).plan.source == f"example:{owners.id}"
