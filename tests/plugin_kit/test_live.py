"""Live installs: a plugin made by `cortex plugin new` is installed into a running, governed kernel,
served at once over gRPC, HTTP/JSON and MCP, disabled and enabled again, without a restart; every
step is an audited call that only the admin may make."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import grpc
import httpx
import pytest

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.kernel.sdk.testing import authenticated
from cortex.kernel.security.credentials import read_admin_token

from ..conftest import cortex_env, run_cli


def urls(kernel) -> tuple[str, str]:
    log = kernel.stderr()
    http = re.search(r'"url": "(http://[^"]+)/openapi.json"', log)
    mcp = re.search(r'"url": "(http://[^"]+/mcp)"', log)
    assert http and mcp, log[-2000:]
    return http.group(1), mcp.group(1)


async def mcp_tools(url: str, token: str, call: str = "") -> tuple[dict[str, str], str]:
    """The tools' descriptions, and (when `call` names one) the text of calling it."""
    from mcp import Client
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    transport = streamable_http_client(url, http_client=create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}))
    async with Client(transport) as client:
        tools = {t.name: t.description for t in (await client.list_tools()).tools}
        said = (await client.call_tool(call, {"text": "x"})).content[0].text if call else ""
        return tools, said


def reflected(target: str) -> list[str]:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(target) as channel:
        return list(ProtoReflectionDescriptorDatabase(channel).get_services())


