"""Which labels a call carries and which data carries them (kernel/security/labels.py), and which
labels a memory gets from config (plugins/memories/labelling.py)."""

from __future__ import annotations

import asyncio

import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as cb
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.models.v1 import models_pb2 as models
from cortex.kernel.call import Call
from cortex.kernel.security.labels import holds, labels_in, request_labels, streamed
from cortex.plugins.memories.labelling import Labeller
from cortex.plugins.memories.store import Record


def test_a_request_names_labels_by_its_tags_labels_and_header():
    assert request_labels(mem.StoreRequest(text="x", tags=["private", "work"])) == {"private", "work"}
    assert request_labels(models.GenerateRequest(prompt="x", labels=["private"])) == {"private"}
    assert request_labels(models.GenerateRequest(prompt="x"), [("x-cortex-labels", " private, , pii ")]) == {"private", "pii"}
    assert request_labels(mem.SearchRequest(query="private")) == set()  # a query's words are no label


def test_labels_are_found_at_any_depth_of_a_response_and_only_in_labels_fields():
    found = mem.SearchResponse(results=[
        mem.SearchResult(memory=mem.Memory(text="a", tags=["work"], labels=["private"])),
        mem.SearchResult(memory=mem.Memory(text="b", labels=["pii"])),
    ])
    assert labels_in(found) == {"private", "pii"}
    assert labels_in(mem.SearchResponse(results=[mem.SearchResult(memory=mem.Memory(tags=["private"]))])) == set()
    assert labels_in(cb.AnswerPromptResponse(labels=["private"])) == {"private"}
    assert labels_in(models.GenerateResponse(text="hello")) == set()  # a type that cannot hold one


def _call(labels=()) -> Call:
    return Call(id="c", method=None, request=None, principal="admin", labels=set(labels))  # type: ignore[arg-type]


def test_what_a_nested_call_returns_labels_the_call_it_was_made_for():
    serving, nested = _call(), _call({"work"})
    nested.gathered.add("pii")  # what the nested call's own nested calls returned
    holds(serving, nested, mem.GetResponse(memory=mem.Memory(labels=["private"])))
    # the response's, and what the nested call gathered; not its request's own ("work": the caller
    # gave it, and every batch of a bulk job would pile its tags up on the job)
    assert serving.labels == serving.gathered == {"private", "pii"}
    holds(None, nested, mem.GetResponse())  # a call made for nobody: nothing to carry


def test_labels_that_describe_data_are_not_labels_of_data():
    from cortex.contracts.governance.v1 import governance_pb2 as gov

    policies = gov.ListPoliciesResponse(rules=[gov.Rule(id="builtin/private-stays-local", labels=["private"])])
    assert labels_in(policies) == set()  # a rule about private data is no private data
    assert labels_in(gov.ExportAuditResponse(entry=gov.AuditEntry(call=gov.CallDescription(labels=["private"])))) == set()


def test_a_streamed_labels_in_the_caller_message_by_message():
    serving, nested = _call(), _call()

    async def stream():
        yield mem.GetResponse(memory=mem.Memory(labels=["a"]))
        yield mem.GetResponse(memory=mem.Memory(labels=["b"]))

    async def read():
        seen = []
        async for _ in streamed(serving, nested, stream()):
            seen.append(set(serving.labels))
        return seen

    assert asyncio.run(read()) == [{"a"}, {"a", "b"}]


def _record(**fields) -> Record:
    base = {"id": "m1", "kind": "note", "text": "t", "tags": [], "metadata": {}, "source": "cli", "created_at": 0,
            "updated_at": 0, "expires_at": None, "content_hash": "h"}
    return Record(**{**base, **fields})


def test_a_memory_is_labelled_by_tag_source_kind_namespace_and_rule():
    labeller = Labeller.from_config(
        {"private": {"tags": ["health"], "kinds": ["diary"], "namespaces": ["key:alice"]}, "pii": {"sources": ["crm"]}},
        {"journal": ["private"]},
    )
    assert labeller.labels_of(_record(tags=["private"])) == ["private"]  # a tag named like a label
    assert labeller.labels_of(_record(tags=["health"])) == ["private"]
    assert labeller.labels_of(_record(kind="diary")) == ["private"]
    assert labeller.labels_of(_record(namespace="key:alice")) == ["private"]
    assert labeller.labels_of(_record(source="journal:2026/dec.md#L1-L4", metadata={"file": "2026/dec.md"})) == ["private"]
    assert labeller.labels_of(_record(source="crm:a.md", metadata={"file": "a.md"}, tags=["pii"])) == ["pii"]
    assert labeller.labels_of(_record(source="journal:not-a-passage")) == []  # only a source's passages
    assert labeller.labels_of(_record(tags=["work"])) == []
    assert Labeller().labels_of(_record(tags=["private", "work"])) == ["private"]
    assert labeller.of_source("journal") == ["private"]


@pytest.mark.parametrize("table", [["private"], {"private": ["health"]}, {"private": {"tag": ["x"]}},
                                   {"private": {"tags": "health"}}])
def test_a_wrong_label_rule_says_what_to_write(table):
    with pytest.raises(ValueError, match=r"plugins\.memories\.labels"):
        Labeller.from_config(table)
