"""Policies over gRPC: built-in defaults, custom rules, explain, and policy changes."""

from __future__ import annotations

import hashlib
import json
import textwrap

import grpc
import pytest

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import cortex_env, run_cli
from ..counter_contract import CounterPlugin, CounterServicer, counter_stub

MODELS = "cortex.models.v1.ModelService"
DENY, ALLOW = pb.EFFECT_DENY, pb.EFFECT_ALLOW


@pytest.fixture
def gov(start_kernel, channel_to):
    """gov(config="", plugins=None) -> (GovernanceService stub, target, KernelThread)."""

    def start(config: str = "", plugins=None):
        target, kt = start_kernel(textwrap.dedent(config), plugins, governance=True)
        return governance_pb2_grpc.GovernanceServiceStub(channel_to(target)), target, kt

    return start


def explain(stub, method="Generate", provider="mlx", local=True, **extra):
    call = pb.CallDescription(service=MODELS, method=method, principal="cli:me", provider=provider, provider_local=local, **extra)
    return stub.Evaluate(pb.EvaluateRequest(call=call), timeout=5).decision


def test_local_first_default_denies_remote_inference_and_allows_mlx(gov):
    stub, _, _ = gov()
    assert explain(stub, fields={"local_only": "true"}).effect == ALLOW  # MLX is local
    remote = explain(stub, provider="openai", local=False, fields={"local_only": "true"})
    assert remote.effect == DENY and list(remote.rule_ids) == ["builtin/local-first-local-only"]
    assert explain(stub, provider="openai", local=False).effect == ALLOW  # privacy off, not local-only


def test_privacy_mode_denies_remote_inference_unless_a_rule_allows_it(gov):
    stub, _, _ = gov(
        """
        [kernel]
        privacy_mode = true
        [[plugins.governance.rule]]
        id = "embeddings-may-use-the-lab-server"
        effect = "allow"
        methods = ["Embed"]
        principals = ["cli:*"]
        """
    )
    generate = explain(stub, provider="ollama-cloud", local=False)
    assert generate.effect == DENY and list(generate.rule_ids) == ["builtin/local-first-privacy"]
    embed = explain(stub, method="Embed", provider="ollama-cloud", local=False)
    assert embed.effect == ALLOW and list(embed.rule_ids) == ["embeddings-may-use-the-lab-server"]


def test_private_data_never_goes_to_a_remote_provider(gov, channel_to, counter_pb2):
    cloud, laptop = CounterServicer(counter_pb2, "cloud"), CounterServicer(counter_pb2, "laptop")
    plugins = [("cloud", CounterPlugin(counter_pb2, cloud, local=False)), ("laptop", CounterPlugin(counter_pb2, laptop))]
    stub, target, _ = gov('[routing."cortex_test.v1.CounterService"]\norder = ["cloud", "laptop"]\n', plugins)
    counter = counter_stub(channel_to, target, counter_pb2)
    private = (("x-cortex-labels", "private"),)
    reply, call = counter.Get.with_call(counter_pb2.GetRequest(), timeout=5, metadata=private)
    assert reply.provider == "laptop" and cloud.calls == 0
    assert dict(call.trailing_metadata())["x-cortex-route"] == "cloud:skipped,laptop:ok"
    assert counter.Get(counter_pb2.GetRequest(), timeout=5).provider == "cloud"  # not private: allowed
    decision = explain(stub, provider="openai", local=False, labels=["private"])
    assert decision.effect == DENY and "builtin/private-stays-local" in decision.rule_ids
    # an allow rule cannot override it
    added = stub.AddPolicy(
        pb.AddPolicyRequest(toml='[[rule]]\nid = "everything"\neffect = "allow"\n'), timeout=5
    )
    assert [r.id for r in added.rules] == ["everything"]
    assert explain(stub, provider="openai", local=False, labels=["private"]).effect == DENY


