"""The audit log as a Merkle tree log: an append that signs is covered by a signed tree head (the
timer that signs the others: test_signing_window.py), proofs read
stored subtrees (and agree with the RFC's definitions over the leaves), consistency proofs over
gRPC and offline, and a log from before schema 3 or with a lost head is rebuilt on open."""

from __future__ import annotations

import base64
import json
import random
import sqlite3

import grpc
import pytest

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.plugins.governance.chain import (
    SUBTREE,
    AuditChain,
    checkpoint_problem,
    entry_hash,
    inclusion_problem,
    load_or_create_key,
    verify_chain,
)
from cortex.plugins.governance.merkle import consistency_proof, consistent, inclusion_proof
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import run_cli
from .test_checkpoints import export_checkpoint
from .test_evidence import echo_calls_then_stop


def proof_entry(i: int) -> pb.AuditEntry:
    return pb.AuditEntry(call_id=f"c{i}", proof=pb.Proof(call_id=f"c{i}", service="s", method="m", status="OK"))


def fill(chain: AuditChain, count: int, batch: int = 37) -> None:
    for start in range(0, count, batch):
        chain.append([proof_entry(i) for i in range(start, min(count, start + batch))])


def test_every_append_is_covered_by_a_signed_head_and_stored_as_serialized(chain):
    key = chain.public_key()
    for size in (1, 5, 40):
        entries = chain.append([proof_entry(i) for i in range(size)])
        assert chain.head.size == chain.head_seq and checkpoint_problem(chain.head, key) == ""
        assert chain.stored_head() == chain.head
        for entry in entries:
            assert entry.hash == entry_hash(entry) and not entry.signature  # covered by the head, not signed
            stored = chain.db.execute("SELECT body FROM entries WHERE seq = ?", (entry.seq,)).fetchone()[0]
            assert stored == entry.SerializeToString(deterministic=True)
    assert verify_chain(chain.path).ok


def test_proofs_from_stored_subtrees_match_the_definitions(chain):
    fill(chain, 3 * SUBTREE + 77)
    leaves = chain.leaves(chain.head_seq)
    assert chain.db.execute("SELECT COUNT(*) FROM subtrees").fetchone()[0] >= 3  # 256, 256, 256, 512 ...
    rng = random.Random(7)
    for index in [0, 1, SUBTREE - 1, SUBTREE, len(leaves) - 1, *rng.sample(range(len(leaves)), 20)]:
        entry = chain.get(index + 1)
        assert chain.inclusion(entry, chain.head) == inclusion_proof(leaves, index)
        assert inclusion_problem(entry, chain.head, chain.inclusion(entry, chain.head)) == ""
    for old in [1, SUBTREE, SUBTREE + 1, 2 * SUBTREE, *rng.sample(range(1, len(leaves)), 10)]:
        for new in (old, len(leaves), rng.randint(old, len(leaves))):
            assert chain.consistency(old, new) == consistency_proof(leaves[:new], old)


def test_a_wrong_stored_subtree_cannot_make_a_proof_that_verifies(chain):
    fill(chain, 2 * SUBTREE + 3)
    chain.db.execute("UPDATE subtrees SET hash = ? WHERE size = ? AND idx = 0", (bytes(32), SUBTREE))
    entry = chain.get(SUBTREE + 5)
    assert "is not in the log" in inclusion_problem(entry, chain.head, chain.inclusion(entry, chain.head))


def test_reopening_reads_the_stored_frontier_not_every_leaf(tmp_path, chain, monkeypatch):
    fill(chain, 600)
    head = chain.head
    chain.close()
    monkeypatch.setattr(AuditChain, "leaves", lambda self, size: pytest.fail("re-read every leaf"))
    folder = tmp_path / "governance"
    again = AuditChain(folder / "audit.db", load_or_create_key(folder))
    assert again.head == head and again.frontier.root() == head.root_hash
    again.append([proof_entry(1000)])
    assert again.head.size == 602
    again.close()


def test_a_log_from_before_schema_3_gets_its_tree_on_open(tmp_path, chain):
    fill(chain, 300)
    path = chain.path
    chain.close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE subtrees; DROP TABLE tree_head; PRAGMA user_version = 2;")
    db.close()
    assert "cannot" not in str(verify_chain(path))  # an old log, read as one: no head to demand
    folder = tmp_path / "governance"
    reopened = AuditChain(path, load_or_create_key(folder))
    assert reopened.head.size == 301 and reopened.db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert reopened.db.execute("SELECT COUNT(*) FROM subtrees WHERE size = ?", (SUBTREE,)).fetchone()[0] == 1
    reopened.close()
    assert verify_chain(path).ok


