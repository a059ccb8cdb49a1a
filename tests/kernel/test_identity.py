"""Identities come from credentials, never from claims: the cases a hostile client tried, each now
refused, against a real governed kernel on loopback; API keys, act_as, require_credentials."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.governance.v1 import governance_pb2 as gpb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
from cortex.kernel.security.credentials import KeyStore
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import audit_entries, bearer, cortex_env, run_cli

POLICY = '[[rule]]\nid = "x"\neffect = "allow"\n'


def code_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kwargs)
    return err.value.code(), err.value.details()


@pytest.fixture
def governed(start_kernel, channel_to, data_dir):
    target, kt = start_kernel(governance=True)
    anonymous = channel_to(target, as_admin=False)
    return target, kt, anonymous


def test_an_unauthenticated_caller_is_local_whatever_it_claims(governed, data_dir):
    _, kt, anonymous = governed
    gov = governance_pb2_grpc.GovernanceServiceStub(anonymous)
    echo = echo_pb2_grpc.EchoServiceStub(anonymous)
    # what local may do by default: the read-only kernel service, memories, models, Cerebrum, events
    kernel_pb2_grpc.KernelServiceStub(anonymous).GetInfo(kernel_pb2.GetInfoRequest(), timeout=5)
    memories_pb2_grpc.MemoryServiceStub(anonymous).Stats(memories_pb2.StatsRequest(), timeout=5)
    # and not more
    code, details = code_of(echo.Echo, echo_pb2.EchoRequest(message="x"), timeout=5)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "builtin/local-default" in details
    code, details = code_of(gov.AddPolicy, gpb.AddPolicyRequest(toml=POLICY), timeout=5)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "builtin/local-never-administers" in details
    # naming oneself admin (or anyone) without a credential that may act for others is refused
    for claimed in ("cli:root", "admin", "kernel", "mcp:editor"):
        code, details = code_of(
            gov.AddPolicy, gpb.AddPolicyRequest(toml=POLICY), timeout=5, metadata=(("x-cortex-principal", claimed),)
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED, claimed
        assert "honoured only from a credential with the act_as scope; this caller is local" in details
    assert not list((data_dir / "policies").glob("*.toml"))
    # what was recorded is who it was, not what it said
    principals = {e.call.principal for e in audit_entries(kt) if e.HasField("call") and not e.call.principal.startswith("plugin:")}
    assert principals <= {"local", "admin"} and "local" in principals


def test_a_deny_on_a_principal_cannot_be_dodged_by_renaming(governed, channel_to):
    target, _, _ = governed
    admin = governance_pb2_grpc.GovernanceServiceStub(channel_to(target))
    admin.AddPolicy(gpb.AddPolicyRequest(
        toml='[[rule]]\nid = "no-mcp-memories"\neffect = "deny"\nservices = ["cortex.memories.v1.*"]\nprincipals = ["mcp:*"]\n'
    ), timeout=5)
    store = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    as_mcp = (("x-cortex-principal", "mcp:editor"),)  # the admin acting for an MCP client: the rule holds
    code, _ = code_of(store.Stats, memories_pb2.StatsRequest(), timeout=5, metadata=as_mcp)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    anonymous = memories_pb2_grpc.MemoryServiceStub(channel_to(target, as_admin=False))
    code, _ = code_of(anonymous.Stats, memories_pb2.StatsRequest(), timeout=5, metadata=(("x-cortex-principal", "cli:root"),))
    assert code == grpc.StatusCode.PERMISSION_DENIED  # re-sending as someone else does not get around it


def test_api_keys_scoped_expired_revoked(governed, channel_to, data_dir):
    target, _, anonymous = governed
    env = cortex_env(data_dir)
    made = run_cli("keys", "create", "reader", "--scope", "cortex.memories.v1.MemoryService/Search",
                   "--scope", "cortex.memories.v1.MemoryService/Stats", env=env)
    assert made.returncode == 0, made.stderr
    reader = made.stdout.strip()
    assert reader.startswith("ctx_") and reader not in (data_dir / "credentials.db").read_bytes().decode("latin-1")
    memories = memories_pb2_grpc.MemoryServiceStub(anonymous)
    assert memories.Stats(memories_pb2.StatsRequest(), timeout=5, metadata=bearer(reader)) is not None  # scoped allow
    code, details = code_of(memories.Store, memories_pb2.StoreRequest(text="x"), timeout=5, metadata=bearer(reader))
    assert code == grpc.StatusCode.PERMISSION_DENIED  # scoped deny
    assert "key:reader may call only cortex.memories.v1.MemoryService/Search" in details
    # the proof names the key
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target))
    _, call = memories.Stats.with_call(memories_pb2.StatsRequest(), timeout=5, metadata=bearer(reader))
    proof = gov.GetProof(gpb.GetProofRequest(id=dict(call.trailing_metadata())["x-cortex-call-id"]), timeout=5)
    assert proof.entry.proof.principal == "key:reader" and proof.entry.proof.actor == ""
    # a policy rule matches on the key like any principal
    gov.AddPolicy(gpb.AddPolicyRequest(toml='[[rule]]\nid = "r"\neffect = "deny"\nprincipals = ["key:reader"]\n'), timeout=5)
    code, details = code_of(memories.Stats, memories_pb2.StatsRequest(), timeout=5, metadata=bearer(reader))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "r: denied" in details
    # expired
    store = KeyStore(data_dir)
    expiring = store.create("soon", [], expires=__import__("time").time() + 0.5)
    __import__("time").sleep(0.6)
    code, details = code_of(memories.Stats, memories_pb2.StatsRequest(), timeout=5, metadata=bearer(expiring))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "key 'soon' expired at" in details
    # revoked: refused at its next call, no restart
    other = store.create("other", [])
    assert memories.Stats(memories_pb2.StatsRequest(), timeout=5, metadata=bearer(other)) is not None
    assert run_cli("keys", "revoke", "other", env=env).returncode == 0
    code, details = code_of(memories.Stats, memories_pb2.StatsRequest(), timeout=5, metadata=bearer(other))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "key 'other' was revoked" in details
    # unknown, and not a bearer token at all
    for junk in (bearer("ctx_nope"), (("authorization", "Basic abc"),)):
        code, _ = code_of(memories.Stats, memories_pb2.StatsRequest(), timeout=5, metadata=junk)
        assert code == grpc.StatusCode.UNAUTHENTICATED
    listed = run_cli("keys", "list", "--json", env=env)
    names = {k["name"]: k for k in __import__("json").loads(listed.stdout)}
    assert set(names) == {"reader", "soon", "other"} and names["other"]["revoked"] != "-"
    assert reader not in listed.stdout


def test_a_gateway_acts_for_its_users_and_both_are_audited(governed, channel_to, data_dir):
    target, _, anonymous = governed
    store = KeyStore(data_dir)
    gateway, plain = store.create("gateway", ["act_as"]), store.create("plain", [])
    memories = memories_pb2_grpc.MemoryServiceStub(anonymous)
    as_alice = (*bearer(gateway), ("x-cortex-principal", "user:alice"))
    _, call = memories.Stats.with_call(memories_pb2.StatsRequest(), timeout=5, metadata=as_alice)
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target))
    proof = gov.GetProof(gpb.GetProofRequest(id=dict(call.trailing_metadata())["x-cortex-call-id"]), timeout=5).entry.proof
    assert (proof.principal, proof.actor) == ("user:alice", "key:gateway")
    # a key without act_as may not name anyone; nobody may be made admin, local, a key or a plugin
    code, details = code_of(memories.Stats, memories_pb2.StatsRequest(), timeout=5,
                            metadata=(*bearer(plain), ("x-cortex-principal", "user:alice")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "this caller is key:plain (api key)" in details
    for reserved in ("admin", "local", "key:plain", "plugin:memories", "node:box"):
        code, _ = code_of(memories.Stats, memories_pb2.StatsRequest(), timeout=5,
                          metadata=(*bearer(gateway), ("x-cortex-principal", reserved)))
        assert code == grpc.StatusCode.PERMISSION_DENIED, reserved


def test_require_credentials_refuses_local_callers(start_kernel, channel_to):
    target, _ = start_kernel("[kernel]\nrequire_credentials = true\n", governance=True)
    code, details = code_of(
        kernel_pb2_grpc.KernelServiceStub(channel_to(target, as_admin=False)).GetInfo, kernel_pb2.GetInfoRequest(), timeout=5
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "this kernel requires a credential (kernel.require_credentials)" in details
    assert kernel_pb2_grpc.KernelServiceStub(channel_to(target)).GetInfo(kernel_pb2.GetInfoRequest(), timeout=5).version


def test_the_cli_calls_as_admin_with_the_data_dirs_token(governed, data_dir, tmp_path):
    target, _, _ = governed
    policy = tmp_path / "cli-added.toml"
    policy.write_text('[[rule]]\nid = "cli-added"\neffect = "allow"\n')
    added = run_cli("policy", "add", str(policy), env=cortex_env(data_dir, CORTEX_TARGET=target))
    assert added.returncode == 0, added.stderr
    policy.write_text('[[rule]]\nid = "x2"\neffect = "allow"\n')
    elsewhere = cortex_env(tmp_path / "no-token-here", CORTEX_TARGET=target)
    refused = run_cli("policy", "add", str(policy), env=elsewhere)
    assert refused.returncode == 1 and "builtin/local-never-administers" in refused.stderr