def test_a_rule_file_in_the_data_dir_denies_and_the_router_fails_over(gov, channel_to, counter_pb2, data_dir):
    (data_dir / "policies").mkdir(parents=True)
    (data_dir / "policies" / "team.toml").write_text(
        textwrap.dedent(
            """
            [[rule]]
            id = "no-remote-counting"
            description = "counting stays on this machine"
            effect = "deny"
            services = ["cortex_test.v1.*"]
            provider = "remote"
            """
        )
    )
    cloud, laptop = CounterServicer(counter_pb2, "cloud"), CounterServicer(counter_pb2, "laptop")
    plugins = [("cloud", CounterPlugin(counter_pb2, cloud, local=False)), ("laptop", CounterPlugin(counter_pb2, laptop))]
    stub, target, _ = gov('[routing."cortex_test.v1.CounterService"]\norder = ["cloud", "laptop"]\n', plugins)
    counter = counter_stub(channel_to, target, counter_pb2)
    assert counter.Add(counter_pb2.AddRequest(amount=3), timeout=5).provider == "laptop"
    assert cloud.calls == 0
    rules = {r.id: r for r in stub.ListPolicies(pb.ListPoliciesRequest(), timeout=5).rules}
    assert rules["no-remote-counting"].source == str(data_dir / "policies" / "team.toml")
    assert "builtin/private-stays-local" in rules


def test_a_denied_call_names_the_rules(gov, channel_to):
    _stub, target, _ = gov(
        """
        [[plugins.governance.rule]]
        id = "quiet-hours"
        description = "no echoing from scripts"
        effect = "deny"
        services = ["cortex_echo.*"]
        principals = ["script:*"]
        """
    )
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    with pytest.raises(grpc.RpcError) as err:
        echo.Echo(echo_pb2.EchoRequest(message="hi"), timeout=5, metadata=(("x-cortex-principal", "script:nightly"),))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "quiet-hours: no echoing from scripts" in err.value.details()
    assert echo.Echo(echo_pb2.EchoRequest(message="hi"), timeout=5).message == "hi"


