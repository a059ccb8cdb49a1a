"""The plugin kit as a third-party author meets it: `cortex plugin new`, its tests passing as
generated, `cortex plugin codegen --check`, and the plugin served by a real kernel over gRPC,
HTTP/JSON and MCP with its .proto comments as descriptions."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import httpx
import pytest

from ..conftest import cortex_env, pip_install, run_cli


@pytest.fixture(scope="module")
def bookmarks(tmp_path_factory):
    """`cortex plugin new bookmarks`, installed (as pip would) into a folder of its own."""
    root = tmp_path_factory.mktemp("kit")
    started = time.monotonic()
    made = run_cli("plugin", "new", "bookmarks", "--dir", str(root), env=cortex_env(root / "unused"))
    assert made.returncode == 0, made.stderr
    package, site = root / "cortex-bookmarks", root / "site"
    pip_install("--target", str(site), str(package))
    return package, site, started


def test_a_new_plugin_passes_its_own_tests_as_generated(bookmarks):
    package, site, started = bookmarks
    env = cortex_env(package / "no-data", PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "5 passed" in done.stdout
    assert "__pycache__/" in (package / ".gitignore").read_text()  # a fresh `git add .` takes no build output
    print(f"cortex plugin new -> passing tests: {time.monotonic() - started:.1f} s")
    checked = run_cli("plugin", "codegen", "--check", "--root", str(package), env=env)
    assert checked.returncode == 0, checked.stderr
    proto = package / "protos" / "bookmarks" / "v1" / "bookmarks.proto"
    proto.write_text(proto.read_text().replace("// Add keeps one note", "// Add keeps one bookmark"))
    stale = run_cli("plugin", "codegen", "--check", "--root", str(package), env=env)
    assert stale.returncode == 1 and "run `cortex plugin codegen`" in stale.stderr
    assert run_cli("plugin", "codegen", "--root", str(package), env=env).returncode == 0
    assert run_cli("plugin", "codegen", "--check", "--root", str(package), env=env).returncode == 0


def test_the_kernel_serves_it_on_every_surface_with_its_comments(bookmarks, serve_process, tmp_path):
    from mcp import Client

    from cortex.kernel.sdk.testing import authenticated

    _, site, _ = bookmarks
    sys.path.insert(0, str(site))
    try:
        from bookmarks.v1 import bookmarks_pb2, bookmarks_pb2_grpc
    finally:
        sys.path.remove(str(site))
    data = tmp_path / "data"
    env = cortex_env(data, PYTHONPATH=str(site), CORTEX_PLUGINS__MCP__HTTP_LISTEN="127.0.0.1:0")
    kernel = serve_process(env=env)
    from cortex.kernel.security.credentials import read_admin_token

    token = read_admin_token(data)
    channel = authenticated(grpc.insecure_channel(kernel.target), token)
    stub = bookmarks_pb2_grpc.BookmarksServiceStub(channel)
    assert stub.Add(bookmarks_pb2.AddRequest(text="https://example.org"), timeout=5).number == 1
    listed = run_cli("plugins", "list", "--json", env=env)
    assert "bookmarks" in listed.stdout
    # HTTP/JSON: the route and its description from the .proto comment
    import json
    import re

    http = re.search(r"url=http://(\S+)/openapi.json", kernel.stderr()) or re.search(r'"url": "http://([^/"]+)/openapi', kernel.stderr())
    assert http, kernel.stderr()[-2000:]
    api = httpx.Client(base_url=f"http://{http.group(1)}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    document = api.get("/openapi.json").json()
    operation = document["paths"]["/v1/bookmarks.v1.BookmarksService/List"]["post"]
    assert operation["description"].startswith("List returns the caller's notes, oldest first.")
    listed = api.post("/v1/bookmarks.v1.BookmarksService/List", json={})
    assert listed.status_code == 200 and listed.json()["notes"] == ["https://example.org"]
    # MCP: the tool and its description
    mcp = re.search(r'"url": "(http://[^"]+/mcp)"', kernel.stderr()) or re.search(r"url=(http://\S+/mcp)", kernel.stderr())
    assert mcp, kernel.stderr()[-2000:]

    async def tools():
        async with Client(mcp.group(1)) as client:
            return {t.name: t.description for t in (await client.list_tools()).tools}

    import asyncio

    described = asyncio.run(asyncio.wait_for(tools(), 60))
    assert any(d.startswith("Add keeps one note") for d in described.values()), json.dumps(described)[:2000]
    channel.close()


def test_the_example_plugins_own_tests_pass_with_cortex_testing():
    from ..conftest import ROOT

    example = ROOT / "examples" / "cortex-echo"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=example,
                          env=cortex_env(example / "no-data"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 passed" in done.stdout


def test_hook_calls_are_traced_on_request(start_kernel, monkeypatch, caplog):
    monkeypatch.setenv("CORTEX_TRACE_HOOKS", "1")
    start_kernel()
    traced = [r.getMessage() for r in caplog.records if "hook.trace" in r.getMessage()]
    assert any("cortex_configure" in line for line in traced) and any("cortex_start" in line for line in traced)


@pytest.mark.parametrize(("given", "refused"), [("reading-list", False), ("reading_list", False),
                                                ("Reading-List", True), ("2-list", True), ("class", True)])
def test_a_plugin_name_may_hold_a_dash_as_the_docs_say(tmp_path, given, refused):
    made = run_cli("plugin", "new", given, "--dir", str(tmp_path), env=cortex_env(tmp_path / "unused"))
    if refused:
        assert made.returncode == 1 and "2-40 lowercase letters, digits, '_' and '-'" in made.stderr
        assert not list(tmp_path.glob("cortex-*"))
        return
    assert made.returncode == 0, made.stderr
    package_name = given.replace("-", "_")
    package = tmp_path / f"cortex-{package_name.replace('_', '-')}"
    assert (package / "src" / package_name / "plugin.py").is_file()
    assert f'{package_name} = "{package_name}.plugin:plugin"' in (package / "pyproject.toml").read_text()
