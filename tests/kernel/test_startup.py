"""Start-up loads nothing the first call does not need: no provider SDK (OpenAI, Ollama), no A2A
SDK, no model, no x509 tooling, in a fresh process serving the default plugins. The A2A listener
accepts from the start and builds its app at its first request."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, urllib.request
    from pathlib import Path
    from cortex.kernel.sdk.testing import RunningKernel, kernel_config

    data = Path(sys.argv[1])
    config = kernel_config(data / "cortex.toml", "[plugins.a2a]\\nlisten = '127.0.0.1:0'\\n", data / "d")
    kernel = RunningKernel(config)
    kernel.start()
    heavy = ["openai", "ollama", "a2a.server", "mlx.core", "mlx_lm", "cryptography.x509", "mcp.server"]
    def loaded(name):
        module = sys.modules.get(name)
        return module is not None and type(module).__name__ != "_LazyModule"
    before = {name: loaded(name) for name in heavy}
    a2a = kernel.kernel.host.records["a2a"].obj
    with urllib.request.urlopen(f"http://{a2a.address}/.well-known/agent-card.json", timeout=30) as reply:
        card = json.loads(reply.read())
    after = loaded("a2a.server")
    kernel.stop()
    print(json.dumps({"before": before, "card": card.get("name"), "a2a_after_first_request": after}))
    """
)


def test_serving_imports_no_sdk_and_no_model_until_a_call_needs_it(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OPENAI_API_KEY": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not any(report["before"].values()), report["before"]
    assert report["card"] and report["a2a_after_first_request"]


def test_every_built_in_plugin_registers_what_its_manifest_says(start_kernel, caplog):
    """The `cortex.contracts` manifest (read without importing a plugin: `cortex plugins list`, governance)
    is what each built-in plugin registers: no `plugin.manifest_mismatch` on start (memories' ArchiveService was missing)."""
    _, kt = start_kernel(governance=True)
    mismatches = [r.getMessage() for r in caplog.records if "plugin.manifest_mismatch" in r.getMessage()]
    assert not mismatches, mismatches
    assert "cortex.memories.v1.ArchiveService" in kt.kernel.host.records["memories"].contracts