def test_add_and_remove_policies_are_governed_and_audited(gov, channel_to):
    stub, target, kt = gov()
    toml = '[[rule]]\nid = "no-echo"\neffect = "deny"\nservices = ["cortex_echo.v1.EchoService"]\n'
    added = stub.AddPolicy(pb.AddPolicyRequest(toml=toml, name="no-echo"), timeout=5)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    with pytest.raises(grpc.RpcError) as err:
        echo.Echo(echo_pb2.EchoRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        stub.AddPolicy(pb.AddPolicyRequest(toml=toml, name="again"), timeout=5)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert stub.RemovePolicy(pb.RemovePolicyRequest(id="no-echo"), timeout=5).removed.id == "no-echo"
    assert not (kt.kernel.config.data_dir / "policies" / "no-echo.toml").exists()
    assert echo.Echo(echo_pb2.EchoRequest(message="free"), timeout=5).message == "free"
    changes = [
        (e.policy_change.action, e.policy_change.rule.id, e.policy_change.principal)
        for e in (m.entry for m in stub.ExportAudit(pb.ExportAuditRequest(), timeout=5))
        if e.HasField("policy_change")
    ]
    assert [(a, r) for a, r, _ in changes] == [("add", "no-echo"), ("remove", "no-echo")]
    assert all(p == "admin" for _, _, p in changes)
    assert added.path.endswith("policies/no-echo.toml")


def test_plugins_and_mcp_clients_may_not_change_policies(gov):
    stub, _, _ = gov()
    with pytest.raises(grpc.RpcError) as err:
        stub.AddPolicy(
            pb.AddPolicyRequest(toml='[[rule]]\nid = "x"\neffect = "allow"\n'),
            timeout=5, metadata=(("x-cortex-principal", "mcp:editor"),),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "builtin/policy-admin" in err.value.details()


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.AddPolicyRequest(toml=""), grpc.StatusCode.INVALID_ARGUMENT, "toml is empty"),
        (pb.AddPolicyRequest(toml="# only a comment\n"), grpc.StatusCode.INVALID_ARGUMENT, "holds no [[rule]] table"),
        (pb.AddPolicyRequest(toml="#" * 300_000), grpc.StatusCode.INVALID_ARGUMENT, "KiB; split it"),
        (
            pb.AddPolicyRequest(toml='[[rule]]\nid = "a"\neffect = "allow"\nwhen = 3\n'),
            grpc.StatusCode.INVALID_ARGUMENT, "request:4: unknown field(s) when",
        ),
        (pb.AddPolicyRequest(toml='[[rule]]\nid = "a"\neffect = maybe\n'), grpc.StatusCode.INVALID_ARGUMENT, "request:3: invalid TOML"),
        (pb.AddPolicyRequest(toml='[[rule]]\nid = "a"\neffect = "perhaps"\n'), grpc.StatusCode.INVALID_ARGUMENT, "'effect' must be"),
        (
            pb.AddPolicyRequest(toml='[[rule]]\nid = "builtin/policy-admin"\neffect = "allow"\n'),
            grpc.StatusCode.ALREADY_EXISTS, "already in force",
        ),
        (
            pb.AddPolicyRequest(toml='[[rule]]\nid = "a"\neffect = "allow"\n', name="../escape"),
            grpc.StatusCode.INVALID_ARGUMENT, "use letters",
        ),
    ],
)
def test_bad_policies_are_refused_and_nothing_changes(gov, request_, code, message):
    stub, _, _ = gov()
    before = stub.ListPolicies(pb.ListPoliciesRequest(), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        stub.AddPolicy(request_, timeout=5)
    assert err.value.code() == code
    assert message in err.value.details()
    assert stub.ListPolicies(pb.ListPoliciesRequest(), timeout=5) == before


def test_remove_refuses_built_in_and_unknown_rules(gov):
    stub, _, _ = gov()
    with pytest.raises(grpc.RpcError) as err:
        stub.RemovePolicy(pb.RemovePolicyRequest(id="builtin/private-stays-local"), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        stub.RemovePolicy(pb.RemovePolicyRequest(id="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_bad_policy_file_dropped_in_keeps_the_rules_in_force(gov, channel_to):
    stub, target, kt = gov()
    stub.AddPolicy(pb.AddPolicyRequest(toml='[[rule]]\nid = "no-now"\neffect = "deny"\nmethods = ["Now"]\n'), timeout=5)
    before = stub.ListPolicies(pb.ListPoliciesRequest(), timeout=5)
    bad = kt.kernel.config.data_dir / "policies" / "broken.toml"
    bad.write_text('[[rule]]\nid = "oops"\neffect = "deny"\nsevrices = ["x"]\n')
    kt.run(kt.kernel.refresh_health())  # the periodic health probe notices changed files
    assert stub.ListPolicies(pb.ListPoliciesRequest(), timeout=5) == before
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    status = health_pb2_grpc.HealthStub(channel_to(target)).Check(
        health_pb2.HealthCheckRequest(service="cortex.governance.v1.GovernanceService"), timeout=5
    )
    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    detail = next(p for p in kt.kernel.registry.all_providers() if p.name == "governance").health.detail
    assert f"{bad}:4: unknown field(s) sevrices" in detail
    bad.unlink()
    kt.run(kt.kernel.refresh_health())
    assert next(p for p in kt.kernel.registry.all_providers() if p.name == "governance").health.serving


def test_policy_explain_from_the_cli(tmp_path, serve_process):
    env = cortex_env(tmp_path / "data")
    kernel = serve_process(env=env)
    result = run_cli(
        "policy", "explain", f"{MODELS}/Generate", "--remote", "--provider", "openai",
        "--field", "local_only=true", "--target", kernel.target, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DENY")
    assert "builtin/local-first-local-only" in result.stdout
    listed = json.loads(run_cli("policy", "list", "--json", "--target", kernel.target, env=env).stdout)
    assert {"builtin/local-first-privacy", "builtin/private-stays-local"} <= {r["id"] for r in listed["rules"]}
    bad = tmp_path / "mine.toml"
    bad.write_text('[[rule]]\nid = "x"\neffect = "allow"\nprovider = "cloud"\n')
    result = run_cli("policy", "add", str(bad), "--target", kernel.target, env=env)
    assert result.returncode == 1 and f"{bad}:4: rule x: 'provider' must be local, remote or any" in result.stderr


def test_request_and_response_hashes_are_canonical(gov, channel_to):
    stub, target, _ = gov()
    request = echo_pb2.EchoRequest(message="prove it", upper=True)
    reply, call = echo_pb2_grpc.EchoServiceStub(channel_to(target)).Echo.with_call(request, timeout=5)
    call_id = dict(call.trailing_metadata())["x-cortex-call-id"]
    proof = stub.GetProof(pb.GetProofRequest(id=call_id), timeout=5)
    p = proof.entry.proof
    assert (p.call_id, p.service, p.method, p.provider, p.status) == (call_id, "cortex_echo.v1.EchoService", "Echo", "echo", "OK")
    assert p.request_sha256 == hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
    assert p.response_sha256 == hashlib.sha256(reply.SerializeToString(deterministic=True)).digest()
    assert p.decision.effect == ALLOW
    assert proof.proof_id == f"p-{proof.entry.seq}"


def test_a_plugin_may_call_only_what_its_manifest_declares(start_kernel):
    """A plugin with no `cortex.calls` manifest asks for memories: denied, and told which entry
    point to add."""
    from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
    from cortex.kernel import hookimpl

    class Nosy:
        channel = None

        @hookimpl
        async def cortex_start(self, context):
            Nosy.channel = context.channel

    _, kt = start_kernel("", [("nosy", Nosy())], governance=True)
    stub = memories_pb2_grpc.MemoryServiceStub(Nosy.channel)
    with pytest.raises(grpc.RpcError) as err:
        kt.run(stub.Search(memories_pb2.SearchRequest(query="secrets", top_k=1), timeout=10))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "plugin 'nosy' may not call cortex.memories.v1.MemoryService" in err.value.details()
    assert '"nosy.cortex.memories.v1.MemoryService"' in err.value.details() and "cortex.calls" in err.value.details()


def test_governance_fails_closed(tmp_path, data_dir):
    """A kernel that cannot govern does not serve: governance broken (its signing key swapped for
    one that did not start the chain) or disabled, `cortex serve` exits naming it; an admin who
    empties kernel.required_plugins runs ungoverned on purpose."""
    from ..conftest import cortex_env, run_cli

    env = cortex_env(data_dir)
    first = run_cli("serve", "--listen", "127.0.0.1:0", env={**env, "CORTEX_KERNEL__REQUIRED_PLUGINS": '["nope"]'})
    assert first.returncode == 1 and "'nope' is not installed" in first.stderr
    disabled = run_cli("serve", "--listen", "127.0.0.1:0", env={**env, "CORTEX_PLUGINS__DISABLED": '["governance"]'})
    assert disabled.returncode == 1 and "'governance' is disabled" in disabled.stderr
    assert "remove it from kernel.required_plugins" in disabled.stderr

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cortex.plugins.governance.chain import AuditChain, load_or_create_key

    folder = data_dir / "governance"
    AuditChain(folder / "audit.db", load_or_create_key(folder)).close()  # a chain started with one key
    (folder / "signing_key.pem").write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    broken = run_cli("serve", "--listen", "127.0.0.1:0", env=env)
    assert broken.returncode == 1 and "'governance' is broken" in broken.stderr and "key file was swapped" in broken.stderr
