"""Namespaces are walls in the audit log too: a key reads (ExportAudit, GetProof, VerifyProof by id)
only the entries of calls made in its own namespace, each still provable against the signed tree
head that covers the whole log; admin reads every entry."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.governance.v1 import governance_pb2 as gpb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
from cortex.plugins.governance.chain import checkpoint_problem, entry_hash, inclusion_problem

from ..conftest import callers

CONFIG = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp", "http", "cerebrum", "mlx"]\n'


@pytest.fixture
def kernel(start_kernel, channel_to, data_dir):
    target, _ = start_kernel(CONFIG, governance=True)
    who = callers(target, data_dir, "alice", "bob")
    channel = channel_to(target, as_admin=False)
    return (memories_pb2_grpc.MemoryServiceStub(channel), governance_pb2_grpc.GovernanceServiceStub(channel), who)


def call_id_of(stub, metadata) -> str:
    _, call = stub.Stats.with_call(memories_pb2.StatsRequest(), timeout=10, metadata=metadata)
    return dict(call.trailing_metadata())["x-cortex-call-id"]


def principal_of(entry: gpb.AuditEntry) -> str:
    return entry.proof.principal if entry.HasField("proof") else entry.call.principal


def test_a_key_exports_and_proves_only_its_own_entries(kernel):
    memories, gov, who = kernel
    alices, bobs = call_id_of(memories, who["alice"]), call_id_of(memories, who["bob"])
    bobs_proof = gov.GetProof(gpb.GetProofRequest(id=bobs), timeout=10, metadata=who["admin"])
    assert bobs_proof.entry.proof.principal == "key:bob"

    exported = [m.entry for m in gov.ExportAudit(gpb.ExportAuditRequest(), timeout=10, metadata=who["alice"])]
    calls = [e for e in exported if e.HasField("proof") or e.HasField("decision")]
    assert {principal_of(e) for e in calls} == {"key:alice"}, {principal_of(e) for e in calls}
    assert alices in {e.call_id for e in calls} and bobs not in {e.call_id for e in exported}
    assert all(e.HasField("genesis") or e in calls for e in exported)  # no one else's policy changes either
    # each exported entry is what the log holds: its hash, and its inclusion under the signed head
    for entry in calls[:3]:
        assert entry_hash(entry) == entry.hash
        proof = gov.GetProof(gpb.GetProofRequest(id=f"p-{entry.seq}"), timeout=10, metadata=who["alice"])
        assert proof.entry == entry
        assert not inclusion_problem(entry, proof.checkpoint, list(proof.inclusion))
        assert not checkpoint_problem(proof.checkpoint, proof.checkpoint.public_key)
    # a range asks for positions of the log: a key gets its own among them
    first = calls[0].seq
    ranged = [m.entry.seq for m in gov.ExportAudit(gpb.ExportAuditRequest(from_seq=first, limit=3), timeout=10,
                                                   metadata=who["alice"])]
    assert ranged and all(first <= s < first + 3 for s in ranged)

    # another's entry does not exist for a key, by call id or by proof id
    for name in (bobs, bobs_proof.proof_id):
        for call in (lambda n=name: gov.GetProof(gpb.GetProofRequest(id=n), timeout=10, metadata=who["alice"]),
                     lambda n=name: gov.VerifyProof(gpb.VerifyProofRequest(id=n), timeout=10, metadata=who["alice"])):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
            assert "key:bob" not in err.value.details()

    # admin reads every entry
    everything = [m.entry for m in gov.ExportAudit(gpb.ExportAuditRequest(), timeout=10, metadata=who["admin"])]
    assert {alices, bobs} <= {e.call_id for e in everything}
    assert {"key:alice", "key:bob", "admin"} <= {principal_of(e) for e in everything if e.HasField("proof")}


def test_verify_chain_and_policies_say_nothing_of_anyones_calls(kernel):
    memories, gov, who = kernel
    call_id_of(memories, who["bob"])
    verdict = gov.VerifyChain(gpb.VerifyChainRequest(), timeout=30, metadata=who["alice"])
    assert verdict.valid and verdict.checked > 0 and not verdict.problem
    # policies are the kernel's configuration, the rules every caller is judged by: any key reads them
    rules = gov.ListPolicies(gpb.ListPoliciesRequest(), timeout=10, metadata=who["alice"]).rules
    assert any(r.id == "builtin/policy-admin" for r in rules)
