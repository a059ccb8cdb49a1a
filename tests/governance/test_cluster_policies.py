"""Policies across a cluster: a policy added through kernel A is in force on kernel B (they share a
NATS event bus and trust each other's keys), and removed through B is gone on A; a kernel that was
down catches up when it starts; a change signed by a key no kernel was told to trust, or published
by anyone but a governance plugin, changes nothing."""

from __future__ import annotations

import base64
import json
import time

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc
from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.kernel.config import ConfigError
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import audit_entries, wait_for
from .test_cluster_checkpoints import on_nats

NO_ECHO = '[[rule]]\nid = "no-echo"\neffect = "deny"\nservices = ["cortex_echo.v1.EchoService"]\n'


def keys(tmp_path, names):
    """Each kernel's signing key made before it starts, so that each can be told the others'."""
    from cortex.plugins.governance.chain import load_or_create_key

    for name in names:
        load_or_create_key(tmp_path / name / "governance")
    return {name: str(tmp_path / name / "governance" / "public_key.pem") for name in names}


def kernel(serve_process, channel_to, tmp_path, nats_server, name, peers):
    env = on_nats(tmp_path / name, nats_server, CORTEX_PLUGINS__GOVERNANCE__POLICY_PEERS=json.dumps(peers))
    channel = channel_to(serve_process(env=env).target)
    return governance_pb2_grpc.GovernanceServiceStub(channel), echo_pb2_grpc.EchoServiceStub(channel), channel


def rules(stub) -> set[str]:
    return {r.id for r in stub.ListPolicies(pb.ListPoliciesRequest(), timeout=5).rules}


def denied(echo) -> bool:
    try:
        echo.Echo(echo_pb2.EchoRequest(message="hi"), timeout=5)
        return False
    except grpc.RpcError as err:
        return err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_policy_changed_through_one_kernel_is_in_force_on_every_kernel(serve_process, channel_to, nats_server, tmp_path):
    public = keys(tmp_path, ["a", "b", "c"])
    a, echo_a, _ = kernel(serve_process, channel_to, tmp_path, nats_server, "a", [public["b"], public["c"]])
    b, echo_b, _ = kernel(serve_process, channel_to, tmp_path, nats_server, "b", [public["a"], public["c"]])
    a.AddPolicy(pb.AddPolicyRequest(toml=NO_ECHO, name="no-echo"), timeout=5)
    added = time.monotonic()
    wait_for(lambda: denied(echo_b), "B to deny what A's new policy denies", timeout=10)
    took = time.monotonic() - added
    print(f"policy added on A in force on B after {took * 1000:.0f} ms")
    assert took < 5 and "no-echo" in rules(b)
    changes = [m.entry.policy_change for m in b.ExportAudit(pb.ExportAuditRequest(), timeout=5)
               if m.entry.HasField("policy_change")]
    assert [(c.action, c.rule.id) for c in changes] == [("add", "no-echo")] and "via kernel" in changes[0].principal

    # a kernel that starts later catches up; a removal through B is a removal everywhere
    c, echo_c, _ = kernel(serve_process, channel_to, tmp_path, nats_server, "c", [public["a"], public["b"]])
    wait_for(lambda: denied(echo_c), "C, started later, to catch up", timeout=10)
    b.RemovePolicy(pb.RemovePolicyRequest(id="no-echo"), timeout=5)
    for stub, echo in ((a, echo_a), (c, echo_c)):
        wait_for(lambda echo=echo: not denied(echo), "the removal to reach every kernel", timeout=10)
        assert "no-echo" not in rules(stub)


def test_a_change_no_trusted_kernel_signed_changes_nothing(serve_process, channel_to, nats_server, tmp_path):
    from cortex.plugins.governance.cluster_policies import signed_change

    public = keys(tmp_path, ["a", "b"])
    a, echo_a, channel = kernel(serve_process, channel_to, tmp_path, nats_server, "a", [public["b"]])
    bus = events_pb2_grpc.EventServiceStub(channel)
    stranger = Ed25519PrivateKey.generate()
    forged = signed_change(stranger, "add", {"name": "no-echo", "toml": NO_ECHO}, "admin")
    bus.Publish(events_pb2.PublishRequest(event=events_pb2.Event(type="policy.changed", data=forged)), timeout=5)
    # B's key, but published by an admin through the bus, not by a governance plugin: ignored too
    from cortex.plugins.governance.chain import load_or_create_key

    as_b = signed_change(load_or_create_key(tmp_path / "b" / "governance"), "add", {"name": "no-echo", "toml": NO_ECHO}, "x")
    bus.Publish(events_pb2.PublishRequest(event=events_pb2.Event(type="policy.changed", data=as_b)), timeout=5)
    # and a change B signed, altered on the way
    doc = json.loads(as_b)
    doc["change"]["toml"] = NO_ECHO.replace("no-echo", "tampered")
    bus.Publish(events_pb2.PublishRequest(event=events_pb2.Event(type="policy.changed", data=json.dumps(doc))), timeout=5)
    b, _, _ = kernel(serve_process, channel_to, tmp_path, nats_server, "b", [public["a"]])
    b.AddPolicy(pb.AddPolicyRequest(toml='[[rule]]\nid = "marker"\neffect = "allow"\nservices = ["x.v1.X"]\n'), timeout=5)
    wait_for(lambda: "marker" in rules(a), "B's genuine change to arrive after the forged ones", timeout=10)
    assert "no-echo" not in rules(a) and "tampered" not in rules(a) and not denied(echo_a)
    assert base64.b64decode(json.loads(forged)["key"])  # (a real signature, by a key no one trusts)


def test_policy_peers_must_be_kernel_public_keys(start_kernel, tmp_path):
    (tmp_path / "not-a-key.pem").write_text("hello")
    for peers, words in [(f'["{tmp_path / "missing.pem"}"]', "cannot read the public key"),
                         (f'["{tmp_path / "not-a-key.pem"}"]', "cannot read the public key"),
                         ('"one.pem"', "a list of public key files")]:
        with pytest.raises(ConfigError) as err:  # governance is required: the kernel will not serve without it
            start_kernel(f"[plugins.governance]\npolicy_peers = {peers}\n", governance=True)
        assert "policy_peers" in str(err.value) and words in str(err.value)


def test_what_a_kernel_does_with_each_published_change(start_kernel, tmp_path):
    """PolicySync.apply on a kernel's own governance: every kind of change, and every way one is
    not applied, says what became of it."""
    from cortex.plugins.governance.chain import load_or_create_key
    from cortex.plugins.governance.cluster_policies import PolicySync, raw, signed_change

    from ..conftest import plugin_of

    _, kt = start_kernel("", governance=True)
    gov = plugin_of(kt, "governance")
    peer = load_or_create_key(tmp_path / "peer")
    sync = PolicySync(gov, None, tmp_path, {raw(peer.public_key()): "kernel b"}, b"own key")

    def event(action: str, publisher: str = "plugin:governance", key=peer, **fields) -> events_pb2.Event:
        return events_pb2.Event(type="policy.changed", publisher=publisher, data=signed_change(key, action, fields, "admin"))

    def apply(ev, on=sync) -> str:
        async def on_the_kernels_loop() -> str:  # where the sync task applies them
            return on.apply(ev)

        return kt.run(on_the_kernels_loop())

    assert apply(event("add", name="no-echo", toml=NO_ECHO)) == "added no-echo from kernel b"
    assert apply(event("add", name="no-echo", toml=NO_ECHO)) == "already in force"
    assert apply(event("add", name="other", toml=NO_ECHO)).startswith("refused: rule id(s) no-echo already in force")
    assert apply(event("remove", rule_id="no-echo")) == "removed no-echo as kernel b did"
    assert apply(event("remove", rule_id="no-echo")) == "already removed"
    assert apply(event("rename", rule_id="x")) == "ignored: unknown action 'rename'"
    assert apply(event("add", name="x")) == "ignored: not a policy change"  # (no document)
    assert apply(events_pb2.Event(type="policy.changed", publisher="plugin:governance", data="{")) == "ignored: not a policy change"
    assert apply(event("add", publisher="admin", name="x", toml=NO_ECHO)).startswith("ignored: published by 'admin'")
    own = PolicySync(gov, None, tmp_path, {}, raw(peer.public_key()))
    assert apply(event("add", name="x", toml=NO_ECHO), on=own) == "ignored: this kernel's own change"
    changes = [e.policy_change for e in audit_entries(kt) if e.HasField("policy_change")]
    assert [(c.action, c.rule.id, c.principal) for c in changes] == [
        ("add", "no-echo", "admin via kernel b"), ("remove", "no-echo", "admin via kernel b")]
