"""Cortex-OS as an A2A agent, through the official a2a-sdk client: the agent card is served,
and messages round-trip onto memories and Cerebrum, sent plainly and streamed."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2
from google.protobuf import json_format

from ..conftest import audit_entries, plugin_of

BASE = '[plugins]\ndisabled = ["ollama", "openai", "mcp", "http"]\n'


@pytest.fixture
def agent_url(start_kernel):
    def start(**kw) -> str:
        _, kt = start_kernel(BASE, **kw)
        return f"http://{plugin_of(kt, 'a2a').address}"

    return start


def message(text: str, **metadata) -> a2a_pb2.SendMessageRequest:
    msg = a2a_pb2.Message(role=a2a_pb2.ROLE_USER, message_id=str(uuid.uuid4()), parts=[a2a_pb2.Part(text=text)])
    if metadata:
        msg.metadata.update(metadata)
    return a2a_pb2.SendMessageRequest(message=msg)


async def send(url: str, request, streaming: bool, key: str = "") -> list[dict]:
    # the first message may load the embedding model: on a slow run (coverage tracing, a busy
    # machine) that is seconds, beyond httpx's default 5 s read timeout; the test's own wait_for
    # bounds the whole conversation
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), headers=headers) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=streaming, httpx_client=http))
        try:
            return [json_format.MessageToDict(r, preserving_proto_field_name=True) async for r in client.send_message(request)]
        finally:
            await client.close()


def reply_of(responses: list[dict]) -> tuple[str, dict]:
    parts = responses[-1]["message"]["parts"]
    return parts[0]["text"], parts[1]["data"]


def test_agent_card_describes_the_skills(agent_url):
    url = agent_url()
    card = httpx.get(f"{url}/.well-known/agent-card.json", timeout=10).json()
    assert card["name"] == "Cortex-OS" and card["capabilities"]["streaming"] is True
    assert {s["id"] for s in card["skills"]} == {"remember", "recall", "plan", "execute"}
    assert card["supportedInterfaces"][0]["url"] == f"{url}/a2a"


@pytest.mark.parametrize("streaming", [False, True])
def test_messages_round_trip_onto_memories_and_cerebrum(agent_url, streaming):
    url = agent_url()

    async def conversation():
        said, data = reply_of(await send(url, message("remember: the kettle is in the blue cupboard"), streaming))
        assert said.startswith("Remembered.") and data["ok"] and data["result"]["created"]
        said, data = reply_of(await send(url, message("where is the kettle?"), streaming))
        assert "blue cupboard" in said and data["skill"] == "recall"
        said, data = reply_of(await send(url, message("note that tea is ready", skill="plan"), streaming))
        assert data["skill"] == "plan" and data["result"]["plan"]["steps"]
        said, data = reply_of(await send(url, message("execute: what do I know about the kettle?"), streaming))
        assert data["ok"] and "succeeded" in said
        said, data = reply_of(await send(url, message("plan:"), streaming))
        assert not data["ok"] and data["error"]["code"] == "INVALID_ARGUMENT"

    asyncio.run(asyncio.wait_for(conversation(), 120))


def test_policy_applies_to_agents(start_kernel, data_dir):
    config = BASE + """
[[plugins.governance.rule]]
id = "agents-read-only"
description = "agents without a key may recall but not write memories"
effect = "deny"
services = ["cortex.memories.v1.MemoryService"]
methods = ["Store", "Update", "Delete"]
principals = ["local"]
"""
    _, kt = start_kernel(config, governance=True)
    url = f"http://{plugin_of(kt, 'a2a').address}"

    async def ask(text):
        return reply_of(await send(url, message(text), False))

    said, data = asyncio.run(asyncio.wait_for(ask("remember: agents may not write"), 60))
    assert not data["ok"] and data["error"]["code"] == "PERMISSION_DENIED" and "agents-read-only" in said
    said, data = asyncio.run(asyncio.wait_for(ask("recall: anything"), 60))
    assert data["ok"]
    # an agent with an API key is that key, and the rule on `local` does not hold it back
    from cortex.kernel.security.credentials import KeyStore

    key = KeyStore(data_dir).create("agent-b", [])
    said, data = asyncio.run(asyncio.wait_for(_keyed(url, key), 60))
    assert data["ok"], said
    stored = [e.proof for e in audit_entries(kt) if e.HasField("proof") and e.proof.method == "Store" and e.proof.status == "OK"]
    assert stored[-1].principal == "key:agent-b"
    refused = asyncio.run(asyncio.wait_for(_status_with(url, "ctx_not-a-key"), 60))
    assert refused == 401


async def _keyed(url, key):
    return reply_of(await send(url, message("remember: keyed agents may write"), False, key))


async def _status_with(url, key):
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
        return (await http.post(f"{url}/a2a", json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}})).status_code
