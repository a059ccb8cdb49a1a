"""The A2A listener against a hostile web page and hostile bodies, on a real loopback listener:
a page whose name was rebound to 127.0.0.1 (Host: evil.example), or any page posting across
origins (Origin: http://evil.example, or null from a sandboxed frame), reads no memory and writes
none; bodies the JSON parser refuses are a 400 with one log line."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest

from ..conftest import plugin_of
from ..hostile_json import assert_refused_as_bad_json, hostile_bodies

BASE = '[plugins]\ndisabled = ["ollama", "openai", "mcp", "http"]\n'
SECRET = "the safe code is 4711"


def send_message(text: str) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
        "role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": text}]}}}


@pytest.fixture
def agent(start_kernel):
    _, kt = start_kernel(BASE)
    address = plugin_of(kt, "a2a").address
    client = httpx.Client(base_url=f"http://{address}", timeout=60, headers={"A2A-Version": "1.0"})

    def ask(text: str, headers: dict | None = None, content_type: str = "application/json") -> httpx.Response:
        return client.post("/a2a", content=json.dumps(send_message(text)),
                           headers={"Content-Type": content_type, **(headers or {})})

    return client, ask, address.rsplit(":", 1)[1]


def said(reply: httpx.Response) -> str:
    assert reply.status_code == 200, reply.text
    return reply.json()["result"]["message"]["parts"][0]["text"]


def test_a_rebound_or_cross_origin_page_neither_reads_nor_writes_memories(agent):
    client, ask, port = agent
    assert said(ask(f"remember: {SECRET}")).startswith("Remembered.")
    hostile = [
        {"Host": f"evil.example:{port}"},
        {"Host": "evil.example"},
        {"Origin": "http://evil.example"},
        {"Origin": f"http://evil.example:{port}", "Host": f"evil.example:{port}"},
        {"Origin": "null"},  # a sandboxed frame of any page
    ]
    for headers in hostile:
        for content_type in ("application/json", "text/plain"):
            reply = ask("recall: what is the safe code?", headers, content_type)
            assert reply.status_code in (403, 421), (headers, reply.status_code, reply.text)
            assert "4711" not in reply.text
            message = reply.json()["error"]["message"]
            assert "DNS rebinding" in message and "not this machine" in message, message
            assert ask("remember: the attacker was here", headers, content_type).status_code in (403, 421)
    card = client.get("/.well-known/agent-card.json", headers={"Host": f"evil.example:{port}"})
    assert card.status_code in (403, 421)
    # the owner, on loopback by a loopback name (a local dev page's origin too), is served
    for headers in ({}, {"Host": f"localhost:{port}"}, {"Origin": "http://localhost:5173"}, {"Host": f"127.0.0.1:{port}"}):
        assert "4711" in said(ask("recall: what is the safe code?", headers)), headers
    assert "attacker" not in said(ask("recall: who was here? the attacker?"))


HOSTILE = hostile_bodies("SendMessage")


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_a_body_the_parser_refuses_is_a_400_with_one_log_line(agent, caplog, what):
    client, ask, _ = agent
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        reply = client.post("/a2a", content=HOSTILE[what], headers={"Content-Type": "application/json"})
    assert_refused_as_bad_json(reply, caplog.records)
    assert said(ask("remember: the agent still answers")).startswith("Remembered.")
