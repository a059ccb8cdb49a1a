"""Namespaces: two API keys on one governed kernel each see only their own memories (and traces),
by every mode and method, whatever they name; a shared namespace is shared with its members only;
the owner's memories stay the owner's; and `namespaces = "off"` is one namespace for all."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as cb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc

from .conftest import with_backend

CONFIG = ('[plugins]\ndisabled = ["ollama", "openai"]\n'
          '[plugins.memories.shared]\nfamily = ["key:alice", "key:bob"]\n')
MODES = (pb.SEARCH_MODE_SEMANTIC, pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_HYBRID)


@pytest.fixture
def kernel(start_kernel, channel_to, data_dir, backend):
    """(target, {who: call metadata}) of a governed kernel with keys alice and bob; `owner` calls
    with the admin token (as the CLI does), `local` without a credential."""
    from cortex.kernel.security.credentials import KeyStore

    from ..conftest import admin_token

    def start(config: str = CONFIG):
        target, _ = start_kernel(with_backend(config, backend), governance=True)
        keys = KeyStore(data_dir)
        who = {name: (("authorization", f"Bearer {keys.create(name, [])}"),) for name in ("alice", "bob")}
        who["owner"] = (("authorization", f"Bearer {admin_token(target)}"),)
        who["local"] = ()
        return target, who

    return start


def stub_of(channel_to, target, service=memories_pb2_grpc.MemoryServiceStub):
    """A stub on a channel without a credential of its own: each call names its caller."""
    return service(channel_to(target, as_admin=False))


def found(stub, query: str, metadata, mode=pb.SEARCH_MODE_HYBRID, **filter_fields) -> list[str]:
    request = pb.SearchRequest(query=query, mode=mode, top_k=10, filter=pb.Filter(**filter_fields))
    return [r.memory.text for r in stub.Search(request, timeout=60, metadata=metadata).results]


def refused(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value.details()


def test_two_keys_see_only_their_own_memories(kernel, channel_to):
    target, who = kernel()
    stub = stub_of(channel_to, target)
    alice, bob, owner = who["alice"], who["bob"], who["owner"]
    mine = stub.Store(pb.StoreRequest(text="My bank card PIN hint: the dog's birthday."), timeout=60, metadata=alice)
    assert mine.memory.namespace == "key:alice"
    stub.Store(pb.StoreRequest(text="The owner's spare key is under the blue flowerpot."), timeout=60, metadata=owner)
    # the same text stored by both is two memories, one each (content is unique per namespace)
    a = stub.Store(pb.StoreRequest(text="Buy oat milk on Friday."), timeout=60, metadata=alice)
    b = stub.Store(pb.StoreRequest(text="Buy oat milk on Friday."), timeout=60, metadata=bob)
    assert a.created and b.created and a.id != b.id and b.memory.namespace == "key:bob"
    assert not stub.Store(pb.StoreRequest(text="Buy oat milk on Friday."), timeout=60, metadata=bob).created

    for mode in MODES:
        assert "My bank card PIN hint: the dog's birthday." not in found(stub, "bank card PIN hint", bob, mode)
        assert "My bank card PIN hint: the dog's birthday." in found(stub, "bank card PIN hint", alice, mode)
        assert not any("flowerpot" in t for t in found(stub, "spare key flowerpot", alice, mode))
        assert not any("PIN" in t for t in found(stub, "bank card PIN hint", owner, mode))  # admin's default: its own
    # naming another's namespace, or all of them, is refused; admin may
    assert "may not read namespace 'key:bob'" in refused(
        lambda: found(stub, "milk", alice, namespaces=["key:bob"]), grpc.StatusCode.PERMISSION_DENIED)
    refused(lambda: found(stub, "milk", alice, namespaces=["*"]), grpc.StatusCode.PERMISSION_DENIED)
    assert "My bank card PIN hint: the dog's birthday." in found(stub, "bank card PIN hint", owner, namespaces=["*"])
    assert found(stub, "bank card PIN hint", owner, namespaces=["key:alice"])[0].startswith("My bank card")

    # by id, another's memory does not exist: nothing to read, change, revert or delete
    for call in (lambda: stub.Get(pb.GetRequest(id=mine.id), timeout=10, metadata=bob),
                 lambda: stub.History(pb.HistoryRequest(id=mine.id), timeout=10, metadata=bob),
                 lambda: stub.Update(pb.UpdateRequest(id=mine.id, text="gone"), timeout=10, metadata=bob),
                 lambda: stub.Revert(pb.RevertRequest(id=mine.id, version=1), timeout=10, metadata=bob)):
        refused(call, grpc.StatusCode.NOT_FOUND)
    assert not stub.Delete(pb.DeleteRequest(id=mine.id), timeout=10, metadata=bob).deleted
    refused(lambda: stub.Store(pb.StoreRequest(text="I moved the card.", supersedes=mine.id), timeout=60, metadata=bob),
            grpc.StatusCode.NOT_FOUND)
    assert stub.Get(pb.GetRequest(id=mine.id), timeout=10, metadata=alice).memory.text.startswith("My bank card")

    # listing, counting and bulk changes stay inside the caller's namespace too
    assert {m.text for m in stub.List(pb.ListRequest(), timeout=10, metadata=bob).memories} == {"Buy oat milk on Friday."}
    assert stub.Stats(pb.StatsRequest(), timeout=10, metadata=alice).total == 2
    assert stub.Stats(pb.StatsRequest(namespaces=["*"]), timeout=10, metadata=owner).total == 4
    dry = stub.DeleteMatching(pb.DeleteMatchingRequest(dry_run=True), timeout=10, metadata=bob).outcome
    assert dry.matched == 1
    done = stub.DeleteMatching(pb.DeleteMatchingRequest(confirm=dry.confirm), timeout=10, metadata=bob).outcome
    assert done.changed == 1 and stub.Stats(pb.StatsRequest(), timeout=10, metadata=alice).total == 2
    # a credential cannot be swapped for a claim
    spoof = (*alice, ("x-cortex-principal", "key:bob"))
    refused(lambda: stub.Stats(pb.StatsRequest(), timeout=10, metadata=spoof), grpc.StatusCode.PERMISSION_DENIED)


def test_a_shared_namespace_is_its_members_and_no_one_elses(kernel, channel_to):
    target, who = kernel()
    stub = stub_of(channel_to, target)
    stored = stub.Store(pb.StoreRequest(text="Family dinner at grandma's on Sunday at six.", namespace="family"),
                        timeout=60, metadata=who["alice"])
    assert stored.memory.namespace == "family"
    assert "Family dinner at grandma's on Sunday at six." in found(stub, "family dinner", who["bob"])  # bob's scope has it
    assert "Family dinner at grandma's on Sunday at six." in found(stub, "family dinner", who["bob"], namespaces=["family"])
    assert not found(stub, "family dinner grandma", who["owner"], mode=pb.SEARCH_MODE_KEYWORD)
    refused(lambda: found(stub, "family dinner", who["local"], namespaces=["family"]), grpc.StatusCode.PERMISSION_DENIED)
    assert "may not write namespace 'key:alice'" in refused(
        lambda: stub.Store(pb.StoreRequest(text="planted", namespace="key:alice"), timeout=60, metadata=who["bob"]),
        grpc.StatusCode.PERMISSION_DENIED)
    # bob may change what is shared with him, and alice sees the change
    stub.Update(pb.UpdateRequest(id=stored.id, text="Family dinner at grandma's on Sunday at seven."), timeout=60,
                metadata=who["bob"])
    assert stub.Get(pb.GetRequest(id=stored.id), timeout=10, metadata=who["alice"]).memory.text.endswith("at seven.")


def test_cerebrum_recalls_and_keeps_traces_in_the_callers_namespace(kernel, channel_to):
    target, who = kernel()
    stub = stub_of(channel_to, target)
    brain = stub_of(channel_to, target, cerebrum_pb2_grpc.CerebrumServiceStub)
    stub.Store(pb.StoreRequest(text="Alice's garden budget is 300 euros for soil and seeds."), timeout=60, metadata=who["alice"])
    stub.Store(pb.StoreRequest(text="The owner's garden budget is 900 euros for a greenhouse."), timeout=60,
               metadata=who["owner"])
    events = list(brain.Execute(cb.ExecuteRequest(goal="what is the garden budget?"), timeout=120, metadata=who["alice"]))
    summary = events[-1].summary
    assert summary.status == "succeeded" and summary.citations
    assert all("Alice's" in c.text for c in summary.citations), [c.text for c in summary.citations]
    assert "300 euros" in summary.answer and "900" not in summary.answer
    assert [t.trace_id for t in brain.ListTraces(cb.ListTracesRequest(), timeout=10, metadata=who["alice"]).traces] == [
        summary.trace_id]
    assert not brain.ListTraces(cb.ListTracesRequest(), timeout=10, metadata=who["bob"]).traces
    refused(lambda: brain.GetTrace(cb.GetTraceRequest(id=summary.trace_id), timeout=10, metadata=who["bob"]),
            grpc.StatusCode.NOT_FOUND)
    refused(lambda: list(brain.Replay(cb.ReplayRequest(trace_id=summary.trace_id), timeout=60, metadata=who["bob"])),
            grpc.StatusCode.NOT_FOUND)
    assert brain.GetTrace(cb.GetTraceRequest(id=summary.trace_id), timeout=10, metadata=who["owner"]).trace.id == \
        summary.trace_id  # admin sees every trace


def test_namespaces_off_is_one_namespace_for_every_caller(kernel, channel_to):
    target, who = kernel('[plugins]\ndisabled = ["ollama", "openai"]\n[plugins.memories]\nnamespaces = "off"\n')
    stub = stub_of(channel_to, target)
    stored = stub.Store(pb.StoreRequest(text="The wifi password is on the fridge."), timeout=60, metadata=who["alice"])
    assert stored.memory.namespace == "default"
    assert "The wifi password is on the fridge." in found(stub, "wifi password", who["bob"])
    assert stub.Get(pb.GetRequest(id=stored.id), timeout=10, metadata=who["bob"]).memory.id == stored.id