def test_a_failed_append_leaves_tree_and_head_as_they_were(chain, monkeypatch):
    fill(chain, 10)
    head, root, size = chain.head, chain.frontier.root(), chain.head_seq

    def refuse(*args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(chain, "_store_subtrees", refuse)
    with pytest.raises(sqlite3.OperationalError):
        chain.append([proof_entry(99)])
    monkeypatch.undo()
    assert (chain.head, chain.frontier.root(), chain.head_seq) == (head, root, size)
    assert chain.db.execute("SELECT MAX(seq) FROM entries").fetchone()[0] == size
    chain.append([proof_entry(100)])
    assert verify_chain(chain.path).ok


def test_consistency_proofs_over_grpc_and_offline(tmp_path, serve_process, channel_to):
    data = tmp_path / "data"
    env, _ = echo_calls_then_stop(data, serve_process, channel_to, 5)
    old = export_checkpoint(env, tmp_path / "old.json")
    kernel = serve_process(env=env)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target))
    for i in range(20):
        echo.Echo(echo_pb2.EchoRequest(message=str(i)), timeout=5)
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(kernel.target))
    first = int(old["size"])
    reply = gov.GetConsistencyProof(pb.GetConsistencyProofRequest(first_size=first), timeout=5)
    head = reply.checkpoint
    assert reply.second_size == head.size > first and checkpoint_problem(head, head.public_key) == ""
    assert consistent(first, base64.b64decode(old["root_hash"]), head.size, head.root_hash, list(reply.proof))
    for bad in ((0, 0), (10**9, 0), (5, 3)):
        with pytest.raises(grpc.RpcError) as err:
            gov.GetConsistencyProof(pb.GetConsistencyProofRequest(first_size=bad[0], second_size=bad[1]), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no consistency proof" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        gov.GetConsistencyProof(pb.GetConsistencyProofRequest(first_size=1, second_size=10**9), timeout=5)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    kernel.stop()
    ok = run_cli("proofs", "consistency", str(tmp_path / "old.json"), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK: the log of ") and int(ok.stdout.split()[4]) > head.size
    # a head from a rewritten log (signed with the stolen key) does not extend the kept one
    from .test_checkpoints import db_of, resign_head, stolen_key

    db = db_of(data)
    entry = pb.AuditEntry.FromString(db.execute("SELECT body FROM entries WHERE seq = 3").fetchone()[0])
    entry.time_unix_nanos += 1
    entry.hash = entry_hash(entry)
    db.execute("UPDATE entries SET body = ?, hash = ? WHERE seq = 3", (entry.SerializeToString(), entry.hash))
    db.commit()
    resign_head(db, stolen_key(data))
    bad = run_cli("proofs", "consistency", str(tmp_path / "old.json"), env=env)
    assert bad.returncode == 1 and "does not extend the one of" in bad.stdout
    json.loads((tmp_path / "old.json").read_text())  # the kept head itself is untouched


def test_concurrent_calls_are_recorded_and_signed_within_the_window(start_kernel, channel_to):
    from ..conftest import wait_for

    # how many appends a burst takes depends on how the calls arrive (a loaded machine spreads them
    # out, and a lone call's entry is written at once): here, that every call is recorded, in a
    # chain that verifies once the kernel has signed (within sign_ms, as `cortex proofs verify`
    # waits); the batching itself is the next test's, on a loop it controls
    target, kt = start_kernel(governance=True)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    writer = kt.kernel.host.records["governance"].obj.writer
    before = writer.written
    futures = [echo.Echo.future(echo_pb2.EchoRequest(message=str(i)), timeout=5) for i in range(40)]
    assert [f.result().message for f in futures] == [str(i) for i in range(40)]
    wait_for(lambda: writer.written - before >= 40, "the 40 calls' proofs written")
    assert verify_chain(writer.chain.path, wait_s=2).ok


def test_calls_answered_in_one_turn_of_the_loop_share_one_append(chain):
    import asyncio

    from cortex.plugins.governance.audit_writer import AuditWriter

    writer = AuditWriter(chain, batch_ms=500)

    async def burst():
        loop = asyncio.get_running_loop()
        for i in range(40):  # 40 calls finishing in the same turn of the loop, as under load
            loop.call_soon(writer.add, [proof_entry(i)])
        await asyncio.sleep(0.1)  # the loop idle: written (with the 500 ms bound far off)

    asyncio.run(burst())
    assert (writer.writes, writer.written) == (1, 40)
    writer.add([proof_entry(40)])  # no loop: written at once
    assert (writer.writes, writer.written) == (2, 41)
    assert verify_chain(chain.path).ok


def test_a_failed_checkpoint_never_writes_a_batch_twice(chain, monkeypatch):
    from cortex.plugins.governance.audit_writer import AuditWriter

    writer = AuditWriter(chain, checkpoint_every=1)

    def refuse():
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(chain, "checkpoint", refuse)
    writer.add([proof_entry(1)])  # no event loop: written at once
    writer.add([proof_entry(2)])
    calls = [e.call_id for e in chain.entries() if e.HasField("proof")]
    assert calls == ["c1", "c2"] and writer.failure == ""
    assert verify_chain(chain.path).ok
