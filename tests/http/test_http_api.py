"""The HTTP/JSON API against a real kernel on loopback: generated routes for unary and streaming
methods, errors with gRPC status names, OpenAPI, probes, metrics, keys and TLS, rate limit, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from cortex.kernel.security.credentials import KeyStore
from cortex.kernel.security.tls import init_ca

from ..conftest import FakeClock, audit_entries, plugin_of, wait_for

BASE = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp"]\n'


@pytest.fixture
def api(start_kernel):
    def start(config: str = BASE, env: dict | None = None, **kw):
        _target, kt = start_kernel(config, env=env, **kw)
        http = plugin_of(kt, "http")
        return httpx.Client(base_url=f"http://{http.address}", timeout=60), kt

    return start


def call(client, path: str, body, headers: dict | None = None, **kw):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(f"/v1/{path}", content=content, headers={"Content-Type": "application/json", **(headers or {})}, **kw)


def test_unary_methods_take_and_give_protobuf_json(api):
    client, _ = api()
    stored = call(client, "cortex.memories.v1.MemoryService/Store", {"text": "The heron nests by the lake", "tags": ["birds"]})
    assert stored.status_code == 200, stored.text
    memory_id = stored.json()["id"]
    # the JSON mapping's lowerCamelCase names are accepted too
    found = call(client, "cortex.memories.v1.MemoryService/Search", {"query": "where do birds live", "topK": 1})
    assert found.status_code == 200
    result = found.json()["results"][0]
    assert result["memory"]["id"] == memory_id and result["memory"]["tags"] == ["birds"]
    assert "SEARCH_MODE_SEMANTIC" in result["matched"]
    info = call(client, "cortex.kernel.v1.KernelService/GetInfo", b"")
    assert info.status_code == 200 and info.json()["version"]


def test_server_streaming_methods_answer_with_server_sent_events(api):
    client, _ = api()
    reply = call(client, "cortex.models.v1.ModelService/GenerateStream", {"prompt": "hello", "max_tokens": 4, "seed": 1})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in reply.text.split("\n\n") if b.strip()]
    events = [(b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: "))) for b in blocks]
    assert events[-1] == ("end", {})
    final = events[-2][1]
    assert final["done"] and final["provider"] == "mlx" and final["usage"]["completion_tokens"] == 4
    assert all(kind == "message" for kind, _ in events[:-1])


def test_errors_carry_the_grpc_status_and_a_matching_http_status(api):
    client, _ = api(BASE, governance=True)
    cases = [
        ("cortex.memories.v1.MemoryService/Search", b"{not json", 400, "INVALID_ARGUMENT", "not valid JSON"),
        ("cortex.memories.v1.MemoryService/Search", {"bogus": 1}, 400, "INVALID_ARGUMENT", "no field named"),
        ("cortex.memories.v1.MemoryService/Search", [1, 2], 400, "INVALID_ARGUMENT", "must be a JSON object"),
        ("cortex.memories.v1.MemoryService/Store", {"text": ""}, 400, "INVALID_ARGUMENT", "text is empty"),
        ("cortex.memories.v1.MemoryService/Get", {"id": "nope"}, 404, "NOT_FOUND", "no memory"),
        ("cortex.memories.v1.MemoryService/Nope", {}, 404, "NOT_FOUND", "has no method 'Nope'; its methods: Store"),
        ("cortex.governance.v1.GovernanceService/AddPolicy", {}, 403, "PERMISSION_DENIED", "builtin/local-never-administers"),
        ("cortex.memories.v1.MemoryService/Store", {"text": "x" * (9 << 20)}, 413, "RESOURCE_EXHAUSTED", "max_body_bytes"),
    ]
    for path, body, status, code, words in cases:
        reply = call(client, path, body)
        assert reply.status_code == status, (path, reply.text)
        error = reply.json()["error"]
        assert error["code"] == code and words in error["message"], error
    assert client.get("/v1/cortex.memories.v1.MemoryService/Search").status_code == 405
    assert call(client, "cortex.memories.v1.MemoryService/List", {}).json().get("memories", []) == []  # nothing stored


def test_a_disabled_plugins_route_names_the_plugin(api):
    client, _ = api('[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp", "echo"]\n')
    reply = call(client, "cortex_echo.v1.EchoService/Echo", {"message": "x"})
    assert reply.status_code == 404
    assert "provided by plugin 'echo', which is disabled" in reply.json()["error"]["message"]


def test_openapi_document_validates_and_lists_every_method(api):
    from openapi_spec_validator import validate

    client, kt = api()
    document = client.get("/openapi.json").json()
    validate(document)
    served = {f"/v1/{s.full_name}/{m}" for s in kt.kernel.registry.served() for m in s.methods}
    assert served <= set(document["paths"])
    store = document["paths"]["/v1/cortex.memories.v1.MemoryService/Store"]["post"]
    assert store["description"].startswith("Store keeps a memory")
    schema = document["components"]["schemas"]["cortex.memories.v1.StoreRequest"]
    assert {"text", "kind", "tags", "metadata", "source", "ttl_seconds"} <= set(schema["properties"])


def test_probes_and_prometheus_metrics(api):
    client, _ = api()
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    call(client, "cortex.memories.v1.MemoryService/Store", {"text": "metrics count this"})
    text = client.get("/metrics").text
    assert 'cortex_calls_total{code="OK",method="Store",provider="memories",service="cortex.memories.v1.MemoryService"} 1.0' in text
    assert "cortex_call_latency_seconds_bucket" in text and 'cortex_decisions_total{effect="allow"}' in text
    assert 'cortex_provider_circuit_state{provider="mlx",service="cortex.models.v1.ModelService"} 0.0' in text


def test_a_non_loopback_listener_needs_tls_and_credentials(api, start_kernel, data_dir):
    _, kt = start_kernel(BASE, env={"CORTEX_PLUGINS__HTTP__LISTEN": "0.0.0.0:0"})
    record = kt.kernel.host.records["http"]
    assert record.state == "broken" and "is not loopback, so it needs TLS and credentials" in record.error
    kt.stop()
    _, kt = start_kernel(BASE + '[plugins.http]\ntoken = "s3cret"\n')
    assert "[plugins.http] token is no longer a setting: API keys replace it" in kt.kernel.host.records["http"].error
    kt.stop()
    tls = init_ca(data_dir)
    key = KeyStore(data_dir).create("web", [])
    env = {"CORTEX_PLUGINS__HTTP__LISTEN": "0.0.0.0:0", "CORTEX_KERNEL__REQUIRE_CREDENTIALS": "true",
           "CORTEX_KERNEL__TLS_CERT": str(tls["cert"]), "CORTEX_KERNEL__TLS_KEY": str(tls["key"])}
    _, kt = start_kernel(BASE, env=env, governance=True)
    port = plugin_of(kt, "http").address.rsplit(":", 1)[1]
    client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=str(tls["ca"]), timeout=60)
    refused = client.get("/openapi.json")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHENTICATED"
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="cortex"'
    assert client.get("/openapi.json", headers={"Authorization": "Bearer wrong"}).status_code == 401
    with_key = {"Authorization": f"Bearer {key}"}
    assert client.get("/openapi.json", headers=with_key).status_code == 200
    stored = call(client, "cortex.memories.v1.MemoryService/Store", {"text": "over https"}, headers=with_key)
    assert stored.status_code == 200, stored.text
    assert client.get("/health").status_code == 200  # probes stay open
    stores = [e.proof for e in audit_entries(kt) if e.HasField("proof") and e.proof.method == "Store"]
    assert (stores[-1].principal, stores[-1].actor) == ("key:web", "plugin:http")


def test_rate_limit_answers_429_with_retry_after(api):
    client, kt = api(BASE + '[plugins.http]\nrate_limit = 2.0\nrate_burst = 3\n')
    clock = plugin_of(kt, "http").api.limiter.clock = FakeClock()
    codes = [client.get("/openapi.json").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    limited = client.get("/openapi.json")
    assert limited.headers["Retry-After"] == "1" and "rate limit of 2 requests/s" in limited.json()["error"]["message"]
    clock.advance(0.6)  # a token's worth at 2 per second
    assert client.get("/openapi.json").status_code == 200


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict, bytes]]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhooks_are_signed_and_failures_recorded(api, tmp_path, data_dir):
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = BASE + f"""
[[plugins.http.webhook]]
name = "receiver"
url = "http://127.0.0.1:{server.server_port}/hook"
topics = ["memory.*"]
secret_env = "TEST_WEBHOOK_SECRET"

