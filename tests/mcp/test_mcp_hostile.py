"""MCP over streamable HTTP against a hostile web page and hostile bodies, on a real loopback
listener: the kernel's one Host/Origin guard refuses a rebound name or a foreign origin with a
message a person can act on; bodies the JSON parser refuses are a 400 with one log line."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from ..conftest import plugin_of
from ..hostile_json import assert_refused_as_bad_json, hostile_bodies

BASE = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "http"]\n[plugins.mcp]\nhttp_listen = "127.0.0.1:0"\n'
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "hostile-test", "version": "1"}}}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.fixture
def mcp(start_kernel):
    _, kt = start_kernel(BASE)
    address = plugin_of(kt, "mcp").address
    return httpx.Client(base_url=f"http://{address}", timeout=60), address.rsplit(":", 1)[1]


def test_a_rebound_name_or_foreign_origin_is_refused_by_the_kernels_guard(mcp):
    client, port = mcp
    for headers in ({"Host": f"evil.example:{port}"}, {"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}):
        reply = client.post("/mcp", content=json.dumps(INITIALIZE), headers={**HEADERS, **headers})
        assert reply.status_code in (403, 421), (headers, reply.status_code, reply.text)
        message = reply.json()["error"]["message"]
        assert "DNS rebinding" in message and "not this machine" in message, message
    for headers in ({}, {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}, {"Host": f"[::1]:{port}"},
                    {"Host": "127.0.0.1"}):
        reply = client.post("/mcp", content=json.dumps(INITIALIZE), headers={**HEADERS, **headers})
        assert reply.status_code == 200, (headers, reply.text)


HOSTILE = hostile_bodies("ping")


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_a_body_the_parser_refuses_is_a_400_with_one_log_line(mcp, caplog, what):
    client, _ = mcp
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        reply = client.post("/mcp", content=HOSTILE[what], headers=HEADERS)
    assert_refused_as_bad_json(reply, caplog.records)
    assert client.post("/mcp", content=json.dumps(INITIALIZE), headers=HEADERS).status_code == 200
