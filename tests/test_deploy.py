"""The deployment files are valid: Dockerfile lint (hadolint), Kubernetes manifests against the
API schemas (kubernetes-validate), the compose file against the Compose spec (check-jsonschema)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: scripts/setup.sh test installs it")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_validate():
    manifests = sorted(str(p) for p in (ROOT / "deploy" / "k8s").glob("*.yaml"))
    assert len(manifests) == 4
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", "1.33", *manifests], capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("passed for resource") == 4, output


def test_compose_file_validates():
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(ROOT / "deploy" / "compose.yaml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


CLUSTER = ROOT / "deploy" / "cluster"


def test_the_cluster_manifests_validate():
    """Three kernels (a StatefulSet: each its own chain), PostgreSQL and NATS, and their services."""
    manifests = sorted(str(p) for p in (CLUSTER / "k8s").glob("*.yaml"))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", "1.33", *manifests], capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("passed for resource") == 8, output
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(CLUSTER / "compose.yaml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cluster_config_is_the_one_the_kernels_mount_and_a_kernel_takes_it(monkeypatch):
    import tomllib

    import yaml

    from cortex.kernel.config import load_config
    from cortex.plugins.events.nats_bus import check_url
    from cortex.plugins.memories.plugin import store_opener

    text = (CLUSTER / "cortex.toml").read_text()
    mounted = yaml.safe_load((CLUSTER / "k8s" / "configmap.yaml").read_text())["data"]["cortex.toml"]
    assert tomllib.loads(mounted) == tomllib.loads(text)
    config = load_config(CLUSTER / "cortex.toml", env={})
    # the settings as a kernel reads them: PostgreSQL beyond loopback over verified TLS, NATS over TLS with a token
    monkeypatch.setenv("CORTEX_POSTGRES_DSN", "postgresql://cortex:pw@postgres:5432/cortex?sslmode=verify-full")
    store_opener(config.plugin_section("memories"), ROOT)
    events = config.plugin_section("events")
    check_url(events["nats_url"], events["nats_tls_ca"], "a token")
    monkeypatch.setenv("CORTEX_POSTGRES_DSN", "postgresql://cortex:pw@postgres:5432/cortex")
    with pytest.raises(ValueError, match="sslmode=verify-full"):
        store_opener(config.plugin_section("memories"), ROOT)
