"""Finds, loads and runs plugins: pluggy, the entry-point group `cortex`, and isolation.

Every plugin, built-in or third-party, is an entry point in the group `cortex`. A plugin disabled
in the config is blocked before loading (pluggy's `set_blocked`, as pytest's `-p no:NAME`), so it
is never imported. Each plugin is loaded and each of its hooks called on its own, so one broken
plugin (import error, bad hook name, exception in a hook) is reported by name and skipped while
the kernel goes on with the rest. pluggy calls the hooks (PluginHost._call) and traces them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import grpc
import pluggy
import structlog

from . import hookspecs
from .call import ALLOW_BY_DEFAULT, CURRENT_CALL, Call, Decision, Outcome, RouterError, Unavailable
from .config import Config
from .context import PluginContext
from .registry import ContractRegistry, Health, Registrar

GROUP = "cortex"
# Static manifests, read without importing a plugin. Entry-point names are "PLUGIN.SERVICE" (unique
# within a distribution even when several plugins provide one contract; plugin names hold no dot);
# "PLUGIN.any" in cortex.calls lets a plugin call every contract. The value is the plugin's own
# entry-point target. ("PLUGIN/SERVICE", the form before 0.2, is still read.)
MANIFEST_GROUP = "cortex.contracts"  # the services PLUGIN provides
CALLS_GROUP = "cortex.calls"  # the services PLUGIN may call
ANY_SERVICE = "any"
BUILT_IN_DIST = "cortex-os"
RESERVED_NAMES = {"disabled", "kernel"}

log = structlog.get_logger("cortex.plugins")

LOADED, DISABLED, BROKEN = "loaded", "disabled", "broken"


@dataclass
class PluginRecord:
    """A discovered plugin and what became of it."""

    name: str
    version: str = ""
    source: str = ""  # "built-in", a distribution name, or "in-process"
    target: str = ""  # the entry point's value, e.g. "cortex_echo.plugin"
    state: str = LOADED
    error: str = ""
    contracts: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # what its manifest says it may call
    obj: Any = None
    context: PluginContext | None = None

    @property
    def enabled(self) -> bool:
        return self.state != DISABLED


def _dist_name(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", ""
    name = dist.metadata["Name"] or ""
    source = "built-in" if name.lower().replace("_", "-") == BUILT_IN_DIST else name
    return source, dist.version or ""


def manifest_entry(name: str) -> tuple[str, str] | None:
    """(plugin, service pattern) of a manifest entry-point name, or None if it is not one."""
    plugin, sep, service = name.partition("/") if "/" in name else name.partition(".")
    if not (plugin and sep and service):
        return None
    return plugin, "*" if service == ANY_SERVICE else service


def _manifest(group: str) -> dict[tuple[str, str], list[str]]:
    """{(distribution, plugin name): [service, ...]} from entry points named "PLUGIN.SERVICE": a
    distribution declares for its own plugins only (no package widens another's manifest)."""
    found: dict[tuple[str, str], list[str]] = {}
    for ep in metadata.entry_points(group=group):
        entry = manifest_entry(ep.name)
        if entry is None:
            log.warning("plugin.bad_manifest_entry", group=group, name=ep.name, expected="PLUGIN.SERVICE")
            continue
        found.setdefault((_dist_name(ep)[0], entry[0]), []).append(entry[1])
    return found


def discover() -> list[PluginRecord]:
    """Every plugin installed, from distribution metadata alone (nothing is imported)."""
    manifest, calls = _manifest(MANIFEST_GROUP), _manifest(CALLS_GROUP)
    records: dict[str, PluginRecord] = {}
    # the same name from two distributions: the built-in one, else the first, wins (the other is not loaded)
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda ep: _dist_name(ep)[0] != "built-in"):
        source, version = _dist_name(ep)
        if ep.name not in records:
            records[ep.name] = PluginRecord(name=ep.name, version=version, source=source, target=ep.value,
                                            contracts=sorted(manifest.get((source, ep.name), [])),
                                            calls=sorted(calls.get((source, ep.name), [])))
    return sorted(records.values(), key=lambda r: (r.source != "built-in", r.name))


