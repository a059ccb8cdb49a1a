"""Delegation: a call made on someone's behalf (a plan step, a plugin's nested call, a gateway's
user) runs as that caller and never does more than the caller could do directly.

Each test here was an attack that worked before the delegation rules (issue "every hop keeps the
caller's rights"): a key scoped to Cerebrum reached governance through a plan step, a plugin's
Store was done for a key that may only Search, a gateway key acted in the owner's namespace."""

from __future__ import annotations

import json

import grpc
import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as cpb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.governance.v1 import governance_pb2 as gpb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc
from cortex.kernel.sdk.bridge import bridge_caller
from cortex.kernel.security.credentials import Credentials, KeyStore
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import audit_entries, bearer, cortex_env
from .echo_plugin import echo_plugin

State = cpb.StepRecord.State


def everywhere(query: str) -> mem.SearchRequest:
    """A keyword search of every namespace (admin's)."""
    return mem.SearchRequest(query=query, filter=mem.Filter(namespaces=["*"]), mode=mem.SEARCH_MODE_KEYWORD, top_k=5)


def refusal(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kwargs)
    return err.value.code(), err.value.details()


@pytest.fixture
def governed(start_kernel, channel_to):
    target, kt = start_kernel(governance=True)
    return target, kt, channel_to(target, as_admin=False)


def run_plan(cerebrum, steps: list[tuple[str, dict]], token: str) -> dict[str, cpb.StepRecord]:
    plan = cpb.Plan(goal="hop", steps=[cpb.Step(id=f"s{i}", method=method, request_json=json.dumps(request))
                                       for i, (method, request) in enumerate(steps)])
    records = {}
    for event in cerebrum.Execute(cpb.ExecuteRequest(plan=plan), timeout=120, metadata=bearer(token)):
        if event.HasField("step") and event.step.state != State.STATE_STARTED:
            records[event.step.method] = event.step
    return records


def test_a_plan_step_can_do_no_more_than_its_caller(governed, channel_to, data_dir):
    target, kt, anonymous = governed
    keys = KeyStore(data_dir)
    planner = keys.create("planner", ["cortex.cerebrum.v1.CerebrumService/*"])
    cerebrum = cerebrum_pb2_grpc.CerebrumServiceStub(anonymous)
    gov = governance_pb2_grpc.GovernanceServiceStub(anonymous)
    # directly, the key may not list policies ...
    code, _ = refusal(gov.ListPolicies, gpb.ListPoliciesRequest(), timeout=5, metadata=bearer(planner))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # ... nor may it as a plan step, nor publish, store or import through one
    steps = [
        ("cortex.governance.v1.GovernanceService/ListPolicies", {}),
        ("cortex.events.v1.EventService/Publish", {"event": {"type": "x.y", "data": "spoofed"}}),
        ("cortex.memories.v1.MemoryService/Store", {"text": "planted by a plan"}),
        ("cortex.memories.v1.ArchiveService/Import", {"manifest": {"format": "cortex-memories", "version": 1}}),
    ]
    records = run_plan(cerebrum, steps, planner)
    assert len(records) == len(steps)
    for method, _ in steps:
        step = records[method]
        assert step.state == State.STATE_FAILED and step.status == "PERMISSION_DENIED", (method, step.status, step.error)
        assert "key:planner" in step.error and "its key's scopes" in step.error
    admin = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    found = admin.Search(everywhere("planted"), timeout=30)
    assert not found.results
    # what was refused is recorded as the key's, made by Cerebrum for it
    nested = [e.proof for e in audit_entries(kt) if e.HasField("proof") and e.proof.method == "ListPolicies"]
    assert [(p.principal, p.actor, p.status) for p in nested] == [
        ("key:planner", "", "PERMISSION_DENIED"), ("key:planner", "plugin:cerebrum", "PERMISSION_DENIED")]


