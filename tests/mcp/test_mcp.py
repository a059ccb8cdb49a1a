"""The MCP bridge through the official SDK client: tools generated from the contracts, listed and
called over streamable HTTP and over stdio (`cortex mcp`), governance denials as tool errors."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from mcp import Client, StdioServerParameters

from ..conftest import cortex_env, plugin_of

BASE = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "http"]\n'
REQUIRED = {"cortex_plan", "cortex_execute", "cortex_simulate", "cortex_replay", "cortex_generate", "memory_store",
            "memory_get", "memory_search", "memory_update", "memory_delete", "memory_list", "memory_stats"}


def run(coro, timeout: float = 90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def mcp_url(start_kernel):
    def start(config: str = BASE, mcp_settings: str = "", **kw) -> str:
        _, kt = start_kernel(config + f'[plugins.mcp]\nhttp_listen = "127.0.0.1:0"\n{mcp_settings}', **kw)
        return f"http://{plugin_of(kt, 'mcp').address}/mcp"

    return start


async def _session(server, body):
    async with Client(server) as client:
        return await body(client)


def test_streamable_http_lists_generated_tools_and_calls_them(mcp_url):
    url = mcp_url()

    async def body(client):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert REQUIRED <= set(tools)
        store = tools["memory_store"]
        assert store.description.startswith("Store keeps a memory")
        assert {"text", "kind", "tags", "ttl_seconds"} <= set(store.input_schema["properties"])
        assert store.output_schema["properties"]["id"] == {"type": ["string", "null"]}
        stored = await client.call_tool("memory_store", {"text": "The spare key is under the blue pot", "tags": ["home"]})
        assert not stored.is_error and stored.structured_content["created"] is True
        found = await client.call_tool("memory_search", {"query": "where is the spare key", "top_k": 1})
        assert found.structured_content["results"][0]["memory"]["id"] == stored.structured_content["id"]
        plan = await client.call_tool("cortex_plan", {"goal": "what do I know about keys?"})
        assert not plan.is_error and plan.structured_content["plan"]["steps"]
        executed = await client.call_tool("cortex_execute", {"plan": plan.structured_content["plan"]})
        assert not executed.is_error
        assert executed.structured_content["messages"][-1]["summary"]["status"] == "succeeded"
        bad = await client.call_tool("memory_search", {"query": "x", "top_k": "many"})
        assert bad.is_error and bad.content[0].text.startswith("INVALID_ARGUMENT")
        missing = await client.call_tool("memory_get", {"id": "m-none"})
        assert missing.is_error and missing.structured_content["error"]["code"] == "NOT_FOUND"

    run(_session(url, body))


def with_credential(url: str, token: str):
    """The official client's streamable HTTP transport, sending `Authorization: Bearer <token>`."""
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    return streamable_http_client(url, http_client=create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}))


def test_a_governance_deny_is_a_tool_error_naming_the_rule(mcp_url, data_dir):
    """MCP over HTTP identifies clients by the kernel's credentials: no credential is `local`, a
    key is `key:NAME`; the admin token lends an editor none of admin's powers (it acts as mcp:<name>)."""
    from cortex.kernel.security.credentials import KeyStore, read_admin_token

    url = mcp_url(governance=True)
    policy = {"toml": '[[rule]]\nid = "mine"\neffect = "allow"\n'}
    evaluate = {"call": {"service": "cortex.memories.v1.MemoryService", "method": "Search", "principal": "mcp:test"}}

    async def anonymous(client):
        denied = await client.call_tool("governance_add_policy", policy)
        assert denied.is_error and denied.content[0].text.startswith("PERMISSION_DENIED")
        assert "builtin/local-never-administers" in denied.content[0].text
        evaluated = await client.call_tool("governance_evaluate", evaluate)
        assert evaluated.is_error and "builtin/local-default" in evaluated.content[0].text

    async def with_key(client):
        denied = await client.call_tool("governance_add_policy", policy)
        assert denied.is_error and "builtin/policy-admin" in denied.content[0].text
        assert not (await client.call_tool("governance_evaluate", evaluate)).is_error

    run(_session(url, anonymous))
    run(_session(with_credential(url, KeyStore(data_dir).create("editor", [])), with_key))
    run(_session(with_credential(url, read_admin_token(data_dir)), with_key))


