"""What an OpenAI-compatible provider configured as remote (`local = false`) receives, recorded by
a real server process of its own (tests/models/fake_servers.py): personal data arrives as
placeholders and comes back restored; a memory labelled private never arrives, whether it is
stored, searched for, or quoted by a plan step built from its recall; and each of these is
provable from the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as cb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc
from cortex.contracts.models.v1 import models_pb2 as models
from cortex.contracts.models.v1 import models_pb2_grpc

from ..conftest import audit_entries
from ..models.fake_servers import scripted_openai

EMAIL, PHONE = "anna.jansen@example.org", "+44 20 7946 0958"


@pytest.fixture
def recording_server(tmp_path):
    """An OpenAI-compatible server in a process of its own that says back what it is sent, and
    appends every request to a file."""
    with scripted_openai(tmp_path, [{"when": "", "echo": True}]) as server:
        yield server


def received(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def sent(record: Path) -> str:
    """Everything the remote provider was sent, as one text."""
    return "\n".join(json.dumps(r["body"]) for r in received(record))


@pytest.fixture
def kernel(start_kernel, recording_server, monkeypatch, tmp_path):
    """A governed kernel whose models are tried remote first (openai, then mlx on this machine),
    memories labelled private by a `health` tag as well (a [plugins.memories.labels] rule), and a
    watched folder of notes whose config labels them private."""
    base_url, record = recording_server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "december.md").write_text("# Dreams\n\nDreamt of a lighthouse keeper named Oswin.\n")
    notes = tmp_path / "notes"  # a source not labelled as a whole: its note tagged health is private by the rule
    notes.mkdir()
    (notes / "bloods.md").write_text("---\ntags: [health]\n---\n# Bloods\n\nFerritin result was Zanzibarine nine.\n")
    target, kt = start_kernel(f"""
