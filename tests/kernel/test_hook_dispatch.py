"""pluggy calls the plugins' hooks, each plugin on its own: pluggy's monitoring sees every call a
plugin gets, a plugin whose hook raises is named while the plugins before and after it go on, and
CORTEX_TRACE_HOOKS traces through that monitoring."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from cortex.kernel import hookimpl, plugin_host
from cortex.kernel.call import CURRENT_CALL
from cortex.kernel.config import load_config
from cortex.kernel.plugin_host import BROKEN, LOADED, PluginHost
from cortex.kernel.registry import ContractRegistry, Health

from ..conftest import write_config

SERVING = object()  # stands for a caller's call: no hook may run as it


class Good:
    """Implements every hook the host calls through pluggy, and notes each call it gets."""

    def __init__(self, name: str):
        self.name, self.got = name, []

    def _got(self, hook: str) -> None:
        assert CURRENT_CALL.get() is None, f"{hook} ran serving a caller"
        self.got.append(hook)

    @hookimpl
    def cortex_configure(self, config, context):
        self._got("cortex_configure")
        assert context.name == self.name

    @hookimpl
    def cortex_register(self, registry):
        self._got("cortex_register")

    @hookimpl
    async def cortex_start(self, context):
        self._got("cortex_start")

    @hookimpl
    async def cortex_stop(self, context):
        self._got("cortex_stop")

    @hookimpl
    async def cortex_health(self):
        self._got("cortex_health")
        return Health(True, self.name)

    @hookimpl
    def cortex_event(self, event):
        self._got("cortex_event")

    @hookimpl
    def cortex_doctor(self, config, running):
        self._got("cortex_doctor")
        return []

    @hookimpl
    def cortex_web_pages(self):
        self._got("cortex_web_pages")
        return {f"/{self.name}": self.name}

    @hookimpl
    def cortex_register_commands(self, cli):
        self._got("cortex_register_commands")


class FailsToStart:
    @hookimpl
    async def cortex_start(self, context):
        raise RuntimeError("cannot open my database")


class FailsItsHealth:
    @hookimpl
    def cortex_health(self):  # a plain function raising inside pluggy's own call, not in an awaited coroutine
        raise RuntimeError("probe exploded")


class FailsItsPages:
    @hookimpl
    def cortex_web_pages(self):
        raise RuntimeError("no pages today")


@pytest.fixture
def host(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEX_LOAD_PLUGINS", "")  # the in-process plugins below, and no installed one
    plugins = [("first", Good("first")), ("bad_start", FailsToStart()), ("bad_health", FailsItsHealth()),
               ("bad_pages", FailsItsPages()), ("last", Good("last"))]
    made = PluginHost(load_config(write_config(tmp_path / "cortex.toml", ""), env={}), ContractRegistry(), plugins)
    made.load()
    return made


def run_every_hook(host: PluginHost) -> tuple[dict, dict]:
    async def lifecycle():
        await host.configure(lambda name: SimpleNamespace(name=name))
        await host.register()
        await host.start()
        health = await host.health()
        await host.deliver_event(SimpleNamespace(type="memory.stored"))
        await host.stop()
        return health

    serving = CURRENT_CALL.set(SERVING)  # as when an admin's call enables a plugin: hooks serve no one
    try:
        health = asyncio.run(lifecycle())
        pages = host.web_pages()
        host.doctor(running=False)
        host.register_commands(SimpleNamespace())
    finally:
        CURRENT_CALL.reset(serving)
    return health, pages


def test_pluggy_calls_every_hook_each_plugin_gets(host):
    seen: list[tuple[str, tuple[str, ...]]] = []
    host.pm.add_hookcall_monitoring(lambda hook, impls, kwargs: seen.append((hook, tuple(i.plugin_name for i in impls))),
                                    lambda *_: None)
    run_every_hook(host)
    for name in ("first", "last"):
        got = host.records[name].obj.got
        assert len(got) == 9, got  # every hook, once
        # each call a plugin got, pluggy made: its monitoring saw that hook called on that plugin alone
        assert [hook for hook, plugins in seen if plugins == (name,)] == got
    assert not [plugins for _, plugins in seen if len(plugins) != 1], seen  # one plugin per call: isolated


def test_a_plugin_raising_in_a_hook_is_named_and_the_others_go_on(host, monkeypatch):
    failures = []
    monkeypatch.setattr(plugin_host, "log", SimpleNamespace(
        error=lambda event, **kw: failures.append((event, kw.get("plugin"))),
        warning=lambda event, **kw: failures.append((event, kw.get("plugin"))),
        debug=lambda event, **kw: None))
    health, pages = run_every_hook(host)
    # cortex_start: reported broken by name, and its contracts withdrawn; the rest started
    record = host.records["bad_start"]
    assert record.state == BROKEN and record.error == "cortex_start failed: RuntimeError: cannot open my database"
    assert ("plugin.broken", "bad_start") in failures
    assert all(host.records[name].state == LOADED for name in ("first", "bad_health", "bad_pages", "last"))
    assert host.records["last"].obj.got.count("cortex_start") == 1
    # cortex_health: a failing probe is that plugin not serving, named; the others report
    assert health["bad_health"] == Health(False, "health hook failed: RuntimeError: probe exploded")
    assert health["first"] == Health(True, "first") and health["last"] == Health(True, "last")
    assert ("plugin.health_failed", "bad_health") in failures
    # cortex_web_pages: logged by name, and the other plugins' pages still served
    assert pages == {"/first": "first", "/last": "last"}
    assert ("plugin.web_pages_failed", "bad_pages") in failures


def test_cortex_trace_hooks_traces_through_pluggys_monitoring(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEX_LOAD_PLUGINS", "")
    monkeypatch.setenv("CORTEX_TRACE_HOOKS", "1")
    traced = []
    monkeypatch.setattr(plugin_host, "log", SimpleNamespace(debug=lambda event, **kw: traced.append((event, kw))))
    host = PluginHost(load_config(write_config(tmp_path / "cortex.toml", ""), env={}), ContractRegistry(),
                      [("first", Good("first"))])
    host.load()
    host.web_pages()
    host.pm.hook.cortex_web_pages()  # a call made straight through pm.hook is traced alike
    assert traced == [("hook.trace", {"plugin": "first", "hook": "cortex_web_pages", "args": []})] * 2


def test_an_unhashable_plugin_is_broken_alone(tmp_path, monkeypatch):
    """pluggy holds plugins in sets: a plugin object that cannot be hashed (a @dataclass with eq) is
    named broken at load, and every other plugin's hooks are still called."""
    from dataclasses import dataclass

    @dataclass
    class Unhashable:
        @hookimpl
        async def cortex_start(self, context):
            pass

    monkeypatch.setenv("CORTEX_LOAD_PLUGINS", "")
    good = Good("good")
    made = PluginHost(load_config(write_config(tmp_path / "cortex.toml", ""), env={}), ContractRegistry(),
                      [("unhashable", Unhashable()), ("good", good)])
    made.load()
    assert made.records["unhashable"].state == BROKEN and "unhashable type" in made.records["unhashable"].error
    run_every_hook(made)
    assert len(good.got) == 9


def test_a_plugins_hook_wrapper_wraps_every_plugins_call_of_that_hook(tmp_path, monkeypatch):
    """pluggy's wrappers are within reach: a plugin's `@hookimpl(wrapper=True)` sees each plugin's
    call of the hook (a timing or tracing plugin), and plugins without an implementation are not called."""
    wrapped: list[str] = []

    class Timer:
        @hookimpl(wrapper=True)
        def cortex_web_pages(self):
            pages = yield
            wrapped.append(",".join(sorted(page for answer in pages for page in answer)))
            return pages

    monkeypatch.setenv("CORTEX_LOAD_PLUGINS", "")
    made = PluginHost(load_config(write_config(tmp_path / "cortex.toml", ""), env={}), ContractRegistry(),
                      [("first", Good("first")), ("timer", Timer()), ("last", Good("last"))])
    made.load()
    assert made.web_pages() == {"/first": "first", "/last": "last"}
    assert wrapped == ["/first", "/last"]  # around each plugin's own call, once
