"""The audit log's edges: signed checkpoints (Merkle tree heads) catch entries removed from its
end or rewritten below them; stored columns are never trusted; secrets are owner-only."""

from __future__ import annotations

import itertools
import json
import sqlite3
import stat

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc
from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.plugins.governance.chain import SIGNED, entry_hash
from cortex.plugins.governance.merkle import tree_hash
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import run_cli, wait_for
from .test_evidence import echo_calls_then_stop

CALLS = 30


@pytest.fixture
def stopped_log(tmp_path, serve_process, channel_to):
    """A data dir whose log holds CALLS echo calls (one entry each: its proof); the kernel has stopped."""
    data = tmp_path / "data"
    env, call_ids = echo_calls_then_stop(data, serve_process, channel_to, CALLS)
    return data, env, call_ids


def verify(env, *args):
    return run_cli("proofs", "verify", "--all", *args, env=env)


def export_checkpoint(env, path):
    result = run_cli("proofs", "checkpoint", "--out", str(path), env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(path.read_text())


def db_of(data):
    return sqlite3.connect(data / "governance" / "audit.db")


def test_a_checkpoint_is_the_merkle_root_of_the_log_and_verifies(stopped_log, tmp_path):
    data, env, _ = stopped_log
    kept = export_checkpoint(env, tmp_path / "cp.json")
    db = db_of(data)
    hashes = [pb.AuditEntry.FromString(b).hash for (b,) in db.execute("SELECT body FROM entries ORDER BY seq")]
    assert int(kept["size"]) == len(hashes) > CALLS
    cp = pb.Checkpoint()
    from google.protobuf import json_format

    json_format.ParseDict(kept, cp)
    assert cp.root_hash == tree_hash(hashes)  # RFC 9162's MTH over the entry hashes
    result = verify(env, "--checkpoint", str(tmp_path / "cp.json"))
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith(f"OK: {len(hashes)} entries verified")


def stolen_key(data):
    return serialization.load_pem_private_key((data / "governance" / "signing_key.pem").read_bytes(), None)


def rewrite_a_proof(db, key, after: int = 5) -> None:
    """Edit a proof past entry `after`, then re-hash, re-link and re-sign everything after it
    with `key`: the chain stays consistent in itself (its stored head is not re-signed)."""
    entries = [pb.AuditEntry.FromString(b) for (b,) in db.execute("SELECT body FROM entries ORDER BY seq")]
    target = next(e for e in entries[after:] if e.HasField("proof"))
    target.proof.principal = "someone-innocent"
    prev = entries[target.seq - 2].hash
    for entry in entries[target.seq - 1 :]:
        entry.prev_hash = prev
        entry.hash = entry_hash(entry)
        if entry.WhichOneof("body") in SIGNED:
            entry.signature = key.sign(entry.hash)
        prev = entry.hash
        db.execute("UPDATE entries SET body = ?, hash = ? WHERE seq = ?", (entry.SerializeToString(), entry.hash, entry.seq))
    db.commit()


def resign_head(db, key) -> None:
    """What an attacker holding the signing key does after rewriting the log: sign a new head."""
    from cortex.plugins.governance.chain import checkpoint_note
    from cortex.plugins.governance.merkle import Frontier

    tree = Frontier().extend(h for (h,) in db.execute("SELECT hash FROM entries ORDER BY seq"))
    head = pb.Checkpoint(size=tree.size, root_hash=tree.root(), time_unix_nanos=1)
    head.signature = key.sign(checkpoint_note(head))
    db.execute("INSERT OR REPLACE INTO tree_head(id, body, frontier) VALUES (1, ?, ?)", (head.SerializeToString(), tree.to_bytes()))
    db.execute("DELETE FROM checkpoints")
    db.commit()


def test_deleting_the_last_entries_is_caught(stopped_log, tmp_path):
    data, env, _ = stopped_log
    export_checkpoint(env, tmp_path / "cp.json")
    db = db_of(data)
    size = db.execute("SELECT MAX(seq) FROM entries").fetchone()[0]
    db.execute("DELETE FROM entries WHERE seq > ?", (size - 20,))
    db.commit()
    # the log's own signed tree head gives it away...
    result = verify(env)
    assert result.returncode == 1
    assert (f"BROKEN at entry {size - 19}: the newest signed tree head covers {size} entries, but the log has {size - 20}: "
            f"entries {size - 19} to {size} were removed from its end") in result.stdout
    # ...without it, nothing covers the log...
    db.execute("DELETE FROM tree_head")
    db.commit()
    assert "no signed tree head covers the log" in verify(env).stdout
    # ...and when the attacker holds the key and signs a head for what is left, the copy kept elsewhere does
    resign_head(db, stolen_key(data))
    assert verify(env).returncode == 0  # the remaining chain is consistent in itself
    result = verify(env, "--checkpoint", str(tmp_path / "cp.json"))
    assert result.returncode == 1
    assert f"BROKEN at entry {size - 19}: the checkpoint you gave says the log had {size} entries" in result.stdout
    assert f"entries {size - 19} to {size} were removed from its end" in result.stdout


def test_a_log_rewritten_with_the_stolen_key_is_caught_by_a_kept_checkpoint(stopped_log, tmp_path):
    """The worst case: the attacker holds the signing key, edits an entry, re-hashes, re-links and
    re-signs everything after it, and deletes the stored checkpoints. The chain is consistent in
    itself; a checkpoint kept elsewhere is not."""
    data, env, _ = stopped_log
    export_checkpoint(env, tmp_path / "cp.json")
    key = stolen_key(data)
    db = db_of(data)
    rewrite_a_proof(db, key)
    # without the key the rewrite is caught, and narrowed to the entries between two signed heads
    result = verify(env)
    assert result.returncode == 1 and "no longer have the Merkle root the newest signed tree head signed" in result.stdout
    resign_head(db, key)
    assert verify(env).returncode == 0  # with it, nothing inside the data dir can tell
    result = verify(env, "--checkpoint", str(tmp_path / "cp.json"))
    assert result.returncode == 1
    assert "no longer have the Merkle root the checkpoint you gave signed: entries up to it were rewritten" in result.stdout


def test_a_checkpoint_signed_by_another_key_is_refused(stopped_log, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cortex.plugins.governance.chain import checkpoint_note

    _, env, _ = stopped_log
    kept = export_checkpoint(env, tmp_path / "cp.json")
    from google.protobuf import json_format

    cp = json_format.ParseDict(kept, pb.Checkpoint())
    cp.public_key = b""
    cp.signature = Ed25519PrivateKey.generate().sign(checkpoint_note(cp))
    (tmp_path / "forged.json").write_text(json_format.MessageToJson(cp))
    result = verify(env, "--checkpoint", str(tmp_path / "forged.json"))
    assert result.returncode == 1 and "its signature is not valid for key" in result.stdout
    (tmp_path / "junk.json").write_text("{not json")
    result = verify(env, "--checkpoint", str(tmp_path / "junk.json"))
    assert result.returncode == 1 and "is not a checkpoint written by `cortex proofs checkpoint --out`" in result.stderr


def test_edited_columns_are_caught_and_never_trusted(stopped_log, start_kernel, channel_to):
    data, env, call_ids = stopped_log
    db = db_of(data)
    victim = db.execute("SELECT seq FROM entries WHERE call_id = ? AND kind = 'proof'", (call_ids[3],)).fetchone()[0]
    # point another call's id at this proof: a lookup by that id must not return it
    db.execute("UPDATE entries SET call_id = ? WHERE seq = ?", (call_ids[7], victim))
    db.commit()
    result = verify(env)
    assert result.returncode == 1
    assert f"BROKEN at entry {victim}: its stored kind, call_id or hash column does not match" in result.stdout
    shown = run_cli("proofs", "show", call_ids[7], env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["proof"]["call_id"] == call_ids[7]
    db.execute("UPDATE entries SET call_id = ? WHERE seq = ?", (call_ids[3], victim))
    db.execute("UPDATE entries SET kind = 'decision' WHERE seq = ?", (victim,))
    db.commit()
    result = verify(env)
    assert result.returncode == 1 and f"BROKEN at entry {victim}: its stored kind" in result.stdout


def test_the_kernel_signs_checkpoints_as_the_log_grows(start_kernel, channel_to):
    target, kt = start_kernel("[plugins.governance]\ncheckpoint_every = 10\n", governance=True)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target))
    for i in range(25):
        echo.Echo(echo_pb2.EchoRequest(message=str(i)), timeout=5)
    chain = kt.kernel.host.records["governance"].obj.chain
    wait_for(lambda: len(chain.checkpoints()) >= 2, "a checkpoint kept every 10 entries")
    stored = chain.checkpoints()
    assert len(stored) >= 2 and all(b.size - a.size >= 10 for a, b in itertools.pairwise(stored[1:]))
    # each is on the event bus too, for a webhook or a subscriber elsewhere to keep
    events = events_pb2_grpc.EventServiceStub(channel_to(target))
    sizes = [c.size for c in stored]
    wait_for(lambda: [int(json.loads(e.data)["size"]) for e in _checkpoint_events(events)][: len(sizes)] == sizes,
             "every checkpoint published as audit.checkpoint")
    before = chain.frontier.size
    latest = gov.GetCheckpoint(pb.GetCheckpointRequest(), timeout=5).checkpoint
    assert latest.size >= before  # the log as it was when asked (the call's own entries come after)
    hashes = [h for (h,) in chain.db.execute("SELECT hash FROM entries WHERE seq <= ? ORDER BY seq", (latest.size,))]
    assert latest.root_hash == tree_hash(hashes)


def _checkpoint_events(events) -> list:
    """The audit.checkpoint events so far (the subscription is endless: read what is there)."""
    found: list = []
    stream = events.Subscribe(events_pb2.SubscribeRequest(topics=["audit.checkpoint"]), timeout=1)
    with pytest.raises(grpc.RpcError) as ended:
        found.extend(m.event for m in stream)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    return found


def test_secrets_in_the_data_dir_are_owner_only(stopped_log):
    data, _, _ = stopped_log
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("governance/audit.db", "governance/signing_key.pem", "admin.token"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((data / "governance").stat().st_mode) == 0o700


def test_a_proof_carries_its_place_in_the_log(stopped_log, start_kernel, channel_to, tmp_path):
    """A call's proof includes its RFC 9162 inclusion proof against a signed checkpoint, online and
    offline; `verify ID --checkpoint FILE` proves the call was logged when that checkpoint was signed."""
    import base64

    from cortex.plugins.governance.chain import inclusion_problem

    data, env, call_ids = stopped_log
    shown = json.loads(run_cli("proofs", "show", call_ids[2], env=env).stdout)
    cp = pb.Checkpoint(size=int(shown["checkpoint"]["size"]), root_hash=base64.b64decode(shown["checkpoint"]["root_hash"]))
    entry = pb.AuditEntry(seq=int(shown["seq"]), hash=base64.b64decode(shown["hash"]))
    proof = [base64.b64decode(h) for h in shown["inclusion"]]
    assert inclusion_problem(entry, cp, proof) == ""
    assert "not in the log" in inclusion_problem(entry, cp, [bytes(32), *proof[1:]])
    export_checkpoint(env, tmp_path / "cp.json")
    ok = run_cli("proofs", "verify", call_ids[2], "--checkpoint", str(tmp_path / "cp.json"), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # a neighbour's stored hash altered: the path built from the log no longer reaches the signed root
    db = db_of(data)
    seq = int(shown["seq"])
    db.execute("UPDATE entries SET hash = ? WHERE seq = ?", (bytes(32), seq - 1))
    db.commit()
    refused = run_cli("proofs", "verify", call_ids[2], "--checkpoint", str(tmp_path / "cp.json"), env=env)
    assert refused.returncode == 1 and "is not in the log the checkpoint of" in refused.stdout


def test_get_proof_signs_a_checkpoint_that_covers_the_call(start_kernel, channel_to):
    from cortex.plugins.governance.chain import checkpoint_problem, inclusion_problem

    target, kt = start_kernel(governance=True)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    _, call = echo.Echo.with_call(echo_pb2.EchoRequest(message="x"), timeout=5)
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target))
    reply = gov.GetProof(pb.GetProofRequest(id=dict(call.trailing_metadata())["x-cortex-call-id"]), timeout=5)
    assert reply.checkpoint.size >= reply.entry.seq
    key = kt.kernel.host.records["governance"].obj.chain.public_key()
    assert checkpoint_problem(reply.checkpoint, key) == ""
    assert inclusion_problem(reply.entry, reply.checkpoint, list(reply.inclusion)) == ""