[plugins]
disabled = ["ollama"]
[plugins.openai]
base_url = "{base_url}"
model = "fake-gpt"
embedding_model = "fake-embed"
local = false
[plugins.memories.labels.private]
tags = ["health"]
[[plugins.memories.source]]
name = "journal"
path = "{journal}"
labels = ["private"]
[[plugins.memories.source]]
name = "notes"
path = "{notes}"
[hybrid]
mlx_first = false
[routing."cortex.models.v1.ModelService"]
order = ["openai", "mlx"]
""", governance=True)
    return target, kt, record


def test_personal_data_leaves_as_placeholders_and_comes_back_restored(kernel, channel_to):
    target, kt, record = kernel
    stub = models_pb2_grpc.ModelServiceStub(channel_to(target))
    prompt = f"Write to {EMAIL} or call {PHONE} about the invoice of 12 March 2026 (order 4711)."
    reply, call = stub.Generate.with_call(models.GenerateRequest(prompt=prompt, max_tokens=64), timeout=60)
    assert dict(call.trailing_metadata())["x-cortex-provider"] == "openai"
    wire = sent(record)
    assert EMAIL not in wire and "7946" not in wire and "anna.jansen" not in wire
    assert "<EMAIL_1>" in wire and "<PHONE_1>" in wire
    assert "12 March 2026" in wire and "4711" in wire  # dates and order numbers are not personal data
    assert EMAIL in reply.text and PHONE in reply.text  # the fake echoes the prompt: restored here

    streamed = "".join(m.delta for m in stub.GenerateStream(models.GenerateStreamRequest(prompt=f"Mail {EMAIL}"), timeout=60))
    assert EMAIL in streamed and "<EMAIL" not in streamed
    assert EMAIL not in sent(record)

    # the audit log says a call was redacted, and how much, never what
    entries = [e for e in audit_entries(kt) if e.call.method == "Generate" and e.call.provider == "openai"]
    assert any(dict(e.call.redacted) == {"email": 1, "phone": 1} for e in entries), entries
    log = "\n".join(str(e) for e in audit_entries(kt))
    assert EMAIL not in log and "7946" not in log


def test_a_private_memory_never_reaches_the_remote_provider(kernel, channel_to):
    target, kt, record = kernel
    channel = channel_to(target)
    memories = memories_pb2_grpc.MemoryServiceStub(channel)
    # an ordinary memory is embedded remotely: the remote route is live (else this test proves nothing)
    memories.Store(mem.StoreRequest(text="The garden budget is 300 euros."), timeout=60)
    assert "garden budget" in sent(record)
    # private by tag, and by a config rule (tag "health"): embedded on this machine only
    memories.Store(mem.StoreRequest(text="My gym locker code is 4711.", tags=["private"]), timeout=60)
    stored = memories.Store(mem.StoreRequest(text="Blood test: ferritin 12 ug/L, low.", tags=["health"]), timeout=60)
    assert list(stored.memory.labels) == ["private"]
    found = memories.Search(mem.SearchRequest(query="gym locker code", top_k=3), timeout=60)
    locker = next(r.memory for r in found.results if "4711" in r.memory.text)
    assert list(locker.labels) == ["private"]  # the label is on the memory as it travels
    dream = memories.Search(mem.SearchRequest(query="lighthouse keeper", top_k=1), timeout=60).results[0].memory
    assert "Oswin" in dream.text and list(dream.labels) == ["private"]  # its source's label

    # a plan step built from the recalled memory's text, with no label in its own request: the
    # kernel carries the label the recall returned on to the Generate step, which stays local
    plan = cb.Plan(goal="locker", steps=[
        cb.Step(id="recall", method="cortex.memories.v1.MemoryService/Search",
                request_json=json.dumps({"query": "gym locker code", "top_k": 1})),
        cb.Step(id="say", method="cortex.models.v1.ModelService/Generate", depends_on=["recall"],
                request_json=json.dumps({"prompt": "Repeat: ${steps.recall.results[0].memory.text}", "max_tokens": 16})),
    ])
    cerebrum = cerebrum_pb2_grpc.CerebrumServiceStub(channel)
    steps = [m.step for m in cerebrum.Execute(cb.ExecuteRequest(plan=plan), timeout=120) if m.HasField("step")]
    say = next(s for s in steps if s.step_id == "say" and s.state == cb.StepRecord.STATE_FINISHED)
    assert say.provider == "mlx" and "4711" in say.request_json
    # and a goal answered from it, the template way (recall, prompt, generate)
    summary = list(cerebrum.Execute(cb.ExecuteRequest(goal="What is my gym locker code?"), timeout=120))[-1].summary
    assert summary.status == "succeeded", summary

    wire = sent(record)
    assert "4711" not in wire and "ferritin" not in wire and "Oswin" not in wire
    # provable from the audit log: the Generate calls the runs made carried the label and were
    # served on this machine
    generates = [e for e in audit_entries(kt) if e.call.method == "Generate" and e.HasField("proof")]
    assert generates and all("private" in e.call.labels for e in generates)
    assert {e.proof.provider for e in generates} == {"mlx"} and all(e.call.provider_local for e in generates)


def test_private_data_with_only_a_remote_provider_fails_naming_the_label(kernel, channel_to):
    target, _, record = kernel
    stub = models_pb2_grpc.ModelServiceStub(channel_to(target))
    before = len(received(record))
    with pytest.raises(grpc.RpcError) as refused:
        stub.Generate(models.GenerateRequest(prompt="my locker code is 4711", labels=["private"]), timeout=30,
                      metadata=(("x-cortex-provider", "openai"),))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "private" in refused.value.details()
    assert len(received(record)) == before


def _run(cerebrum, *steps: cb.Step) -> dict[str, cb.StepRecord]:
    plan = cb.Plan(goal="a plan", steps=list(steps))
    records = [m.step for m in cerebrum.Execute(cb.ExecuteRequest(plan=plan), timeout=120) if m.HasField("step")]
    return {r.step_id: r for r in records if r.state in (cb.StepRecord.STATE_FINISHED, cb.StepRecord.STATE_FAILED)}


def _say(quote: str, after: str) -> cb.Step:
    return cb.Step(id="say", method="cortex.models.v1.ModelService/Generate", depends_on=[after],
                   request_json=json.dumps({"prompt": f"Repeat: {quote}", "max_tokens": 16}))


def test_private_text_stays_private_wherever_it_is_read_from_next(kernel, channel_to):
    """Not only a recalled memory: a watched file opened whole, a trace of a run that read private
    data, a memory a plan stored from private text, a note private by a rule on its tag."""
    target, _, record = kernel
    channel = channel_to(target)
    memories = memories_pb2_grpc.MemoryServiceStub(channel)
    cerebrum = cerebrum_pb2_grpc.CerebrumServiceStub(channel)
    memories.Store(mem.StoreRequest(text="My gym locker code is 4711.", tags=["private"]), timeout=60)
    recall = cb.Step(id="recall", method="cortex.memories.v1.MemoryService/Search",
                     request_json=json.dumps({"query": "gym locker code", "top_k": 1}))

    opened = _run(cerebrum, cb.Step(id="open", method="cortex.memories.v1.SourceService/Open",
                                    request_json=json.dumps({"ref": "journal:december.md"})),
                  _say("${steps.open.text}", "open"))
    assert opened["say"].provider == "mlx" and "Oswin" in opened["say"].request_json

    # a plan that stores what it recalled: the copy is tagged private, so a later plan quoting it stays local
    _run(cerebrum, recall, cb.Step(id="keep", method="cortex.memories.v1.MemoryService/Store", depends_on=["recall"],
                                   request_json=json.dumps({"text": "Copied: ${steps.recall.results[0].memory.text}"})))
    copy = memories.Search(mem.SearchRequest(query="Copied gym locker", top_k=1), timeout=60).results[0].memory
    assert copy.text.startswith("Copied:") and "private" in copy.tags and list(copy.labels) == ["private"]

    # the trace of a run that read private data says so; a plan quoting it stays local
    summary = list(cerebrum.Execute(cb.ExecuteRequest(goal="What is my gym locker code?"), timeout=120))[-1].summary
    assert list(summary.labels) == ["private"]
    traced = _run(cerebrum, cb.Step(id="trace", method="cortex.cerebrum.v1.CerebrumService/GetTrace",
                                    request_json=json.dumps({"id": summary.trace_id})),
                  _say("${steps.trace.trace.steps[0].response_json}", "trace"))
    assert traced["say"].provider == "mlx" and "4711" in traced["say"].request_json

    bloods = memories.Search(mem.SearchRequest(query="ferritin result", top_k=1), timeout=60).results[0].memory
    assert "Zanzibarine" in bloods.text and list(bloods.labels) == ["private"]
    wire = sent(record)
    assert "4711" not in wire and "Oswin" not in wire and "Zanzibarine" not in wire