def test_a_plan_step_runs_in_its_callers_namespace_with_its_scopes(governed, channel_to, data_dir):
    target, _, anonymous = governed
    keys = KeyStore(data_dir)
    alice = keys.create("alice", ["cortex.cerebrum.v1.CerebrumService/*", "cortex.memories.v1.MemoryService/*"])
    admin = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    admin.Store(mem.StoreRequest(text="the owner's safe code is 4711"), timeout=30)
    cerebrum = cerebrum_pb2_grpc.CerebrumServiceStub(anonymous)
    records = run_plan(cerebrum, [
        ("cortex.memories.v1.MemoryService/Store", {"text": "alice's plan wrote this"}),
    ], alice)
    stored = records["cortex.memories.v1.MemoryService/Store"]
    assert stored.status == "OK", stored.error
    memory_id = json.loads(stored.response_json)["id"]
    assert admin.Get(mem.GetRequest(id=memory_id), timeout=5).memory.namespace == "key:alice"
    searched = run_plan(cerebrum, [
        ("cortex.memories.v1.MemoryService/Search", {"query": "safe code", "mode": "SEARCH_MODE_KEYWORD", "top_k": 5}),
    ], alice)["cortex.memories.v1.MemoryService/Search"]
    assert searched.status == "OK" and "4711" not in searched.response_json  # the owner's memory is not alice's


STORE_FOR_THE_CALLER = """
    async def Echo(self, request, context):
        stub = memories_pb2_grpc.MemoryServiceStub(Servicer.channel)
        try:
            stored = await stub.Store(memories_pb2.StoreRequest(text=request.message), timeout=30)
        except grpc.RpcError as exc:
            return echo_pb2.EchoResponse(message=f"refused:{exc.code().name}")
        return echo_pb2.EchoResponse(message=f"stored:{stored.id}")
"""


def test_a_plugins_nested_call_is_bounded_by_the_caller_it_serves(tmp_path, serve_process, channel_to):
    site = echo_plugin(tmp_path / "site", "remembering", STORE_FOR_THE_CALLER, "cortex.memories.v1.MemoryService")
    data = tmp_path / "data"
    env = cortex_env(data, [site], CORTEX_PLUGINS__DISABLED='["ollama", "openai", "echo"]')
    kernel = serve_process(env=env)
    keys = KeyStore(data)
    searcher = keys.create("searcher", ["cortex_echo.v1.EchoService/*", "cortex.memories.v1.MemoryService/Search"])
    writer = keys.create("writer", ["cortex_echo.v1.EchoService/*", "cortex.memories.v1.MemoryService/*"])
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target, as_admin=False))
    # the plugin may call MemoryService (its manifest), but not for a caller who may not Store
    assert echo.Echo(echo_pb2.EchoRequest(message="planted"), timeout=30, metadata=bearer(searcher)).message \
        == "refused:PERMISSION_DENIED"
    # for a caller who may, it stores, in the caller's namespace
    reply = echo.Echo(echo_pb2.EchoRequest(message="written for the writer"), timeout=30, metadata=bearer(writer))
    assert reply.message.startswith("stored:"), reply.message
    admin = memories_pb2_grpc.MemoryServiceStub(channel_to(kernel.target))
    stored = admin.Get(mem.GetRequest(id=reply.message.split(":", 1)[1]), timeout=5).memory
    assert stored.namespace == "key:writer"
    found = admin.Search(everywhere("planted"), timeout=30)
    assert not found.results