def test_expose_and_hide_select_the_tools(mcp_url):
    url = mcp_url(mcp_settings='expose = ["cortex.memories.v1.MemoryService/*"]\nhide = ["memory_delete"]\n')

    async def body(client):
        return {t.name for t in (await client.list_tools()).tools}

    names = run(_session(url, body))
    assert "memory_search" in names and "memory_delete" not in names and "cortex_generate" not in names


def stdio(data_dir, *args: str) -> StdioServerParameters:
    env = cortex_env(data_dir, CORTEX_PLUGINS__DISABLED='["ollama", "openai", "a2a", "http"]')
    return StdioServerParameters(command=sys.executable, args=["-m", "cortex.kernel", "mcp", *args], env=env)


def test_stdio_bridges_a_running_kernel(serve_process, tmp_path):
    """`cortex mcp --target`: tools, resources, and update notifications from the kernel's bus."""
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED='["ollama", "openai", "a2a"]')
    kernel = serve_process(env=env)

    from mcp_types import ResourceUpdatedNotification

    updated: asyncio.Queue = asyncio.Queue()

    async def on_message(message):
        if isinstance(message, ResourceUpdatedNotification):
            updated.put_nowait(str(message.params.uri))

    async def body():
        async with Client(stdio(tmp_path / "other", "--target", kernel.target), mode="legacy",
                          message_handler=on_message) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            info = await client.call_tool("kernel_get_info", {})
            stored = await client.call_tool("memory_store", {"text": "bridged over stdio"})
            read = await client.read_resource(f"cortex://memories/{stored.structured_content['id']}")
            assert read.contents[0].text == "bridged over stdio"
            # the bridge follows the kernel's event bus over gRPC: a finished run is news to a subscriber
            await client.subscribe_resource("cortex://traces")
            executed = await client.call_tool("cortex_execute", {"goal": "what was bridged?"})
            assert executed.structured_content["messages"][-1]["summary"]["status"] == "succeeded"
            assert await asyncio.wait_for(updated.get(), 10) == "cortex://traces"
            return names, info.structured_content, stored.structured_content

    names, info, stored = run(body())
    assert REQUIRED <= names
    assert info["listen"] == kernel.target and info["data_dir"] == str(tmp_path / "data")
    assert stored["created"] is True


def test_stdio_starts_an_embedded_kernel_when_none_answers(tmp_path, unused_tcp_port):
    async def body(client):
        info = await client.call_tool("kernel_get_info", {})
        stats = await client.call_tool("memory_stats", {})
        return info.structured_content, stats.structured_content

    info, stats = run(_session(stdio(tmp_path / "data", "--target", f"127.0.0.1:{unused_tcp_port}"), body))
    assert info["data_dir"] == str(tmp_path / "data") and info["listen"] != f"127.0.0.1:{unused_tcp_port}"
    assert stats.get("total", "0") == "0"
    assert json.loads(json.dumps(stats)) == stats


PROMPTS = '''
[[plugins.mcp.prompts]]
name = "weekly_review"
description = "Review my week"
text = "Help me review my week, focusing on {focus}."
arguments = [{ name = "focus", required = true, values = ["work", "home"] }]
'''