def declared_api(obj: Any) -> str | None:
    """A plugin's CORTEX_API specifier: on the plugin object, else on the module that defines it."""
    for holder in (obj, sys.modules.get(getattr(obj, "__module__", "") or "")):
        value = getattr(holder, "CORTEX_API", None)
        if value is not None:
            return str(value)
    return None


def api_problem(record: PluginRecord) -> str:
    """'' when the plugin supports this kernel's plugin API, else why not (naming both versions)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from . import PLUGIN_API_VERSION

    declared = declared_api(record.obj)
    if declared is None:  # assumed to be written for API 1; PluginHost warns (deprecated from API 2)
        return ""
    try:
        supported = SpecifierSet(declared)
    except InvalidSpecifier:
        return f"its CORTEX_API {declared!r} is not a version specifier such as \">=1,<2\""
    if PLUGIN_API_VERSION in supported:
        return ""
    return (f"it supports plugin API {declared}, and this kernel's plugin API is {PLUGIN_API_VERSION}: install a "
            f"version of '{record.source or record.name}' made for this kernel, or disable it")


def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PluginHost:
    def __init__(self, config: Config, registry: ContractRegistry, extra_plugins: Iterable[tuple[str, Any]] = (), quiet: bool = False):
        self.config = config
        self.quiet = quiet  # the CLI loads plugins for their commands; `cortex serve` reports problems
        self.registry = registry
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._extra = list(extra_plugins)
        self._authorizers: list[tuple[str, Any, tuple[str, ...]]] = []
        self._observers: list[tuple[str, Any, tuple[str, ...]]] = []
        self.trace = os.environ.get("CORTEX_TRACE_HOOKS", "") not in ("", "0")
        if self.trace:  # every hook call to the log, by pluggy's own monitoring (authorize, called from a cache, traces itself)
            self.pm.add_hookcall_monitoring(lambda hook, impls, kwargs: log.debug(
                "hook.trace", plugin=",".join(i.plugin_name for i in impls), hook=hook, args=sorted(kwargs)), lambda *_: None)
        # plugins a call may not pass without (kernel.required_plugins): read per call, decided once
        self.required = config.kernel_section.required_plugins

    # -- loading ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Discover and register every enabled plugin; validate the config's plugin names."""
        discovered = discover() + [PluginRecord(name=n, source="in-process", obj=o) for n, o in self._extra]
        known = {r.name for r in discovered}
        for name in self.config.disabled_plugins + self.config.plugin_sections():
            if name not in known:
                raise self.config.error(f"unknown plugin '{name}'; installed plugins: {', '.join(sorted(known)) or '(none)'}", name)
        only = os.environ.get("CORTEX_LOAD_PLUGINS")  # recovery: exactly these (empty: none)
        allowed = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
        for record in discovered:
            if allowed is not None and record.name not in allowed and record.source != "in-process":
                record.state, record.error = DISABLED, "not named in CORTEX_LOAD_PLUGINS"
                self.pm.set_blocked(record.name)
            elif record.name in RESERVED_NAMES:
                record.state, record.error = BROKEN, f"'{record.name}' is a reserved name"
            elif "." in record.name or "/" in record.name:
                record.state, record.error = BROKEN, (
                    f"plugin name '{record.name}' holds '.' or '/'; name the entry point in the 'cortex' group "
                    "with letters, digits, '_' and '-' only (its manifest entries are 'NAME.SERVICE')"
                )
            elif record.name in self.config.disabled_plugins:
                record.state = DISABLED
                self.pm.set_blocked(record.name)
            else:
                self._register(record)
            self.records[record.name] = record
        self._index_hot_hooks()

    def _register(self, record: PluginRecord) -> None:
        try:
            if record.obj is None:  # one entry point at a time, so that a failure stays isolated
                found = [ep for ep in metadata.entry_points(group=GROUP, name=record.name) if ep.value == record.target]
                if not found:
                    raise RuntimeError(f"entry point {record.name} = {record.target!r} is no longer installed")
                record.obj = found[0].load()
            if declared_api(record.obj) is None and record.source != "in-process" and not self.quiet:
                log.warning("plugin.api_undeclared", plugin=record.name, assumed=">=1,<2",
                            hint='set CORTEX_API = ">=1,<2" in the plugin module; from plugin API 2 it is required')
            incompatible = api_problem(record)
            if incompatible:  # before any hook is registered: never half-loaded
                record.state, record.error = BROKEN, incompatible
                log.error("plugin.broken", plugin=record.name, error=incompatible)
                return
            hash(record.obj)  # pluggy holds plugins in sets: an unhashable one (a @dataclass) is broken alone, named
            self.pm.register(record.obj, name=record.name)
            self.pm.check_pending()  # a hookimpl matching no hookspec: a typo, not silence
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party plugin is contained
            self._broken(record, f"failed to load: {first_line(exc)}", exc)

    def _broken(self, record: PluginRecord, error: str, exc: BaseException | None = None) -> None:
        record.state, record.error = BROKEN, error
        if record.obj is not None and self.pm.is_registered(record.obj):
            self.pm.unregister(record.obj)
        self.registry.remove_plugin(record.name)
        self._index_hot_hooks()
        if not self.quiet:
            log.error("plugin.broken", plugin=record.name, error=error,
                      traceback="".join(traceback.format_exception(exc)) if exc else None)

    def loaded(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.state == LOADED]

    # -- calling hooks: pluggy calls each plugin on its own ------------------------------------------
    # Not all plugins in one pm.hook.X call: pluggy stops at the first exception (skipping the plugins after
    # it) without saying whose. Each plugin is called by a pluggy hook caller holding it and every plugin's
    # wrappers (pm.subset_hook_caller), which matches arguments by name and runs wrappers and monitoring as
    # pm.hook.X does, while an exception is that plugin's (named; the others go on), an argument may be its
    # own (config, context, registrar), in load order.
    def _call(self, hook: str, record: PluginRecord, **kwargs: Any) -> list[Any]:
        """The answers pluggy collects from `record`'s `hook` ([] if it has none or is not loaded), inside
        every plugin's wrappers of that hook (`@hookimpl(wrapper=True)` wraps each plugin's call)."""
        impls = [i for i in getattr(self.pm.hook, hook).get_hookimpls() if not (i.wrapper or i.hookwrapper)]
        if record.state != LOADED or not any(i.plugin is record.obj for i in impls):
            return []
        caller = self.pm.subset_hook_caller(hook, {i.plugin for i in impls if i.plugin is not record.obj})
        # a hook is the plugin's own work, even when a caller's call runs it (an admin's live enable,
        # the Publish an event hook follows): what it calls, and the tasks it starts, serve no one
        serving = CURRENT_CALL.set(None)
        try:
            return list(caller(**kwargs))  # (a list: pluggy's caller is typed Any)
        finally:
            CURRENT_CALL.reset(serving)

    async def _each(self, hook: str, records: Iterable[PluginRecord], args: Callable[[PluginRecord], dict[str, Any]] = lambda _: {},
                    failed: Callable[[PluginRecord, Exception], Any] | None = None) -> dict[str, Any]:
        """{plugin: its answer} from each plugin in `records`, in order, awaited; one that raises is broken unless `failed` answers."""
        answers: dict[str, Any] = {}
        for record in records:
            serving = CURRENT_CALL.set(None)
            try:
                for answer in self._call(hook, record, **args(record)):
                    answers[record.name] = await answer if inspect.isawaitable(answer) else answer
            except Exception as exc:  # noqa: BLE001 - any failure of a third-party plugin is contained
                if failed is None:
                    self._broken(record, f"{hook} failed: {first_line(exc)}", exc)
                else:
                    answers[record.name] = failed(record, exc)
            finally:
                CURRENT_CALL.reset(serving)
        return {name: answer for name, answer in answers.items() if answer is not None}

    # -- lifecycle -------------------------------------------------------------------------------
    async def configure(self, make_context: Callable[[str], PluginContext], records: list[PluginRecord] | None = None) -> None:
        records = self.loaded() if records is None else records
        for record in records:
            record.context = make_context(record.name)
        await self._each("cortex_configure", records, lambda r: {"config": self.config.plugin_section(r.name), "context": r.context})

    async def register(self, records: list[PluginRecord] | None = None) -> None:
        records = self.loaded() if records is None else records
        timeouts = {name: provider.timeout_seconds for name, provider in self.config.providers.items()}
        registrars = {r.name: Registrar(self.registry, r.name, timeouts) for r in records}
        await self._each("cortex_register", records, lambda r: {"registry": registrars[r.name]})
        for record in (r for r in records if r.state == LOADED):
            provided = sorted({p.service.full_name for p in registrars[record.name].added})
            if record.contracts and set(record.contracts) != set(provided):
                log.warning("plugin.manifest_mismatch", plugin=record.name, declared=record.contracts, registered=provided)
            record.contracts = provided

    async def start(self, records: list[PluginRecord] | None = None) -> None:
        await self._each("cortex_start", self.loaded() if records is None else records, lambda r: {"context": r.context})

    # -- while the kernel runs ---------------------------------------------------------------------
    async def enable_now(self, name: str, make_context: Callable[[str], PluginContext], forget: bool = True) -> PluginRecord:
        """Load, configure, register and start an installed plugin in the running kernel (one
        installed since the kernel started is discovered now; `forget`: from the files installed now). KeyError: no such plugin."""
        record = self.records.get(name)
        if record is None or record.state != LOADED:
            record = {r.name: r for r in discover()}.get(name, record)
            if record is None:  # neither known nor installed now
                raise KeyError(name)
            if record.source != "in-process":
                record.obj = None  # loaded again from its entry point, from the files installed now
                if forget and not any(r.source == record.source and r.state == LOADED for r in self.records.values()):
                    from .security.reinstall import forget_modules
                    forget_modules(record.source)  # (no plugin of its distribution runs that code now: one copy stays one)
            await self.start_now(record, make_context)
        return record

    async def start_now(self, record: PluginRecord, make_context: Callable[[str], PluginContext]) -> PluginRecord:
        """Register and start `record` in the running kernel: its object, else its entry point's."""
        self.records[record.name] = record
        record.state, record.error = LOADED, ""
        self.pm.unblock(record.name)
        self._register(record)
        await self.configure(make_context, [record])
        await self.register([record])
        await self.start([record])
        self._index_hot_hooks()
        return record

    async def disable_now(self, name: str, grace: float = 10.0) -> PluginRecord:
        """Withdraw a loaded plugin's contracts, let the calls already inside it finish (up to
        `grace` seconds), then stop it."""
        record = self.records[name]
        if record.state == LOADED:
            withdrawn = self.registry.remove_plugin(name)  # no new call reaches it from here on
            deadline = asyncio.get_running_loop().time() + grace
            # the calls already inside it finish first (counters on several providers: polled)
            while any(p.in_flight for p in withdrawn) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await self._each("cortex_stop", [record], lambda r: {"context": r.context})
            self.pm.unregister(name=name)
            self.pm.set_blocked(name)
            record.state, record.error = DISABLED, "disabled while the kernel runs"
            self._index_hot_hooks()
        return record

    async def stop(self) -> None:
        await self._each("cortex_stop", reversed(self.loaded()), lambda r: {"context": r.context})

    async def health(self, skip: Collection[str] = frozenset()) -> dict[str, dict[str, Health] | Health]:
        """Each loaded plugin's own health report (plugins without the hook, or in `skip`, left out)."""
        def failed(record: PluginRecord, exc: Exception) -> Health:  # a failing probe means not serving
            log.warning("plugin.health_failed", plugin=record.name, error=first_line(exc))
            return Health(False, f"health hook failed: {first_line(exc)}")

        return await self._each("cortex_health", [r for r in self.loaded() if r.name not in skip], failed=failed)

    async def deliver_event(self, event: Any) -> None:
        """Hand a published event to every loaded plugin's `cortex_event` hook; a failing hook is
        logged, not fatal: one plugin's bug must not stop delivery to the others."""
        def failed(record: PluginRecord, exc: Exception) -> None:
            log.error("plugin.event_failed", plugin=record.name, event_type=getattr(event, "type", "?"), error=first_line(exc))

        await self._each("cortex_event", self.loaded(), lambda _: {"event": event}, failed)

    def doctor(self, running: bool) -> list[Any]:
        """Every loaded plugin's own `cortex_doctor` findings; a hook that raises is a finding too."""
        from .doctor_check import FAIL, DoctorCheck

        found: list[Any] = []
        for record in self.loaded():
            try:
                for checks in self._call("cortex_doctor", record, config=self.config.plugin_section(record.name), running=running):
                    found += checks
            except Exception as exc:  # noqa: BLE001 - a plugin's bug is a finding, not a crash
                found.append(DoctorCheck(f"plugin {record.name}", FAIL, f"its doctor check failed: {first_line(exc)}",
                                         "report it to the plugin's authors"))
        return found

    def web_pages(self) -> dict[str, Any]:
        """Every loaded plugin's `cortex_web_pages`, prefix -> ASGI app; a prefix two plugins
        claim goes to the first (in load order), and a hook that raises is logged and skipped."""
        pages: dict[str, Any] = {}
        for record in self.loaded():
            try:
                offered = [item for answer in self._call("cortex_web_pages", record) for item in answer.items()]
            except Exception as exc:  # noqa: BLE001 - one plugin's pages must not take down the listener
                log.error("plugin.web_pages_failed", plugin=record.name, error=first_line(exc))
                continue
            for prefix, app in offered:
                prefix = "/" + prefix.strip("/")
                if prefix in pages or prefix in ("/", "/v1"):
                    log.warning("plugin.web_prefix_taken", plugin=record.name, prefix=prefix)
                    continue
                pages[prefix] = app
        return pages

    def register_commands(self, cli: Any) -> None:
        for record in self.loaded():
            try:
                self._call("cortex_register_commands", record, cli=cli)
            except Exception as exc:  # noqa: BLE001
                self._broken(record, f"cortex_register_commands failed: {first_line(exc)}", exc)

    # -- the hot path: authorize and observe on every call -------------------------------------------
    def _index_hot_hooks(self) -> None:
        # per-plugin dispatch cached from pluggy's registrations (in load order), rebuilt when they change
        def index(hook: str) -> list[tuple[str, Any, tuple[str, ...]]]:
            impls = reversed(getattr(self.pm.hook, hook).get_hookimpls())
            return [(impl.plugin_name, impl.function, tuple(impl.argnames)) for impl in impls]

        self._authorizers = index("cortex_authorize")
        self._observers = index("cortex_observe")

    @property
    def authorizers(self) -> list[str]:
        """The plugins whose authorize hook judges every call."""
        return [name for name, _, _ in self._authorizers]

    async def authorize(self, call: Call) -> Decision:
        """Every plugin's answer, combined: any deny wins. A hook that fails denies (fail closed);
        a required plugin (kernel.required_plugins: governance) that cannot judge the call now
        (it raised, or raised Unavailable) fails it with UNAVAILABLE: it never passes unchecked (one not loaded: admission)."""
        if not self._authorizers:
            return ALLOW_BY_DEFAULT
        answers: list[Decision] = []
        for name, fn, argnames in self._authorizers:
            if self.trace:
                log.debug("hook.trace", plugin=name, hook="cortex_authorize", call_id=call.id)
            try:
                answer = fn(*[call for _ in argnames])
                if inspect.isawaitable(answer):
                    answer = await answer
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, Unavailable) or name in self.required:
                    why = str(exc) if isinstance(exc, Unavailable) else first_line(exc)
                    log.error("plugin.cannot_authorize", plugin=name, call_id=call.id, error=why)
                    raise RouterError(grpc.StatusCode.UNAVAILABLE,
                                      f"'{name}' cannot judge calls now ({why}): calls are refused until it recovers") from None
                log.error("plugin.authorize_failed", plugin=name, call_id=call.id, error=first_line(exc))
                answer = Decision.deny(f"authorize hook failed ({first_line(exc)}); denying to be safe")
            if answer is None:
                continue
            if not isinstance(answer, Decision):
                answer = Decision.deny(f"authorize hook returned {type(answer).__name__}, not a Decision")
            answer.by = name
            answers.append(answer)
        return Decision.combine(answers) if answers else ALLOW_BY_DEFAULT

    async def observe(self, call: Call, outcome: Outcome) -> None:
        for name, fn, argnames in self._observers:
            try:
                result = fn(*[call if a == "call" else outcome for a in argnames])
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - observing must never fail a call
                log.error("plugin.observe_failed", plugin=name, call_id=call.id, error=first_line(exc))