[[plugins.http.webhook]]
name = "nobody-home"
url = "http://127.0.0.1:9/hook"
topics = ["memory.stored"]
secret = "another"
attempts = 2
backoff_seconds = 0.05
"""
    import os

    os.environ["TEST_WEBHOOK_SECRET"] = "hook-secret"
    stored: list[str] = []

    def store_one_more() -> bool:
        text = f"webhooks fire on store ({len(stored)})"
        stored.append(call(client, "cortex.memories.v1.MemoryService/Store", {"text": text}).json()["id"])
        time.sleep(0.05)
        return bool(Receiver.received)

    try:
        client, _ = api(config)
        # a new webhook subscribes from the live end of the log: memories stored before it is live
        # are not for it, so store one more until one arrives
        wait_for(lambda: Receiver.received or store_one_more(), "a webhook delivery")
        failures = data_dir / "plugins" / "http" / "failures.jsonl"
        wait_for(failures.exists, "the failing webhook's failure record")
    finally:
        os.environ.pop("TEST_WEBHOOK_SECRET", None)
        server.shutdown()
    headers, body = Receiver.received[0]
    expected = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Cortex-Signature"], expected)
    event = json.loads(body)
    memory_id = event["subject"]
    assert memory_id in stored and (event["type"], event["specversion"], event["data"]["id"]) == ("memory.stored", "1.0", memory_id)
    failure = json.loads(failures.read_text().splitlines()[0])
    assert failure["webhook"] == "nobody-home" and failure["event_type"] == "memory.stored"


def test_only_json_bodies_are_accepted(api):
    """A web page may POST text/plain or a form to loopback without a CORS preflight; JSON only
    keeps other sites' pages from driving the API through a local browser."""
    client, _ = api()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        reply = client.post("/v1/cortex.memories.v1.MemoryService/Store", content='{"text": "from a web page"}',
                            headers={"Content-Type": content_type} if content_type else {})
        assert reply.status_code == 415 and "application/json" in reply.json()["error"]["message"]
    assert call(client, "cortex.memories.v1.MemoryService/List", {}).json().get("memories", []) == []


def test_a_rebound_name_is_refused_on_loopback(api, data_dir):
    """A web page whose name was rebound to 127.0.0.1 reaches the API from the user's browser, on
    loopback; its Host and Origin still carry the page's name: refused, unless it sends a key."""
    client, _ = api(BASE)
    key = KeyStore(data_dir).create("web", [])
    port = client.base_url.port
    for headers, words in [
        ({"Host": f"evil.example:{port}"}, "Host 'evil.example:"),
        ({"Origin": "http://evil.example"}, "Origin 'http://evil.example'"),
    ]:
        refused = client.get("/openapi.json", headers=headers)
        assert refused.status_code == 403 and words in refused.json()["error"]["message"], refused.text
    for headers in ({"Host": f"localhost:{port}", "Origin": "http://localhost:5173"}, {"Host": f"[::1]:{port}"}):
        assert client.get("/openapi.json", headers=headers).status_code == 200
    with_key = {"Host": f"cortex.internal:{port}", "Authorization": f"Bearer {key}"}
    assert client.get("/openapi.json", headers=with_key).status_code == 200


def test_the_rate_limit_follows_the_principal_not_its_headers(api, data_dir):
    """Rotating Authorization headers does not escape the limit (failed logins count against the
    address); a key has its own bucket."""
    client, _ = api(BASE + '[kernel]\nrequire_credentials = true\n[plugins.http]\nrate_limit = 1.0\nrate_burst = 3\n')
    key = KeyStore(data_dir).create("app", [])
    codes = [client.get("/openapi.json", headers={"Authorization": f"Bearer guess-{i}"}).status_code for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    codes = [client.get("/openapi.json", headers={"Authorization": f"Bearer {key}"}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
