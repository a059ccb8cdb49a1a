"""A written answer with a model configured: an OpenAI-compatible server in a process of its own
(scripted completions, every request recorded), configured as remote (`local = false`). A plain
question costs one model call; the answer cites the memories it rests on as [n]; a question no
memory answers is declined; a replaced fact is marked as such in what the model is shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc

from ..models.fake_servers import scripted_openai

SCRIPT = [
    {"when": "Question: What is the garden budget?", "cite": "300 euros", "reply": "The garden budget is 300 euros [{n}]. [9]"},
    {"when": "Question: When is the dentist?", "cite": "Thursday", "reply": "On Thursday at 15:00 [{n}]."},
]


@pytest.fixture
def scripted_server(tmp_path):
    with scripted_openai(tmp_path, SCRIPT) as server:
        yield server


def chats(record: Path) -> list[dict]:
    lines = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    return [r["body"] for r in lines if r["path"] == "/v1/chat/completions"]


def test_a_written_answer_costs_one_call_cites_what_it_rests_on_and_says_when_it_does_not_know(
        start_kernel, channel_to, scripted_server, monkeypatch):
    base_url, record = scripted_server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    target, _ = start_kernel(f"""
[plugins]
disabled = ["ollama"]
[plugins.openai]
base_url = "{base_url}"
model = "scripted-gpt"
local = false
[hybrid]
mlx_first = false
[routing."cortex.models.v1.ModelService"]
order = ["openai", "mlx"]
""", governance=True)
    channel = channel_to(target)
    memories = memories_pb2_grpc.MemoryServiceStub(channel)
    for text in ("The garden project: raised beds go along the south fence.",
                 "Garden project budget is 300 euros for soil and seeds."):
        memories.Store(mem.StoreRequest(text=text), timeout=60)
    monday = memories.Store(mem.StoreRequest(text="Dentist appointment with Dr. Hartmann on Monday at 10:00."), timeout=60)
    memories.Store(mem.StoreRequest(text="The dentist appointment with Dr. Hartmann moved to Thursday at 15:00.",
                                    supersedes=monday.id), timeout=60)
    cerebrum = cerebrum_pb2_grpc.CerebrumServiceStub(channel)

    def run(goal: str) -> pb.TraceSummary:
        return list(cerebrum.Execute(pb.ExecuteRequest(goal=goal), timeout=120))[-1].summary

    summary = run("What is the garden budget?")
    assert len(chats(record)) == 1  # no plan asked of the model, no repair: the answer only
    chat = chats(record)[0]
    system, user = chat["messages"]
    assert "I don't know." in system["content"] and "[2]" in system["content"]
    assert "Question: What is the garden budget?" in user["content"]
    assert summary.answer_kind == "generated"
    # its [n] was renumbered to the citations; the [9] it made up (no such note) is gone
    assert summary.answer == "The garden budget is 300 euros [1]."
    assert [c.text for c in summary.citations] == ["Garden project budget is 300 euros for soil and seeds."]

    declined = run("What is my blood type?")
    assert len(chats(record)) == 2
    assert declined.answer_kind == "none" and not declined.citations
    assert declined.answer == "Nothing in your memories answers “What is my blood type?”."
    assert declined.related  # the nearest memories, offered as related

    memories.Store(mem.StoreRequest(text="My gym locker code is 4711.", tags=["private"]), timeout=60)
    private = run("What is my gym locker code?")
    assert private.status == "succeeded", private  # answered on this machine (mlx), not at the endpoint
    assert not any("4711" in json.dumps(body) for body in chats(record)), "a private memory reached the remote model"

    dentist = run("When is the dentist?")
    shown = chats(record)[-1]["messages"][1]["content"]
    monday = next(line for line in shown.splitlines() if "Monday" in line)
    thursday = next(line for line in shown.splitlines() if "Thursday" in line)
    assert "replaced by [" + thursday[1] + "]" in monday  # the stale note is marked, pointing at the current one
    assert dentist.answer == "On Thursday at 15:00 [1]." and "Thursday" in dentist.citations[0].text
