"""A replay compares what a plan read, not how it was found, and says what changed.

A recall that returns the same memories with the same content in the same order read the same
thing, though its keyword scores moved (BM25 is corpus-wide: editing any other memory moves them);
a replay that does diverge names the memories that changed, went or came, and how.
"""

from __future__ import annotations

import json

import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc
from cortex.contracts.models.v1 import models_pb2
from cortex.plugins.cerebrum import divergence

LOCAL = '[plugins]\ndisabled = ["ollama", "openai"]\n'
GOAL = "summarise what I noted about the garden project"
GARDEN = ("The garden project: raised beds go along the south fence.",
          "Garden project budget is 300 euros for soil and seeds.",
          "Garden project: tomatoes and beans to plant in the beds.")
# (no words that say a fact changed, "moved", "new", "raised"...: a Store would link them as restatements)
ELSEWHERE = ("Unrelated: the car needs winter tyres.",
             "Dentist appointment is on Thursday at nine.",
             "The library book is due back on the fifth.",
             "Passport renewal: bring two photos to the town hall.",
             "Boiler service is booked for October.")


@pytest.fixture
def brain(start_kernel, channel_to):
    """A kernel with more memories than the recall returns (top_k 5): garden ones and others."""
    target, _ = start_kernel(LOCAL)
    channel = channel_to(target)
    memories = memories_pb2_grpc.MemoryServiceStub(channel)
    ids = {}
    for text in GARDEN + ELSEWHERE:
        ids[text] = memories.Store(mem.StoreRequest(text=text, tags=["garden"] if "arden" in text else []), timeout=60).id
    return cerebrum_pb2_grpc.CerebrumServiceStub(channel), memories, ids


def run(stub) -> pb.Trace:
    events = list(stub.Execute(pb.ExecuteRequest(goal=GOAL), timeout=120))
    return stub.GetTrace(pb.GetTraceRequest(id=events[-1].summary.trace_id), timeout=30).trace


def recalled(stub, trace_id: str) -> list[dict]:
    """The recall step's results as the trace recorded them (memory and scores)."""
    trace = stub.GetTrace(pb.GetTraceRequest(id=trace_id), timeout=30).trace
    step = next(s for s in trace.steps if s.step_id == "recall")
    return json.loads(step.response_json)["results"]


def test_an_unrelated_edit_moves_keyword_scores_but_the_replay_is_identical(brain):
    stub, memories, ids = brain
    trace = run(stub)
    before = recalled(stub, trace.id)
    returned = [r["memory"]["id"] for r in before]
    unrelated = next(i for t, i in ids.items() if t in ELSEWHERE and i not in returned)
    # a longer memory changes the corpus' average length: every BM25 score moves
    memories.Update(mem.UpdateRequest(id=unrelated, text="Boiler service is booked for October; the engineer "
                                      "asked for the cupboard under the stairs to be cleared, and to leave the "
                                      "side door open in the morning.", update_mask={"paths": ["text"]}), timeout=60)
    replay = stub.Replay(pb.ReplayRequest(trace_id=trace.id), timeout=120)
    after = recalled(stub, replay.replay_trace_id)
    assert [r["memory"]["id"] for r in after] == returned  # the same memories, in the same order...
    assert [r["memory"]["text"] for r in after] == [r["memory"]["text"] for r in before]
    scores = [(r.get("keyword_score"), r.get("score")) for r in before]
    assert [(r.get("keyword_score"), r.get("score")) for r in after] != scores  # ...with other scores
    assert (replay.status, replay.reason) == ("identical", ""), replay.reason


def test_a_replay_names_a_returned_memory_whose_text_changed_and_how(brain):
    stub, memories, ids = brain
    trace = run(stub)
    budget = ids[GARDEN[1]]
    assert budget in [r["memory"]["id"] for r in recalled(stub, trace.id)]
    memories.Update(mem.UpdateRequest(id=budget, text="Garden project budget is 500 euros for soil and seeds.",
                                      update_mask={"paths": ["text"]}), timeout=60)
    replay = stub.Replay(pb.ReplayRequest(trace_id=trace.id), timeout=120)
    assert (replay.status, replay.step_id) == ("diverged", "recall")
    assert replay.reason.startswith("the memories it read changed: ")
    assert (f"memory {budget} 'Garden project budget is 300…' now has different text "
            f"('Garden project budget is 300…' → 'Garden project budget is 500…') "
            f"(version 1 → 2; `cortex memories history {budget}`)") in replay.reason
    assert "no longer returned" not in replay.reason and "new memory" not in replay.reason


def test_a_replay_names_a_memory_no_longer_returned_and_a_new_one(brain):
    stub, memories, ids = brain
    trace = run(stub)
    returned = [r["memory"]["id"] for r in recalled(stub, trace.id)]
    gone = ids[GARDEN[1]]
    memories.Delete(mem.DeleteRequest(id=gone), timeout=60)
    new = memories.Store(mem.StoreRequest(text="Garden project: the shed for the garden tools goes by the gate.",
                                          tags=["garden"]), timeout=60).id
    replay = stub.Replay(pb.ReplayRequest(trace_id=trace.id), timeout=120)
    now = [r["memory"]["id"] for r in recalled(stub, replay.replay_trace_id)]
    assert (replay.status, replay.step_id) == ("diverged", "recall")
    assert (f"memory {gone} 'Garden project budget is 300…' is no longer returned "
            f"(it was at position {returned.index(gone) + 1}; it was deleted, or has expired)") in replay.reason
    assert f"new memory {new} 'Garden project: the shed for…' returned at position {now.index(new) + 1}" in replay.reason
    # pushed out by two more: a memory still stored, as it was, is no longer among the top 5
    for text in ("Garden project: compost bins sit behind the garden shed.",
                 "Garden project: the garden hose reaches the far beds."):
        memories.Store(mem.StoreRequest(text=text, tags=["garden"]), timeout=60)
    replay = stub.Replay(pb.ReplayRequest(trace_id=trace.id), timeout=120)
    now = [r["memory"]["id"] for r in recalled(stub, replay.replay_trace_id)]
    pushed = [i for i in returned if i not in now and i != gone]
    assert pushed and f"memory {pushed[0]} " in replay.reason and "it is still stored, unchanged" in replay.reason
    assert replay.reason.endswith(" more differences") or replay.reason.endswith(" more difference")


def memory(memory_id: str, text: str, **fields) -> mem.Memory:
    return mem.Memory(id=memory_id, text=text, **fields)


def test_scores_and_indexing_are_not_what_a_step_read_but_content_is():
    found = mem.SearchResponse(mode=mem.SEARCH_MODE_HYBRID, embedding_model="a", results=[
        mem.SearchResult(memory=memory("m-1", "soil", embedding_model="a", dimension=3), score=0.9, keyword_score=2.1,
                         semantic_score=0.7, matched=[mem.SEARCH_MODE_KEYWORD])])
    moved = mem.SearchResponse(mode=mem.SEARCH_MODE_KEYWORD, results=[mem.SearchResult(memory=memory("m-1", "soil"), score=0.4)])
    edited = mem.SearchResponse(results=[mem.SearchResult(memory=memory("m-1", "seeds"), score=0.9)])
    assert divergence.without_unread(found) == divergence.without_unread(moved) != divergence.without_unread(edited)
    generated = models_pb2.GenerateResponse(text="300 euros", model="tiny", usage=models_pb2.Usage(prompt_tokens=3))
    assert divergence.without_unread(generated) == generated  # a generation's response is compared whole


def test_differences_say_what_changed_first_and_count_the_rest():
    before = [memory("m-1", "Garden budget is 300 euros.", tags=["garden"]), memory("m-2", "Beds by the fence."),
              memory("m-3", "Tomatoes and beans."), memory("m-4", "The car needs tyres.")]
    after = [memory("m-3", "Tomatoes and beans."), memory("m-2", "Beds by the fence."),
             memory("m-1", "Garden budget is 500 euros.", tags=["garden", "money"]), memory("m-9", "A shed.")]
    found = divergence.differences(before, after)
    assert [str(d) for d in found] == [
        "memory m-1 'Garden budget is 300 euros.' now has different text ('Garden budget is 300…' → "
        "'Garden budget is 500…') and other tags (garden → garden, money)",
        "memory m-4 'The car needs tyres.' is no longer returned (it was at position 4)",
        "new memory m-9 'A shed.' returned at position 4",
        "order changed: m-1 and m-3 swapped",
    ]
    assert divergence.worded(found).endswith("returned at position 4; and 1 more difference")
    rotated = divergence.differences(before, [*before[1:3], before[0], before[3]])
    assert [str(d) for d in rotated] == ["order changed: m-1, m-2, m-3 → m-2, m-3, m-1"]
