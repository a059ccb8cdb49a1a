"""The edges between the kernel and its plugins, held by reading the code: a plugin imports only
`cortex.kernel` (the plugin API), never one of its submodules, nor another plugin; the kernel
imports no plugin; every name the API promises resolves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

# libraries the model plugins share: plain modules, not plugins (no entry point, no hooks)
SHARED = {"models_common", "models_cli"}


def python_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.py") if "node_modules" not in p.parts and not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `path`; relative ones resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                module = ".".join(["cortex", *base] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if module == "cortex.plugins"]
    return found


def test_plugins_import_only_the_plugin_api():
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for folder in (ROOT / "plugins", ROOT / "examples")
        for path in python_files(folder)
        for line, module in imports(path)
        if module.startswith("cortex.kernel.")
    ]
    assert not offences, "plugins import cortex.kernel only (add what is missing to its exports):\n" + "\n".join(offences)


def test_no_plugin_imports_another_and_the_kernel_imports_none():
    offences = []
    for path in python_files(ROOT / "plugins"):
        parts = path.relative_to(ROOT / "plugins").parts
        own = parts[0] if len(parts) > 1 else path.stem
        for line, module in imports(path):
            pieces = module.split(".")
            if pieces[:2] == ["cortex", "plugins"] and len(pieces) > 2 and pieces[2] not in (own, *SHARED):
                offences.append(f"plugins/{'/'.join(parts)}:{line}: {module}")
    for path in python_files(ROOT / "kernel"):
        offences += [f"kernel/{path.name}:{line}: {module}" for line, module in imports(path) if module.startswith("cortex.plugins")]
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("name", __import__("cortex.kernel", fromlist=["__all__"]).__all__)
def test_every_exported_name_resolves(name):
    import cortex.kernel

    assert getattr(cortex.kernel, name) is not None


def test_the_edge_checker_catches_what_it_should():
    """The checks above read real imports: a submodule import, and a relative one into another plugin."""
    fake = ROOT / "plugins" / "zz_probe"
    path = fake / "plugin.py"
    try:
        fake.mkdir()
        path.write_text("from cortex.kernel.router import Router\nfrom ..mlx import plugin\n")
        found = [module for _, module in imports(path)]
        assert "cortex.kernel.router" in found and "cortex.plugins.mlx" in found
    finally:
        path.unlink(missing_ok=True)
        fake.rmdir()


def test_the_hook_reference_is_generated_from_the_hookspecs():
    """docs/plugins/hooks.md is what the hookspecs say (regenerate: python -m cortex.kernel.hook_docs);
    every hook has a docstring."""
    from cortex.kernel import hook_docs

    assert all(doc for _, _, doc in hook_docs.hooks()), [name for name, _, doc in hook_docs.hooks() if not doc]
    assert (ROOT / "docs" / "plugins" / "hooks.md").read_text(encoding="utf-8") == hook_docs.markdown(), (
        "docs/plugins/hooks.md is stale: python -m cortex.kernel.hook_docs > docs/plugins/hooks.md"
    )


def test_a_plugin_for_another_api_is_reported_broken_not_half_loaded(start_kernel):
    from cortex.kernel import PLUGIN_API_VERSION, hookimpl

    class FromTheFuture:
        CORTEX_API = ">=2,<3"
        registered = False

        @hookimpl
        def cortex_register(self, registry):
            FromTheFuture.registered = True

    _, kt = start_kernel(plugins=[("future", FromTheFuture())])
    record = kt.kernel.host.records["future"]
    assert record.state == "broken" and not FromTheFuture.registered
    assert f"it supports plugin API >=2,<3, and this kernel's plugin API is {PLUGIN_API_VERSION}" in record.error


def test_cortex_load_plugins_loads_exactly_those(start_kernel, monkeypatch):
    monkeypatch.setenv("CORTEX_LOAD_PLUGINS", "memories, mlx")
    _, kt = start_kernel()
    states = {name: (r.state, r.error) for name, r in kt.kernel.host.records.items()}
    assert states["memories"][0] == "loaded" and states["mlx"][0] == "loaded"
    assert states["http"] == ("disabled", "not named in CORTEX_LOAD_PLUGINS")
    monkeypatch.setenv("CORTEX_LOAD_PLUGINS", "")
    _, kt = start_kernel()
    assert not kt.kernel.host.loaded()  # a broken plugin can always be taken out of the way
