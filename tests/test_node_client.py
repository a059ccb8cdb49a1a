"""The contracts stand alone: a Node.js client (examples/node-client, @grpc/grpc-js and
@grpc/proto-loader on protos/) stores and searches a memory and lists plugins on a running kernel."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .conftest import ROOT, cortex_env, run_cli

CLIENT = ROOT / "examples" / "node-client"


@pytest.fixture(scope="session")
def node_client() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed (scripts/setup.sh test installs them); the Node.js client test cannot run")
    if not (CLIENT / "node_modules" / "@grpc" / "grpc-js").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT, check=True, capture_output=True, timeout=300)
    return node


def test_node_client_stores_searches_and_lists_plugins(node_client, serve_process, tmp_path):
    kernel = serve_process(env=cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED='["ollama", "openai"]'))
    done = subprocess.run([node_client, "client.js", kernel.target], cwd=CLIENT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["stored"]["created"] is True
    assert result["search"][0]["id"] == result["stored"]["id"]
    assert {"name": "memories", "state": "STATE_LOADED"} in result["plugins"]
    assert result["invalid_store"]["code"] == "INVALID_ARGUMENT"


def test_node_client_calls_with_a_key_over_tls(node_client, serve_process, tmp_path):
    """The README's way beyond loopback: TLS (`cortex tls init`) and an API key, nothing else."""
    data = tmp_path / "data"
    env = cortex_env(data, CORTEX_PLUGINS__DISABLED='["ollama", "openai"]', CORTEX_KERNEL__REQUIRE_CREDENTIALS="true")
    assert run_cli("tls", "init", env=env).returncode == 0
    env.update(CORTEX_KERNEL__TLS_CERT=str(data / "tls" / "server.pem"), CORTEX_KERNEL__TLS_KEY=str(data / "tls" / "server.key"))
    key = run_cli("keys", "create", "node-app", "--scope", "cortex.memories.v1.*/*", "--scope", "cortex.kernel.v1.*/*", env=env)
    kernel = serve_process(env=env)
    client_env = {"PATH": "/usr/bin:/bin", "CORTEX_TLS_CA": str(data / "tls" / "ca.pem")}
    refused = subprocess.run([node_client, "client.js", kernel.target], cwd=CLIENT, capture_output=True, text=True,
                             timeout=120, env=client_env)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    done = subprocess.run([node_client, "client.js", kernel.target], cwd=CLIENT, capture_output=True, text=True,
                          timeout=120, env={**client_env, "CORTEX_TOKEN": key.stdout.strip()})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"]["created"] is True


def test_node_client_reports_an_unreachable_kernel(node_client, unused_tcp_port):
    done = subprocess.run([node_client, "client.js", f"127.0.0.1:{unused_tcp_port}"], cwd=CLIENT, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "CORTEX_NODE_TEXT": "x"})
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr
