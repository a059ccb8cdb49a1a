"""The console's server side, over plain HTTP: its pages are public static files with a strict
CSP, its data only through the API under the caller's credential (who am I comes from the
credential, not from what the browser says), a foreign page cannot make changes, and the
activity it charts counts what the kernel routes."""

from __future__ import annotations

import time

import httpx
import pytest

from cortex.kernel import hookimpl
from cortex.kernel.security.credentials import KeyStore
from cortex.kernel.security.tls import init_ca

from ..conftest import plugin_of, wait_for
from ..http.test_http_api import call

BASE = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp"]\n'


@pytest.fixture
def clients():
    made: list[httpx.Client] = []

    def client(**kw) -> httpx.Client:
        made.append(httpx.Client(timeout=30, **kw))
        return made[-1]

    yield client
    for c in made:
        c.close()


@pytest.fixture
def http(start_kernel, clients):
    def start(config: str = BASE, **kw):
        _, kt = start_kernel(config, governance=True, **kw)
        return clients(base_url=f"http://{plugin_of(kt, 'http').address}"), kt

    return start


def test_pages_are_static_files_with_a_strict_policy(http):
    client, _ = http()
    assert client.get("/").headers["location"] == "/console/"  # a browser at the API's address lands here
    assert client.get("/console").status_code == 308
    shell = client.get("/console/")
    assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
    csp = shell.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and shell.headers["x-content-type-options"] == "nosniff"
    for deep in ("/console/memories", "/console/memories/m0123", "/console/traces/abc"):  # bookmarkable
        assert client.get(deep).text == shell.text
    script = client.get("/console/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    again = client.get("/console/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/console/vendor/uPlot.esm.js").status_code == 200
    for missing in ("/console/nothing.js", "/console/../pyproject.toml", "/console/%2e%2e/plugin.py", "/console/pages/"):
        assert client.get(missing).status_code == 404, missing
    assert client.post("/console/", content=b"x").status_code == 405


def test_beyond_loopback_the_pages_load_but_every_figure_needs_a_credential(http, clients, data_dir):
    tls = init_ca(data_dir)
    key = KeyStore(data_dir).create("browser", [])
    env = {"CORTEX_PLUGINS__HTTP__LISTEN": "0.0.0.0:0", "CORTEX_KERNEL__REQUIRE_CREDENTIALS": "true",
           "CORTEX_KERNEL__TLS_CERT": str(tls["cert"]), "CORTEX_KERNEL__TLS_KEY": str(tls["key"])}
    _, kt = http(env=env)
    port = plugin_of(kt, "http").address.rsplit(":", 1)[1]
    client = clients(base_url=f"https://127.0.0.1:{port}", verify=str(tls["ca"]))
    assert client.get("/console/login").status_code == 200  # the sign-in page itself is public
    refused = call(client, "cortex.console.v1.ConsoleService/WhoAmI", {})
    assert refused.status_code == 401 and "Bearer" in refused.json()["error"]["message"]
    me = call(client, "cortex.console.v1.ConsoleService/WhoAmI", {}, {"Authorization": f"Bearer {key}"})
    assert me.json() == {"principal": "key:browser"}


def test_who_am_i_comes_from_the_credential_never_from_the_caller(http, data_dir):
    client, kt = http()
    assert call(client, "cortex.console.v1.ConsoleService/WhoAmI", {}).json() == {"principal": "local"}
    # a browser (or anything else) naming itself admin is refused, not believed
    spoofed = call(client, "cortex.console.v1.ConsoleService/WhoAmI", {}, {"x-cortex-principal": "admin"})
    assert spoofed.status_code in (401, 403) and "act_as" in spoofed.json()["error"]["message"]
    token = (kt.data_dir / "admin.token").read_text().strip()
    assert call(client, "cortex.console.v1.ConsoleService/WhoAmI", {}, {"Authorization": f"Bearer {token}"}).json() == {
        "principal": "admin", "admin": True}


def test_a_foreign_page_cannot_change_anything(http):
    """Cross-site request forgery: the console keeps no cookie, so a foreign page's request carries
    no credential; without one, loopback trusts only requests from its own origin, and the API
    takes only JSON (a cross-origin JSON POST needs a CORS preflight, which it never grants)."""
    client, _ = http()
    store = "cortex.memories.v1.MemoryService/Store"
    forged = call(client, store, {"text": "planted"}, {"Origin": "http://evil.example"})
    assert forged.status_code == 403 and "Origin 'http://evil.example' is not this machine" in forged.json()["error"]["message"]
    form = client.post(f"/v1/{store}", content=b"text=planted", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    preflight = client.options(f"/v1/{store}", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    found = call(client, "cortex.memories.v1.MemoryService/Search", {"query": "planted", "mode": "SEARCH_MODE_KEYWORD"})
    assert found.json().get("results", []) == []
    assert call(client, store, {"text": "mine"}, {"Origin": str(client.base_url).rstrip("/")}).status_code == 200


def test_without_the_console_plugin_there_are_no_pages(http):
    client, _ = http(BASE.replace('"mcp"]', '"mcp", "console"]'))
    assert client.get("/console/").status_code == 404
    assert client.get("/").headers["location"] == "/openapi.json"


def test_activity_counts_what_the_kernel_routes_by_method_and_decision(http):
    client, _ = http(BASE + "[plugins.console]\nsample_seconds = 0.2\n")
    for text in ("one", "two", "three"):
        assert call(client, "cortex.memories.v1.MemoryService/Store", {"text": text}).status_code == 200
    denied = call(client, "cortex.governance.v1.GovernanceService/ListPolicies", {})  # local may not
    assert denied.status_code == 403
    assert call(client, "cortex.memories.v1.MemoryService/Get", {"id": "m-none"}).status_code == 404

    def activity():
        return call(client, "cortex.console.v1.ConsoleService/GetActivity", {"minutes": 60}).json()

    wait_for(lambda: any(int(s.get("memories", -1)) == 3 for s in activity()["samples"]), "the sampled memory count")
    samples = activity()["samples"]
    totals = {k: sum(int(s.get(k, 0)) for s in samples) for k in ("calls", "allowed", "denied", "errors")}
    by = {(b["method"], b.get("provider", "")): b for s in samples for b in s.get("by_method", [])}
    assert by[("cortex.memories.v1.MemoryService/Store", "memories")]["calls"] == "3"
    assert by[("cortex.governance.v1.GovernanceService/ListPolicies", "")]["denied"] == "1"
    assert by[("cortex.memories.v1.MemoryService/Get", "memories")]["errors"] == "1"
    assert totals["denied"] >= 1 and totals["errors"] >= 1 and totals["calls"] == totals["allowed"] + totals["denied"]
    assert not any(b["method"].endswith("/Stats") for s in samples for b in s.get("by_method", []))  # its own polling is not counted
    assert all(float(s.get("p99_ms", 0)) >= float(s.get("p50_ms", 0)) for s in samples)
    too_far = call(client, "cortex.console.v1.ConsoleService/GetActivity", {"minutes": 100000})
    assert too_far.status_code == 400 and "the limit is 1440" in too_far.json()["error"]["message"]
    negative = call(client, "cortex.console.v1.ConsoleService/GetActivity", {"minutes": -5})
    assert negative.status_code == 400


def test_bad_settings_are_refused_with_what_to_do(start_kernel):
    _, kt = start_kernel(BASE + "[plugins.console]\nkeep_minutes = 5\n")
    assert "keep_minutes >= 60" in kt.kernel.host.records["console"].error
    _, kt = start_kernel(BASE + "[plugins.console]\nsample_second = 5\n")
    assert "sample_second" in kt.kernel.host.records["console"].error
    _, kt = start_kernel(BASE + '[plugins.console]\nsample_seconds = "often"\n')
    assert "sample_seconds and keep_minutes are numbers" in kt.kernel.host.records["console"].error


class _Pages:
    """A third-party plugin offering pages through the hook (an ASGI app answering its name)."""

    def __init__(self, offered):
        self.offered = offered

    @hookimpl
    def cortex_web_pages(self):
        if isinstance(self.offered, Exception):
            raise self.offered
        return {prefix: _answer(text) for prefix, text in self.offered.items()}


def _answer(text: str):
    async def app(scope, receive, send):
        body = f"{text} at {scope['path']} under {scope['root_path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    return app


def test_plugins_add_pages_through_the_hook_and_cannot_take_the_api(http):
    plugins = [("pages_a", _Pages({"/notes": "notes", "console": "impostor", "/v1": "takeover", "/metrics": "shadow"})),
               ("pages_b", _Pages(RuntimeError("no pages today")))]
    client, kt = http(plugins=plugins)
    assert client.get("/notes/today").text == "notes at /notes/today under /notes"
    assert client.get("/console/").headers["content-security-policy"]  # the console kept its prefix (loaded first)
    assert call(client, "cortex.console.v1.ConsoleService/WhoAmI", {}).json() == {"principal": "local"}  # /v1 is the API's
    assert "cortex_calls" in client.get("/metrics").text  # and so are its own routes
    assert kt.kernel.host.records["pages_b"].state == "loaded"  # a failing hook loses its pages, nothing else


def test_the_sampler_survives_the_memories_plugin_going_away(http):
    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

    client, kt = http(BASE + "[plugins.console]\nsample_seconds = 0.1\n")
    assert call(client, "cortex.memories.v1.MemoryService/Store", {"text": "kept"}).status_code == 200
    plugins = kt.stub(kernel_pb2_grpc.PluginServiceStub)

    def memories_sampled() -> int:
        samples = call(client, "cortex.console.v1.ConsoleService/GetActivity", {"minutes": 60}).json()["samples"]
        return int(samples[-1].get("memories", -1))

    wait_for(lambda: memories_sampled() == 1, "the memory count")
    plugins.Disable(kernel_pb2.DisableRequest(name="memories"))
    time.sleep(0.5)  # several polls with no memories contract to ask
    assert not plugin_of(kt, "console").sampler.done()
    assert memories_sampled() == 1  # the last count known stands
    plugins.Enable(kernel_pb2.EnableRequest(name="memories"))
    assert call(client, "cortex.memories.v1.MemoryService/Store", {"text": "and another"}).status_code == 200
    wait_for(lambda: memories_sampled() == 2, "the memory count after memories came back")
