"""The plugin API: every name it promises resolves, the hook reference is generated from the
hookspecs, and a plugin for another API version is reported broken (its edges with the kernel:
tests/test_architecture.py)."""

from __future__ import annotations

import pytest

from .conftest import ROOT


@pytest.mark.parametrize("name", __import__("cortex.kernel", fromlist=["__all__"]).__all__)
def test_every_exported_name_resolves(name):
    import cortex.kernel

    assert getattr(cortex.kernel, name) is not None


def test_the_hook_reference_is_generated_from_the_hookspecs():
    """docs/plugins/hooks.md is what the hookspecs say (regenerate: python -m cortex.plugins.devkit.hook_docs);
    every hook has a docstring."""
    from cortex.plugins.devkit import hook_docs

    assert all(doc for _, _, doc in hook_docs.hooks()), [name for name, _, doc in hook_docs.hooks() if not doc]
    assert (ROOT / "docs" / "plugins" / "hooks.md").read_text(encoding="utf-8") == hook_docs.markdown(), (
        "docs/plugins/hooks.md is stale: python -m cortex.plugins.devkit.hook_docs > docs/plugins/hooks.md"
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