def test_resources_prompts_completion_progress_and_logs(mcp_url):
    """What an editor attaches and hears: a memory as a resource (and an unknown one refused), a
    search template, prompts filled by governed calls, completion, progress per Execute step, and
    log notifications once the session asks for them."""
    url = mcp_url(mcp_settings=PROMPTS)
    logs, progress = [], []

    async def on_log(params):
        logs.append(params)

    async def body(client):
        stored = await client.call_tool("memory_store", {"text": "The dentist moved to Thursday 3pm", "tags": ["health"]})
        memory_id = stored.structured_content["id"]
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"cortex://memories", "cortex://traces"} <= uris
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert {"cortex://memories/{id}", "cortex://memories?query={query}", "cortex://traces/{id}"} <= templates
        read = await client.read_resource(f"cortex://memories/{memory_id}")
        assert read.contents[0].text == "The dentist moved to Thursday 3pm"
        searched = json.loads((await client.read_resource("cortex://memories?query=dentist")).contents[0].text)
        assert searched["results"][0]["memory"]["id"] == memory_id
        from mcp.shared.exceptions import MCPError

        with pytest.raises(MCPError, match="NOT_FOUND"):
            await client.read_resource("cortex://memories/m-none")
        with pytest.raises(MCPError, match="no resource"):
            await client.read_resource("file:///etc/passwd")

        names = {p.name for p in (await client.list_prompts()).prompts}
        assert {"recall_context", "plan_goal", "what_changed", "weekly_review"} <= names
        recalled = await client.get_prompt("recall_context", {"task": "book the dentist"})
        attached = [m.content.resource for m in recalled.messages if m.content.type == "resource"]
        assert str(attached[0].uri) == f"cortex://memories/{memory_id}"
        review = await client.get_prompt("weekly_review", {"focus": "home"})
        assert "focusing on home" in review.messages[0].content.text
        with pytest.raises(MCPError, match="needs 'focus'"):
            await client.get_prompt("weekly_review", {})
        from mcp_types import PromptReference, ResourceTemplateReference

        done = await client.complete(PromptReference(type="ref/prompt", name="weekly_review"), {"name": "focus", "value": "w"})
        assert done.completion.values == ["work"]
        ids = await client.complete(ResourceTemplateReference(type="ref/resource", uri="cortex://memories/{id}"),
                                    {"name": "id", "value": memory_id[:4]})
        assert memory_id in ids.completion.values

        await client.set_logging_level("debug")
        await client.call_tool("memory_get", {"id": "m-none"})  # the kernel logs the failed call: forwarded

        async def on_progress(done, total, message):
            progress.append((done, message))

        plan = (await client.call_tool("cortex_plan", {"goal": "when is the dentist?"})).structured_content["plan"]
        executed = await client.call_tool("cortex_execute", {"plan": plan}, progress_callback=on_progress)
        assert not executed.is_error
        steps = len(plan["steps"])
        assert len(progress) == len(executed.structured_content["messages"]) >= steps
        assert [p for p, _ in progress] == sorted(p for p, _ in progress)
        assert any(m.startswith("step ") for _, m in progress)

    async def session():
        async with Client(url, mode="legacy", logging_callback=on_log) as client:
            await body(client)

    run(session())
    events = [entry.data.get("event") for entry in logs if isinstance(entry.data, dict)]
    assert "call" in events and "done" in events and "message" in events
    kernel = [entry for entry in logs if isinstance(entry.data, dict) and entry.data.get("logger") == "cortex.kernel"]
    failed = next(e for e in kernel if e.data["event"] == "call.failed")
    assert (failed.level, failed.data["code"], failed.data["method"]) == (
        "info", "NOT_FOUND", "/cortex.memories.v1.MemoryService/Get")


