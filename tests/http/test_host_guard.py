"""The kernel's one Host/Origin guard on the HTTP API's listener (the console is served there too):
a page whose name was rebound to 127.0.0.1 reaches the listener from the owner's browser, on
loopback, with no credential; whatever it asks for, its Host or Origin gives it away."""

from __future__ import annotations

import json

import httpx

from cortex.kernel.security.credentials import KeyStore
from cortex.kernel.security.tls import init_ca

from ..conftest import plugin_of

BASE = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp"]\n'
STORE = "/v1/cortex.memories.v1.MemoryService/Store"
JSON = {"Content-Type": "application/json"}


def refused(reply: httpx.Response) -> bool:
    if reply.status_code not in (403, 421):
        return False
    message = reply.json()["error"]["message"]
    return "DNS rebinding" in message and "not this machine" in message


def test_every_path_of_the_listener_is_guarded_and_a_null_origin_writes_nothing(start_kernel):
    _, kt = start_kernel(BASE)
    client = httpx.Client(base_url=f"http://{plugin_of(kt, 'http').address}", timeout=60)
    port = client.base_url.port
    for path in ("/console/", "/health", "/"):
        reply = client.get(path, headers={"Host": f"evil.example:{port}"})
        assert refused(reply), (path, reply.status_code, reply.text[:200])
    # a sandboxed frame of any page sends Origin: null; a write from it is refused
    reply = client.post(STORE, content=json.dumps({"text": "from a sandboxed frame"}), headers={**JSON, "Origin": "null"})
    assert refused(reply), (reply.status_code, reply.text)
    listed = client.post("/v1/cortex.memories.v1.MemoryService/List", content="{}", headers=JSON).json()
    assert listed.get("memories", []) == []
    # the owner's own browser, by a loopback name
    assert client.get("/console/", headers={"Host": f"localhost:{port}"}).status_code == 200
    assert client.get("/health", headers={"Host": f"127.0.0.1:{port}"}).status_code == 200
    mine = client.post(STORE, content=json.dumps({"text": "mine"}), headers={**JSON, "Origin": f"http://127.0.0.1:{port}"})
    assert mine.status_code == 200, mine.text


def test_a_listener_beyond_loopback_answers_to_its_own_name(start_kernel, data_dir):
    """With TLS and required credentials there is no `local` to abuse: the name a client uses is
    its own business (a certificate for box.example, a key)."""
    tls = init_ca(data_dir)
    key = KeyStore(data_dir).create("web", [])
    env = {"CORTEX_PLUGINS__HTTP__LISTEN": "0.0.0.0:0", "CORTEX_KERNEL__REQUIRE_CREDENTIALS": "true",
           "CORTEX_KERNEL__TLS_CERT": str(tls["cert"]), "CORTEX_KERNEL__TLS_KEY": str(tls["key"])}
    _, kt = start_kernel(BASE, env=env)
    port = plugin_of(kt, "http").address.rsplit(":", 1)[1]
    client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=str(tls["ca"]), timeout=60)
    named = {"Host": f"box.example:{port}"}
    assert client.get("/health", headers=named).status_code == 200
    assert client.get("/console/", headers=named).status_code == 200
    assert client.get("/openapi.json", headers=named).status_code == 401
    stored = client.post(STORE, content=json.dumps({"text": "over https by name"}),
                         headers={**JSON, **named, "Origin": f"https://box.example:{port}", "Authorization": f"Bearer {key}"})
    assert stored.status_code == 200, stored.text
