"""Proofs and the audit chain: created for calls, verified online and offline, tampering caught."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import cortex_env, run_cli


def echo_calls_then_stop(data, serve_process, channel_to, count: int) -> tuple[dict, list[str]]:
    """A kernel on `data` answers `count` echo calls (a proof each, carrying its decision), then stops:
    (its environment, the call ids)."""
    env = cortex_env(data)
    kernel = serve_process(env=env)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target))
    call_ids = []
    for i in range(count):
        _, call = echo.Echo.with_call(echo_pb2.EchoRequest(message=f"note {i}"), timeout=5)
        call_ids.append(dict(call.trailing_metadata())["x-cortex-call-id"])
    code, _ = kernel.stop()
    assert code == 0
    return env, call_ids


@pytest.fixture
def chain_with_calls(tmp_path, serve_process, channel_to):
    """A data dir whose chain holds a few echo calls; the kernel is stopped afterwards."""
    data = tmp_path / "data"
    env, call_ids = echo_calls_then_stop(data, serve_process, channel_to, 10)
    return data, env, call_ids


def verify(env, *args):
    return run_cli("proofs", "verify", *args, env=env)


def rows(data):
    db = sqlite3.connect(data / "governance" / "audit.db")
    return db, db.execute("SELECT seq, body FROM entries ORDER BY seq").fetchall()


def test_proofs_are_created_for_calls_and_verify_over_grpc(start_kernel, channel_to):
    target, _ = start_kernel(governance=True)
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target))
    _, call = echo_pb2_grpc.EchoServiceStub(channel_to(target)).Echo.with_call(echo_pb2.EchoRequest(message="x"), timeout=5)
    call_id = dict(call.trailing_metadata())["x-cortex-call-id"]
    proof = gov.GetProof(pb.GetProofRequest(id=call_id), timeout=5)
    assert gov.VerifyProof(pb.VerifyProofRequest(id=proof.proof_id), timeout=5).valid
    assert gov.VerifyProof(pb.VerifyProofRequest(entry=proof.entry), timeout=5).valid
    forged = pb.AuditEntry()
    forged.CopyFrom(proof.entry)
    forged.proof.principal = "someone else"
    verdict = gov.VerifyProof(pb.VerifyProofRequest(entry=forged), timeout=5)
    assert not verdict.valid and "does not match its hash" in verdict.problem
    junk = gov.VerifyProof(pb.VerifyProofRequest(entry=pb.AuditEntry(seq=3, hash=b"\x00", signature=b"??")), timeout=5)
    assert not junk.valid
    with pytest.raises(grpc.RpcError) as err:
        gov.GetProof(pb.GetProofRequest(id="p-999999"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # the proof carries the decision that let the call through, and what was decided on
    assert proof.entry.proof.decision.effect == pb.EFFECT_ALLOW and proof.entry.call_id == call_id
    assert proof.entry.call.provider == "echo" and proof.entry.call.principal == "admin"


def test_the_chain_verifies_offline_and_survives_a_restart(chain_with_calls, serve_process, channel_to):
    data, env, call_ids = chain_with_calls
    result = verify(env, "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    first = int(result.stdout.split()[1])
    kernel = serve_process(env=env)
    echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target)).Echo(echo_pb2.EchoRequest(), timeout=5)
    kernel.stop()
    result = verify(env, "--all", "--data-dir", str(data))
    assert result.returncode == 0 and int(result.stdout.split()[1]) > first
    one = verify(env, call_ids[2])
    assert one.returncode == 0 and one.stdout.startswith("OK: p-")
    shown = json.loads(run_cli("proofs", "show", call_ids[0], env=env).stdout)
    assert shown["proof"]["call_id"] == call_ids[0] and shown["proof"]["status"] == "OK"
    tail = run_cli("audit", "tail", "-n", "3", env=env)
    assert "proof" in tail.stdout and "cortex_echo.v1.EchoService/Echo" in tail.stdout
    assert tail.stdout.splitlines()[0].split() == ["SEQ", "ENTRY", "CALL", "WHAT"]  # the columns say what they are


def test_signing_key_is_private_and_its_public_key_exported(chain_with_calls, tmp_path):
    data, env, _ = chain_with_calls
    key = data / "governance" / "signing_key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    # the evidence and the memories are the owner's alone too
    for database in ("governance/audit.db", "memories/memories.db", "events/events.db", "cerebrum/traces.db"):
        assert stat.S_IMODE(os.stat(data / database).st_mode) == 0o600, database
    exported = tmp_path / "audit.jsonl"
    assert run_cli("proofs", "export", str(exported), env=env).returncode == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert "genesis" in lines[0] and lines[-1]["seq"] == str(len(lines))
    public = tmp_path / "audit.jsonl.pub.pem"
    assert verify(env, "--all", "--public-key", str(public)).returncode == 0


def test_an_altered_entry_is_caught(chain_with_calls):
    data, env, _ = chain_with_calls
    db, entries = rows(data)
    seq, body = entries[4]
    entry = pb.AuditEntry.FromString(body)
    field = "proof" if entry.HasField("proof") else "call"
    getattr(entry, field).principal = "grpc:someone-else"
    db.execute("UPDATE entries SET body = ? WHERE seq = ?", (entry.SerializeToString(), seq))
    db.commit()
    result = verify(env, "--all")
    assert result.returncode == 1
    assert result.stdout.strip() == f"BROKEN at entry {seq}: its content does not match its hash (the entry was altered)"


def rehash(data, index: int, change) -> int:
    """What someone without the key can do: change the entry at `index`, give it the hash its new
    content has (the column too), store it. Returns its seq."""
    from cortex.plugins.governance.chain import entry_hash

    db, entries = rows(data)
    seq, body = entries[index]
    entry = pb.AuditEntry.FromString(body)
    change(entry)
    entry.hash = entry_hash(entry)
    db.execute("UPDATE entries SET body = ?, hash = ? WHERE seq = ?", (entry.SerializeToString(), entry.hash, seq))
    db.commit()
    return seq


def test_a_rehashed_proof_is_pinpointed_by_the_signed_tree_head(chain_with_calls):
    data, env, _ = chain_with_calls
    seq = rehash(data, 4, lambda entry: setattr(entry, "time_unix_nanos", entry.time_unix_nanos + 1))
    result = verify(env, "--all")
    assert result.returncode == 1
    # the next entry still names the original hash, and the signed head's root agrees with it
    assert result.stdout.startswith(f"BROKEN at entry {seq}: its content was altered and re-hashed: the signed tree head of ")


def test_a_relinked_entry_is_pinpointed_not_the_one_before_it(chain_with_calls):
    """An entry re-hashed with a made-up predecessor breaks the same link as a re-hashed
    predecessor would; the signed tree head tells which of the two was altered."""
    data, env, _ = chain_with_calls
    seq = rehash(data, 6, lambda entry: setattr(entry, "prev_hash", b"\x01" * 32))
    result = verify(env, "--all")
    assert result.returncode == 1
    assert result.stdout.startswith(f"BROKEN at entry {seq}: it does not link to the entry before it")


def test_a_rehashed_decision_is_pinpointed_too(chain_with_calls):
    data, env, _ = chain_with_calls
    seq = rehash(data, 4, lambda entry: setattr(entry.proof.decision, "effect", pb.EFFECT_DENY))
    result = verify(env, "--all")
    assert result.returncode == 1
    assert result.stdout.startswith(f"BROKEN at entry {seq}: its content was altered and re-hashed")


def test_a_deleted_entry_is_caught(chain_with_calls):
    data, env, _ = chain_with_calls
    db, _entries = rows(data)
    db.execute("DELETE FROM entries WHERE seq = ?", (6,))
    db.commit()
    result = verify(env, "--all")
    assert result.returncode == 1
    assert result.stdout.startswith("BROKEN at entry 6: expected entry 6 here, found entry 7")


def test_reordered_entries_are_caught(chain_with_calls):
    data, env, _ = chain_with_calls
    db, entries = rows(data)
    (a, body_a), (b, body_b) = entries[3], entries[4]
    db.execute("UPDATE entries SET body = ? WHERE seq = ?", (body_b, a))
    db.execute("UPDATE entries SET body = ? WHERE seq = ?", (body_a, b))
    db.commit()
    result = verify(env, "--all")
    assert result.returncode == 1
    assert result.stdout.startswith(f"BROKEN at entry {a}: expected entry {a} here, found entry {b}")


def test_a_swapped_key_is_caught(chain_with_calls, tmp_path, serve_process, channel_to):
    data, env, _ = chain_with_calls
    original = (data / "governance" / "public_key.pem").read_bytes()
    other = Ed25519PrivateKey.generate()
    (data / "governance" / "signing_key.pem").write_bytes(
        other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    # the kernel refuses to sign with it, and so (governance is required) to serve, naming the swap
    refused = run_cli("serve", "--listen", "127.0.0.1:0", env=env)
    assert refused.returncode == 1 and "'governance' is broken" in refused.stderr and "the key file was swapped" in refused.stderr
    # offline verification says so too, even though every entry still verifies with the old key
    kept = tmp_path / "kept.pem"
    kept.write_bytes(original)
    result = verify(env, "--all", "--public-key", str(kept))
    assert result.returncode == 1 and "BROKEN: signing_key.pem (fingerprint" in result.stdout
    assert "is not the key the chain was started with" in result.stdout and "the key file was replaced" in result.stdout
    # an admin who runs it ungoverned on purpose sees governance reported broken
    kernel = serve_process(env={**env, "CORTEX_KERNEL__REQUIRED_PLUGINS": "[]"})
    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

    plugins = kernel_pb2_grpc.KernelServiceStub(channel_to(kernel.target)).ListPlugins(kernel_pb2.ListPluginsRequest(), timeout=5)
    governance = {p.name: p for p in plugins.plugins}["governance"]
    assert governance.state == kernel_pb2.Plugin.STATE_BROKEN and "the key file was swapped" in governance.error
    kernel.stop()
    # and a chain re-signed from scratch with another key fails against the published key
    pinned = tmp_path / "pinned.pem"
    pinned.write_bytes(original)
    forged_data = tmp_path / "forged"
    forged_env = cortex_env(forged_data)
    kernel = serve_process(env=forged_env)
    kernel.stop()
    result = verify(forged_env, "--all", "--public-key", str(pinned))
    assert result.returncode == 1
    assert "BROKEN at entry 1: the chain was started with key" in result.stdout
    assert "the key was swapped" in result.stdout


def test_verify_reports_a_missing_or_garbage_chain(tmp_path):
    env = cortex_env(tmp_path / "nothing")
    result = verify(env, "--all")
    assert result.returncode == 1 and "cannot open the chain" in result.stdout
    (tmp_path / "nothing" / "governance").mkdir(parents=True)
    (tmp_path / "nothing" / "governance" / "audit.db").write_bytes(b"not a database at all" * 100)
    result = verify(env, "--all")
    assert result.returncode == 1 and "BROKEN" in result.stdout


def test_a_callers_call_id_never_names_the_call(start_kernel, channel_to):
    """Three concurrent calls sending one x-cortex-call-id get three call ids and three proofs,
    each with its own decision; the caller's id is kept as their parent (trailers and audit)."""
    from concurrent.futures import ThreadPoolExecutor

    target, _ = start_kernel(governance=True)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target))

    def send(i):
        _, call = echo.Echo.with_call(
            echo_pb2.EchoRequest(message=f"n{i}"), timeout=5, metadata=(("x-cortex-call-id", "same-id"),)
        )
        return dict(call.trailing_metadata())

    with ThreadPoolExecutor(3) as pool:
        trailers = list(pool.map(send, range(3)))
    call_ids = {t["x-cortex-call-id"] for t in trailers}
    assert len(call_ids) == 3 and "same-id" not in call_ids
    assert {t["x-cortex-parent-call-id"] for t in trailers} == {"same-id"}
    for call_id in call_ids:
        proof = gov.GetProof(pb.GetProofRequest(id=call_id), timeout=5).entry.proof
        assert proof.call_id == call_id and proof.parent_call_id == "same-id"
        assert proof.decision.effect == pb.EFFECT_ALLOW and proof.status == "OK"


def test_positions_past_any_entry_find_nothing(start_kernel, channel_to):
    """Sequence numbers beyond SQLite's integers (a uint64 a client may send) find nothing; they
    once crashed the provider (INTERNAL, counted against its circuit)."""
    target, kt = start_kernel(governance=True)
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target))
    assert list(gov.ExportAudit(pb.ExportAuditRequest(from_seq=2**64 - 1), timeout=5)) == []
    with pytest.raises(grpc.RpcError) as err:
        gov.GetProof(pb.GetProofRequest(id="p-9999999999999999999"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert next(p for p in kt.kernel.registry.all_providers() if p.name == "governance").failures == 0
