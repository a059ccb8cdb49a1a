"""The rings of docs/ARCHITECTURE.md, held by reading the code's imports (every import: at the top,
inside functions and under TYPE_CHECKING alike):

    plugins/ (and third parties)  import cortex.kernel, cortex.kernel.sdk, cortex.contracts; never another plugin
    kernel/sdk/                   the SDK: imports the core and the security ring
    kernel/  (the core)           imports the security ring; never the SDK, never a plugin
    kernel/security/              imports only the call and provider types it guards

and no module of the kernel takes part in an import circle. `python -m tests.test_architecture
[CHECKOUT]` prints the figures (lines and files per ring, import circles) of this tree or another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

KERNEL = ROOT / "kernel"
# what the security ring may import of the core: the values it checks, and nothing that decides
SECURITY_MAY_IMPORT = {"cortex.kernel.call", "cortex.kernel.method", "cortex.kernel.registry"}
# the only files of the core that import the SDK, and why (cortex.kernel's __getattr__ also forwards
# API 1's moved names there, by name, until plugin API 2)
MAY_IMPORT_THE_SDK = {
    "kernel/testing.py": "API 1's name for the plugin author's fixtures, kept until plugin API 2",
    "kernel/__main__.py": "the program: `python -m cortex.kernel` is `cortex` (nothing imports it)",
}
# the core is minimal: what serves (config, plugin host, registry, router and admission, server, runtime)
CORE_LINE_BUDGET = 3500


def python_files(folder: Path) -> list[Path]:
    return [
        p for p in folder.rglob("*.py")
        if not {"node_modules", "build"} & set(p.parts) and not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))
    ]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["cortex", *parts])


def known_modules() -> set[str]:
    return {module_name(p) for folder in (KERNEL, ROOT / "plugins") for p in python_files(folder)}


def imports(path: Path, known: set[str] | frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `path`; relative ones resolved against its
    package. `from pkg import name` names `pkg.name` where that is a module in `known` (importing a
    sibling module is not importing the package that holds it). A module named by a string literal
    to importlib.import_module or __import__ is an import too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(
                node.args[0].value, str) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            found.append((node.lineno, node.args[0].value))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
            if len(submodules) < len(node.names):
                found.append((node.lineno, module))
            found += [(node.lineno, name) for name in submodules]
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if module == "cortex.plugins"]
    return found


def ring(module: str) -> str:
    for name in ("security", "sdk"):
        if module == f"cortex.kernel.{name}" or module.startswith(f"cortex.kernel.{name}."):
            return name
    if module == "cortex.kernel" or module.startswith("cortex.kernel."):
        return "core"
    return "other"


def kernel_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in python_files(KERNEL)}
    known = set(files)
    return {name: {m for _, m in imports(path, known) if m in known and m != name} for name, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def lines_per_ring() -> dict[str, int]:
    counts = {"core": 0, "security": 0, "sdk": 0}
    for path in python_files(KERNEL):
        counts[ring(module_name(path))] += len(path.read_text(encoding="utf-8").splitlines())
    return counts


def test_the_kernel_has_no_import_circle():
    assert not circles(kernel_graph()), "import circles in kernel/ (break them with a Protocol or a smaller module)"


def test_each_ring_imports_only_what_it_may():
    offences = []
    known = known_modules()
    for path in python_files(KERNEL):
        here = module_name(path)
        where = ring(here)
        for line, module in imports(path, known):
            there = ring(module)
            if where == "security" and there in ("core", "sdk") and module not in SECURITY_MAY_IMPORT:
                offences.append(f"{path.relative_to(ROOT)}:{line}: the security ring imports {module}")
            if where == "core" and there == "sdk" and str(path.relative_to(ROOT)) not in MAY_IMPORT_THE_SDK:
                offences.append(f"{path.relative_to(ROOT)}:{line}: the core imports the SDK ({module})")
            if module.startswith("cortex.plugins"):
                offences.append(f"{path.relative_to(ROOT)}:{line}: the kernel imports a plugin ({module})")
    assert not offences, "\n".join(offences)


def test_plugins_import_only_the_plugin_api_and_the_sdk():
    import cortex.kernel

    api_modules = {f"cortex.kernel.{name}" for name in cortex.kernel.__all__}  # hookspecs: exported as a module
    known = known_modules()
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for folder in (ROOT / "plugins", ROOT / "examples")
        for path in python_files(folder)
        for line, module in imports(path, known)
        if module.startswith("cortex.kernel.") and ring(module) != "sdk" and module not in api_modules
    ]
    assert not offences, "plugins import cortex.kernel and cortex.kernel.sdk only:\n" + "\n".join(offences)


def test_no_plugin_imports_another():
    offences = []
    known = known_modules()
    for path in python_files(ROOT / "plugins"):
        parts = path.relative_to(ROOT / "plugins").parts
        own = parts[0] if len(parts) > 1 else path.stem
        for line, module in imports(path, known):
            pieces = module.split(".")
            if pieces[:2] == ["cortex", "plugins"] and len(pieces) > 2 and pieces[2] != own:
                offences.append(f"plugins/{'/'.join(parts)}:{line}: {module}")
    assert not offences, "\n".join(offences)


def test_plugins_holds_only_plugin_folders():
    loose = [p.name for p in (ROOT / "plugins").iterdir() if p.suffix == ".py" and p.name != "__init__.py"]
    assert not loose, f"plugins/ holds plugin folders; shared code belongs in kernel/sdk/: {loose}"


def test_the_core_stays_minimal():
    counts = lines_per_ring()
    assert counts["core"] <= CORE_LINE_BUDGET, (
        f"kernel/ outside security/ and sdk/ is {counts['core']} lines (budget {CORE_LINE_BUDGET}): what does not "
        "serve belongs in the SDK or a plugin"
    )


def test_the_checkers_catch_what_they_should(tmp_path):
    """The checks above read real imports and find real circles: a submodule import, a relative one
    into another plugin, an import inside a function, and a circle through TYPE_CHECKING."""
    fake = ROOT / "plugins" / "zz_probe"
    path = fake / "plugin.py"
    try:
        fake.mkdir()
        path.write_text(
            "from typing import TYPE_CHECKING\nfrom cortex.kernel.router import Router\nfrom ..mlx import plugin\n"
            "def f():\n    from cortex.kernel.security import credentials\nif TYPE_CHECKING:\n    from cortex.kernel import call\n"
            "import importlib\nimportlib.import_module('cortex.plugins.ollama.plugin')\n__import__('cortex.kernel.runtime')\n"
            "from cortex.kernel import runtime, hookimpl\n"
        )
        found = {module for _, module in imports(path, known_modules())}
        assert {"cortex.kernel.router", "cortex.plugins.mlx.plugin", "cortex.kernel.security.credentials", "cortex.kernel.call",
                "cortex.plugins.ollama.plugin", "cortex.kernel.runtime", "cortex.kernel"} <= found
    finally:
        path.unlink(missing_ok=True)
        fake.rmdir()
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", __import__("cortex.kernel.sdk", fromlist=["__all__"]).__all__)
def test_every_sdk_name_resolves(name):
    import cortex.kernel.sdk

    assert getattr(cortex.kernel.sdk, name) is not None


def test_names_api_1_exported_still_load_from_cortex_kernel_with_a_warning():
    """An outside plugin written for API 1 (`from cortex.kernel import AsgiServer`) keeps loading."""
    import importlib

    import cortex.kernel
    import cortex.kernel.sdk

    fresh = importlib.reload(cortex.kernel)
    for name in sorted(fresh.MOVED_TO_SDK):
        with pytest.warns(DeprecationWarning, match=rf"cortex.kernel.{name} moved to cortex.kernel.sdk"):
            assert getattr(fresh, name) is getattr(cortex.kernel.sdk, name)
    with pytest.raises(AttributeError):
        fresh.NoSuchName  # noqa: B018


if __name__ == "__main__":  # python -m tests.test_architecture [ANOTHER_CHECKOUT]: the figures, here or there
    import sys

    if len(sys.argv) > 1:
        ROOT = Path(sys.argv[1]).resolve()
        KERNEL = ROOT / "kernel"
    graph = kernel_graph()
    for ring_name, count in lines_per_ring().items():
        files = sum(1 for p in python_files(KERNEL) if ring(module_name(p)) == ring_name)
        print(f"{ring_name:9} {count:5} lines in {files} files")
    print(f"import circles: {len(circles(graph))} {circles(graph)}")