def test_install_disable_enable_without_a_restart(tmp_path, serve_process):
    assert run_cli("plugin", "new", "shelf", "--dir", str(tmp_path), env=cortex_env(tmp_path / "x")).returncode == 0
    package, site, data = tmp_path / "cortex-shelf", tmp_path / "site", tmp_path / "data"
    site.mkdir()
    config = tmp_path / "cortex.toml"
    config.write_text("")
    # the kernel's "own environment" for this test: pip installs into `site`, which is on its path
    env = cortex_env(data, CORTEX_CONFIG=str(config), CORTEX_PLUGINS__MCP__HTTP_LISTEN="127.0.0.1:0", PYTHONPATH=str(site),
                     # (pip reads PIP_NO_BUILD_ISOLATION as the value of build_isolation: "0" turns it off)
                     PIP_TARGET=str(site), PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0", PIP_NO_INDEX="1")
    kernel = serve_process(env=env)
    cli_env = {**env, "CORTEX_TARGET": kernel.target}
    token = read_admin_token(data)
    http_base, mcp_url = urls(kernel)

    # only the admin may install: a caller without a credential is refused, nothing installed
    anonymous = kernel_pb2_grpc.PluginServiceStub(grpc.insecure_channel(kernel.target))
    with pytest.raises(grpc.RpcError) as err:
        anonymous.Install(kernel_pb2.InstallRequest(spec=str(package)), timeout=60)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    wrong = run_cli("plugins", "install", str(package), "--sha256", "0" * 64, env=cli_env)
    assert wrong.returncode == 1 and "must be a file" in wrong.stderr

    installed = run_cli("plugins", "install", str(package), env=cli_env, timeout=300)
    assert installed.returncode == 0, installed.stderr
    assert "installed plugin 'shelf' 0.1.0: loaded" in installed.stdout

    sys.path.insert(0, str(site))
    try:
        from shelf.v1 import shelf_pb2, shelf_pb2_grpc
    finally:
        sys.path.remove(str(site))
    stub = shelf_pb2_grpc.ShelfServiceStub(authenticated(grpc.insecure_channel(kernel.target), token))
    assert stub.Add(shelf_pb2.AddRequest(text="a book"), timeout=5).number == 1
    http = httpx.Client(base_url=http_base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert http.post("/v1/shelf.v1.ShelfService/List", json={}).json()["notes"] == ["a book"]
    operation = http.get("/openapi.json").json()["paths"]["/v1/shelf.v1.ShelfService/Add"]["post"]
    assert operation["description"].startswith("Add keeps one note")
    tools, _ = asyncio.run(asyncio.wait_for(mcp_tools(mcp_url, token), 60))
    assert tools.get("shelf_add", "").startswith("Add keeps one note")
    assert "shelf.v1.ShelfService" in reflected(kernel.target)  # reflection: how `cortex mcp --target` finds contracts

    # disabled live: every surface says which plugin is off
    off = run_cli("plugins", "disable", "shelf", "--now", env=cli_env)
    assert off.returncode == 0 and "in the running kernel: disabled" in off.stdout, off.stderr
    with pytest.raises(grpc.RpcError) as err:
        stub.List(shelf_pb2.ListRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED and "plugin 'shelf', which is disabled" in err.value.details()
    refused = http.post("/v1/shelf.v1.ShelfService/List", json={})
    assert refused.status_code == 404 and "plugin 'shelf', which is disabled" in refused.json()["error"]["message"]
    tools, said = asyncio.run(asyncio.wait_for(mcp_tools(mcp_url, token, call="shelf_add"), 60))
    assert "shelf_add" not in tools
    assert said.startswith("UNIMPLEMENTED") and "plugin 'shelf', which is disabled while the kernel runs" in said
    assert 'disabled = ["shelf"]' in config.read_text()  # and it stays off after a restart
    assert "shelf.v1.ShelfService" not in reflected(kernel.target)

    on = run_cli("plugins", "enable", "shelf", "--now", env=cli_env)
    assert on.returncode == 0 and "in the running kernel: loaded" in on.stdout, on.stderr
    assert list(stub.List(shelf_pb2.ListRequest(), timeout=5).notes) == []  # configured afresh
    with pytest.raises(grpc.RpcError) as err:
        kernel_pb2_grpc.PluginServiceStub(authenticated(grpc.insecure_channel(kernel.target), token)).Disable(
            kernel_pb2.DisableRequest(name="governance"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "kernel.required_plugins" in err.value.details()

    # every step is in the audit log, as the admin
    tail = json.loads(run_cli("audit", "tail", "--json", "-n", "400", env=cli_env).stdout)
    steps = [(e["proof"]["method"], e["proof"]["principal"], e["proof"]["status"]) for e in tail
             if "proof" in e and e["proof"]["service"] == "cortex.kernel.v1.PluginService"]
    assert ("Install", "admin", "OK") in steps and ("Disable", "admin", "OK") in steps and ("Enable", "admin", "OK") in steps
    assert ("Install", "local", "PERMISSION_DENIED") in steps


def events_of(channel, topics, timeout=1.0) -> list:
    """The events on `topics` so far (a subscription is endless: read what is there)."""
    from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc

    found: list = []
    stream = events_pb2_grpc.EventServiceStub(channel).Subscribe(events_pb2.SubscribeRequest(topics=topics), timeout=timeout)
    with pytest.raises(grpc.RpcError):
        found.extend(m.event for m in stream)
    return found


def test_a_marketplace_event_installs_a_plugin_for_those_policy_allows(tmp_path, serve_process):
    from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc
    from cortex.kernel.security.credentials import KeyStore

    from ..conftest import wait_for

    assert run_cli("plugin", "new", "crate", "--dir", str(tmp_path), env=cortex_env(tmp_path / "x")).returncode == 0
    package, site, data = tmp_path / "cortex-crate", tmp_path / "site", tmp_path / "data"
    site.mkdir()
    env = cortex_env(data, PYTHONPATH=str(site), PIP_TARGET=str(site), PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0", PIP_NO_INDEX="1")
    outsider = KeyStore(data).create("outsider", [])
    kernel = serve_process(env=env)
    admin = authenticated(grpc.insecure_channel(kernel.target), read_admin_token(data))
    order = events_pb2.Event(type="marketplace.server.installed", data=json.dumps({"spec": str(package)}))

    # a publisher policy does not allow to install: refused, said on the bus, nothing installed
    stranger = authenticated(grpc.insecure_channel(kernel.target), outsider)
    events_pb2_grpc.EventServiceStub(stranger).Publish(events_pb2.PublishRequest(event=order), timeout=5)
    wait_for(lambda: events_of(admin, ["marketplace.server.failed"]), "marketplace.server.failed", timeout=30)
    failed = json.loads(events_of(admin, ["marketplace.server.failed"])[0].data)
    assert failed["code"] == "PERMISSION_DENIED" and "builtin/plugin-admin" in failed["reason"]
    assert not list(site.iterdir())

    # the admin: installed, enabled, reported, callable
    order.id = "second-order"
    events_pb2_grpc.EventServiceStub(admin).Publish(events_pb2.PublishRequest(event=order), timeout=5)
    wait_for(lambda: events_of(admin, ["marketplace.server.enabled"]), "marketplace.server.enabled", timeout=120)
    enabled = json.loads(events_of(admin, ["marketplace.server.enabled"])[0].data)
    assert enabled["plugins"][0]["name"] == "crate" and enabled["plugins"][0]["state"] == "STATE_LOADED"
    sys.path.insert(0, str(site))
    try:
        from crate.v1 import crate_pb2, crate_pb2_grpc
    finally:
        sys.path.remove(str(site))
    assert crate_pb2_grpc.CrateServiceStub(admin).Add(crate_pb2.AddRequest(text="x"), timeout=5).number == 1
    # the audit log says who asked and who acted
    tail = json.loads(run_cli("audit", "tail", "--json", "-n", "400", env={**env, "CORTEX_TARGET": kernel.target}).stdout)
    installs = [(e["proof"]["principal"], e["proof"].get("actor", ""), e["proof"]["status"]) for e in tail
                if "proof" in e and e["proof"]["method"] == "Install"]
    assert ("key:outsider", "plugin:marketplace", "PERMISSION_DENIED") in installs
    assert ("admin", "plugin:marketplace", "OK") in installs


def test_disabling_lets_calls_inside_the_plugin_finish_first(start_kernel, channel_to):
    import threading
    import time as clock

    from cortex.kernel import hookimpl
    from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

    events: list[str] = []

    from cortex_echo.plugin import EchoServicer

    class Slow(EchoServicer):
        async def Echo(self, request, context):
            events.append("call started")
            await asyncio.sleep(0.5)
            events.append("call finished")
            return echo_pb2.EchoResponse(message=request.message, served_by="slow")

    class SlowPlugin:
        @hookimpl
        def cortex_register(self, registry):
            registry.add(echo_pb2.DESCRIPTOR.services_by_name["EchoService"], Slow("slow"))

        @hookimpl
        async def cortex_stop(self, context):
            events.append("stopped")

    target, kt = start_kernel('[plugins]\ndisabled = ["echo"]\n', plugins=[("slow", SlowPlugin())])
    stub = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    replies: list = []
    caller = threading.Thread(target=lambda: replies.append(stub.Echo(echo_pb2.EchoRequest(message="m"), timeout=10)))
    caller.start()
    deadline = clock.monotonic() + 10
    while "call started" not in events and clock.monotonic() < deadline:
        clock.sleep(0.01)
    kt.run(kt.kernel.disable_plugin("slow"))
    caller.join(10)
    assert replies and replies[0].served_by == "slow"
    assert events == ["call started", "call finished", "stopped"]
    with pytest.raises(grpc.RpcError) as err:
        stub.Echo(echo_pb2.EchoRequest(message="m"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED and "plugin 'slow'" in err.value.details()
    kt.run(kt.kernel.enable_plugin("slow"))
    assert stub.Echo(echo_pb2.EchoRequest(message="again"), timeout=5).served_by == "slow"


def test_live_changes_happen_one_at_a_time_and_options_are_no_spec(start_kernel, channel_to):
    """An Enable and a Disable sent at once: the plugin finishes starting before it is stopped
    (never stopped half-started); a spec that pip would read as an option is refused."""
    from cortex.kernel import hookimpl

    steps: list[str] = []

    class Slow:
        @hookimpl
        async def cortex_start(self, context):
            steps.append("start begins")
            await asyncio.sleep(0.05)  # a start that takes a moment: the Disable arrives meanwhile
            steps.append("start ends")

        @hookimpl
        async def cortex_stop(self, context):
            steps.append("stop")

    target, kt = start_kernel(plugins=[("slow", Slow())])
    kt.run(kt.kernel.disable_plugin("slow"))
    steps.clear()

    async def both():
        return await asyncio.gather(kt.kernel.enable_plugin("slow"), kt.kernel.disable_plugin("slow"))

    _, disabled = kt.run(both())
    assert steps == ["start begins", "start ends", "stop"]
    assert disabled.state == "disabled" and kt.kernel.host.records["slow"].state == "disabled"
    plugins = kernel_pb2_grpc.PluginServiceStub(channel_to(target))
    for spec in ("--index-url=http://elsewhere.example/simple", "-r/etc/passwd", "  "):
        with pytest.raises(grpc.RpcError) as err:
            plugins.Install(kernel_pb2.InstallRequest(spec=spec), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, spec