def test_traces_as_resources_and_prompts_that_plan_and_look_back(mcp_url):
    """A Cerebrum run is a resource an editor can attach (listed, read by id, its id completed); the
    plan_goal and what_changed prompts are filled by governed calls; bad URIs and arguments are refused."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import ResourceTemplateReference

    url = mcp_url()

    async def body(client):
        await client.call_tool("memory_store", {"text": "The boiler service is due in March", "tags": ["home"]})
        plan = (await client.call_tool("cortex_plan", {"goal": "when is the boiler due?"})).structured_content["plan"]
        executed = await client.call_tool("cortex_execute", {"plan": plan})
        trace_id = executed.structured_content["messages"][-1]["summary"]["trace_id"]

        listed = json.loads((await client.read_resource("cortex://traces")).contents[0].text)
        assert trace_id in [t["trace_id"] for t in listed["traces"]]
        trace = json.loads((await client.read_resource(f"cortex://traces/{trace_id}")).contents[0].text)
        assert trace["plan"]["goal"] == "when is the boiler due?" and trace["steps"]
        done = await client.complete(ResourceTemplateReference(type="ref/resource", uri="cortex://traces/{id}"),
                                     {"name": "id", "value": trace_id[:3]})
        assert trace_id in done.completion.values
        newest = json.loads((await client.read_resource("cortex://memories")).contents[0].text)
        assert newest["memories"][0]["text"] == "The boiler service is due in March"

        planned = await client.get_prompt("plan_goal", {"goal": "renew the passport"})
        assert "renew the passport" in planned.messages[0].content.text and '"steps"' in planned.messages[0].content.text
        changed = await client.get_prompt("what_changed", {"since": "1h"})
        attached = [m.content.resource.text for m in changed.messages if m.content.type == "resource"]
        assert attached == ["The boiler service is due in March"]
        with pytest.raises(MCPError, match="since must be one of 1h, 24h, 7d"):
            await client.get_prompt("what_changed", {"since": "forever"})
        with pytest.raises(MCPError, match="no prompt 'nope'"):
            await client.get_prompt("nope", {})

        with pytest.raises(MCPError, match="needs a query"):
            await client.read_resource("cortex://memories?query=")
        with pytest.raises(MCPError, match="a proof is read by id"):
            await client.read_resource("cortex://proofs")
        with pytest.raises(MCPError, match="is not an id of traces"):
            await client.read_resource("cortex://traces/..%2F..%2Fetc")
        with pytest.raises(MCPError, match="NOT_FOUND"):
            await client.read_resource("cortex://traces/t-none")

    run(_session(url, body))


def test_a_subscribed_memory_tells_of_its_changes(mcp_url):
    """resources/subscribe (2025-era clients) and subscriptions/listen (2026-07-28): a change to
    the memory, fed by the event bus, reaches the subscriber; an unknown memory cannot be
    subscribed to; after unsubscribe nothing more comes."""
    from mcp.shared.exceptions import MCPError
    from mcp.shared.subscriptions import ResourceUpdated
    from mcp_types import ResourceUpdatedNotification

    url = mcp_url()
    updated: asyncio.Queue = asyncio.Queue()

    async def on_message(message):
        if isinstance(message, ResourceUpdatedNotification):
            updated.put_nowait(str(message.params.uri))

    async def next_update():
        return await asyncio.wait_for(updated.get(), 10)

    async def legacy():
        async with Client(url, mode="legacy", message_handler=on_message) as client:
            stored = await client.call_tool("memory_store", {"text": "The gate code is 4711"})
            uri = f"cortex://memories/{stored.structured_content['id']}"
            with pytest.raises(MCPError, match="NOT_FOUND"):
                await client.subscribe_resource("cortex://memories/m-none")
            await client.subscribe_resource(uri)
            await client.subscribe_resource("cortex://memories?query=gate")
            await client.call_tool("memory_update", {"id": stored.structured_content["id"], "text": "The gate code is 0815"})
            assert {await next_update(), await next_update()} == {uri, "cortex://memories?query=gate"}
            await client.call_tool("memory_store", {"text": "Unrelated: the bins go out on Monday"})
            assert await next_update() == "cortex://memories?query=gate"  # any new memory may change a search
            await client.unsubscribe_resource("cortex://memories?query=gate")
            await client.call_tool("memory_delete", {"id": stored.structured_content["id"]})
            assert await next_update() == uri
            await client.call_tool("memory_store", {"text": "Unrelated again: water the plants"})
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(updated.get(), 1.5)
            return stored.structured_content["id"]

    async def modern():
        async with Client(url) as client:
            stored = await client.call_tool("memory_store", {"text": "The bike lock code is 1234"})
            uri = f"cortex://memories/{stored.structured_content['id']}"
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                await client.call_tool("memory_update", {"id": stored.structured_content["id"], "tags": ["bike"]})
                event = await asyncio.wait_for(anext(aiter(subscription)), 10)
            assert event == ResourceUpdated(uri=uri)

    run(legacy())
    run(modern())


def test_cancelling_a_tool_call_cancels_its_grpc_call(mcp_url, counter_pb2):
    """notifications/cancelled (sent by the official client when a call is abandoned) reaches the
    provider as a cancelled call, not one left running."""
    import threading

    from ..counter_contract import CounterPlugin, CounterServicer

    running, cancelled = threading.Event(), threading.Event()

    class Slow(CounterServicer):
        async def Get(self, request, context):
            running.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return self.pb2.CountResponse(value=0, provider=self.name)

    url = mcp_url(plugins=[("slow", CounterPlugin(counter_pb2, Slow(counter_pb2, "slow")))])

    async def body(client):
        call = asyncio.ensure_future(client.call_tool("counter_get", {}))
        assert await asyncio.to_thread(running.wait, 10), "the call never reached the provider"
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await asyncio.to_thread(cancelled.wait, 10), "the provider kept running after the client cancelled"
        assert (await client.call_tool("memory_stats", {})).is_error is False  # the session goes on

    run(_session(url, body))