def test_a_gateway_acts_only_for_the_users_its_key_names(governed, data_dir):
    _, _, anonymous = governed
    keys = KeyStore(data_dir)
    gateway, named = keys.create("gateway", ["act_as"]), keys.create("alices-app", ["act_as:alice"])
    memories = memories_pb2_grpc.MemoryServiceStub(anonymous)
    stats = mem.StatsRequest()
    # the owner's identities are the owner's: no gateway acts as them, whatever it is allowed
    for owner in ("default", "mcp:editor", "a2a:agent", "mcp:*"):
        code, details = refusal(memories.Stats, stats, timeout=5,
                                metadata=bearer(gateway, ("x-cortex-principal", owner)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "owner's identity" in details, owner
    # a key that names its users acts for them alone
    memories.Stats(stats, timeout=5, metadata=bearer(named, ("x-cortex-principal", "alice")))
    code, details = refusal(memories.Stats, stats, timeout=5, metadata=bearer(named, ("x-cortex-principal", "bob")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "may act only for alice" in details
    # a gateway's user writes in its own namespace, never the owner's
    stored = memories.Store(mem.StoreRequest(text="carol's note"), timeout=30,
                            metadata=bearer(gateway, ("x-cortex-principal", "carol")))
    got = memories.Get(mem.GetRequest(id=stored.id), timeout=5, metadata=bearer(gateway, ("x-cortex-principal", "carol")))
    assert got.memory.namespace == "carol"


def test_a_bridge_client_names_itself_into_the_owners_namespace_only_with_the_owners_credential(tmp_path):
    credentials = Credentials(tmp_path, owners=("mcp:*", "a2a:*"))
    credentials.ensure_admin_token()
    keys = KeyStore(tmp_path)
    gateway = credentials.identify(f"Bearer {keys.create('gateway', ['act_as'])}", True)
    # over MCP/HTTP an editor calls itself "zed": with a gateway key it stays the gateway's caller
    assert bridge_caller("mcp", "zed", "client", gateway).principal == "key:gateway"
    assert bridge_caller("a2a", "agent", "client", gateway).principal == "key:gateway"
    # with the owner's own credential (or stdio, the owner's process) it is the owner's MCP client
    admin = credentials.identify(f"Bearer {(tmp_path / 'admin.token').read_text().strip()}", True)
    assert bridge_caller("mcp", "zed", "client", admin).principal == "mcp:zed"
    assert bridge_caller("mcp", "zed", "client") == "mcp:zed"
    local = credentials.identify("", True)
    assert bridge_caller("mcp", "zed", "client", local).principal == "local"


def test_a_deny_on_a_gateway_holds_through_the_plugins_it_reaches(governed, channel_to, data_dir):
    target, _, anonymous = governed
    governance_pb2_grpc.GovernanceServiceStub(channel_to(target)).AddPolicy(gpb.AddPolicyRequest(toml=(
        '[[rule]]\nid = "gateway-reads-only"\neffect = "deny"\nprincipals = ["key:gw"]\n'
        'services = ["cortex.memories.v1.MemoryService"]\nmethods = ["Store"]\n')), timeout=5)
    gateway = KeyStore(data_dir).create("gw", ["act_as:alice"])
    as_alice = bearer(gateway, ("x-cortex-principal", "alice"))
    code, _ = refusal(memories_pb2_grpc.MemoryServiceStub(anonymous).Store, mem.StoreRequest(text="direct"),
                      timeout=30, metadata=as_alice)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    plan = cpb.Plan(goal="g", steps=[cpb.Step(id="s", method="cortex.memories.v1.MemoryService/Store",
                                              request_json='{"text": "through a plan"}')])
    events = list(cerebrum_pb2_grpc.CerebrumServiceStub(anonymous).Execute(cpb.ExecuteRequest(plan=plan), timeout=60,
                                                                           metadata=as_alice))
    step = [e.step for e in events if e.HasField("step") and e.step.state != State.STATE_STARTED][-1]
    assert step.status == "PERMISSION_DENIED" and "gateway-reads-only" in step.error


def test_a_callers_labels_and_local_only_follow_its_nested_calls(start_kernel, channel_to, counter_pb2):
    from ..counter_contract import CounterPlugin, CounterServicer

    cloud = CounterServicer(counter_pb2, "cloud")
    target, _ = start_kernel("", [("cloud", CounterPlugin(counter_pb2, cloud, local=False))], governance=True)
    plan = cpb.Plan(goal="g", steps=[cpb.Step(id="s", method="cortex_test.v1.CounterService/Get", request_json="{}")])
    cerebrum = cerebrum_pb2_grpc.CerebrumServiceStub(channel_to(target))
    events = list(cerebrum.Execute(cpb.ExecuteRequest(plan=plan), timeout=60, metadata=(("x-cortex-labels", "private"),)))
    step = [e.step for e in events if e.HasField("step") and e.step.state != State.STATE_STARTED][-1]
    assert step.status in ("PERMISSION_DENIED", "FAILED_PRECONDITION") and cloud.calls == 0, step
    assert "private" in step.error


def test_a_gateways_user_is_never_a_shared_namespace(start_kernel, channel_to, data_dir):
    config = '[plugins.memories.shared]\nfamily = ["key:alice"]\n'
    target, _ = start_kernel(config, governance=True)
    keys = KeyStore(data_dir)
    alice, gateway = keys.create("alice", []), keys.create("gw", ["act_as"])
    memories = memories_pb2_grpc.MemoryServiceStub(channel_to(target, as_admin=False))
    memories.Store(mem.StoreRequest(text="the family wifi password is hunter2", namespace="family"), timeout=30,
                   metadata=bearer(alice))
    code, details = refusal(memories.Search, mem.SearchRequest(query="wifi password", top_k=3), timeout=30,
                            metadata=bearer(gateway, ("x-cortex-principal", "family")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "shared namespace" in details


def test_a_plugin_acts_for_a_key_only_with_its_scopes_and_never_for_a_bare_user(start_kernel, data_dir):
    """The marketplace installs for an event's publisher: a key's name alone carried none of its
    scopes (a key that may only Publish got an Install done)."""
    from cortex.kernel.context import KernelChannel

    _, kt = start_kernel("")
    KeyStore(data_dir).create("ci", ["cortex.events.v1.EventService/Publish"])
    channel = KernelChannel(kt.kernel.router, "plugin:marketplace", credentials=kt.kernel.credentials)
    assert channel.acting_for("key:ci").scopes == ("cortex.events.v1.EventService/Publish",)
    for bare in ("key:nobody", "alice"):
        with pytest.raises(ValueError, match=r"not a key of this kernel|never by name"):
            channel.acting_for(bare)
    assert channel.acting_for("mcp:editor").principal == "mcp:editor"  # the owner's bridge client
    assert channel.acting_for("admin").actor == "plugin:marketplace"


def test_a_plugin_enabled_by_admin_works_as_itself_not_as_admin(start_kernel, channel_to):
    """Before, a plugin enabled while the kernel ran started inside the admin's Enable call, and
    every call its tasks made from then on ran as admin (reading every namespace)."""
    import asyncio

    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
    from cortex.kernel import hookimpl

    outcomes: list[str] = []

    class Snooper:
        @hookimpl
        async def cortex_start(self, context):
            async def look() -> None:
                search = mem.SearchRequest(query="secret", top_k=3, filter=mem.Filter(namespaces=["*"]))
                try:
                    await memories_pb2_grpc.MemoryServiceStub(context.channel).Search(search, timeout=30)
                    outcomes.append("OK")
                except grpc.RpcError as exc:
                    outcomes.append(exc.code().name)
            asyncio.get_running_loop().create_task(look())

    target, kt = start_kernel('[plugins]\ndisabled = ["ollama", "openai"]\n', [("snooper", Snooper())])
    admin = kernel_pb2_grpc.PluginServiceStub(channel_to(target))
    admin.Disable(kernel_pb2.DisableRequest(name="snooper"), timeout=30)
    admin.Enable(kernel_pb2.EnableRequest(name="snooper"), timeout=30)
    kt.run(asyncio.sleep(0.5))
    assert outcomes == ["PERMISSION_DENIED", "PERMISSION_DENIED"], outcomes


def test_local_cannot_lift_a_plugins_manifest(start_kernel):
    """A plugin reaching past its manifest for `local` (whom a policy may let call more) is refused
    by the manifest, which no policy overrides, not by local's overridable default."""
    from cortex.plugins.governance.rules import CallFacts

    _, kt = start_kernel("", governance=True)
    governance = kt.kernel.host.records["governance"].obj
    verdict = governance._computed_rule(CallFacts(
        service="cortex.governance.v1.GovernanceService", method="ListPolicies", principal="local", provider="governance",
        provider_local=True, privacy_mode=False, actor="plugin:nosy"))
    assert verdict is not None and verdict.id == "builtin/plugin-manifest" and not verdict.overridable


def test_a_plugins_manifest_is_read_as_it_is_now(start_kernel):
    """A plugin reinstalled live gets a new record with what its new version declares: governance
    judges by that record, never by a verdict it cached for the version before."""
    from dataclasses import replace

    from cortex.plugins.governance.rules import CallFacts

    _, kt = start_kernel("", governance=True)
    governance, records = kt.kernel.host.records["governance"].obj, kt.kernel.host.records
    facts = CallFacts(service="cortex.models.v1.ModelService", method="Embed", principal="plugin:memories",
                      provider="mlx", provider_local=True, privacy_mode=False)
    assert governance._computed_rule(facts) is None  # memories' manifest calls ModelService
    before = records["memories"]
    records["memories"] = replace(before, calls=["cortex.events.v1.EventService"])  # as enable_now's fresh record
    try:
        verdict = governance._computed_rule(facts)
        assert verdict is not None and verdict.id == "builtin/plugin-manifest"
        assert '"memories.cortex.models.v1.ModelService" = "cortex.plugins.memories.plugin"' in verdict.description
    finally:
        records["memories"] = before
