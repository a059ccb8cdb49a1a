"""Loading what a live install changed (PluginService.Install): the plugins of every distribution
pip changed are stopped, their modules dropped from the process, and loaded again from the files
installed now; when a plugin that ran does not come up again, its distribution's code before is put
back and serves on, saying why (a changed .proto never loads into a running process: protobuf keeps
one definition per file).

The plugin host is reached through PluginLifecycle (records, disable_now, enable_now, start_now):
this ring imports nothing of the core that decides. A record's `state` is "loaded", "disabled" or
"broken" (kernel/plugin_host.py)."""

from __future__ import annotations

import hashlib
import importlib
import site
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import structlog

from .live_install import editable_project, install

log = structlog.get_logger("cortex.kernel")
BUILT_IN_DIST = "cortex-os"  # (never reloaded: the kernel itself)
# what protobuf says when a module registers a .proto file (or a message) it holds already with
# other content: upb's two wordings, and the pure-Python backend's
CONTRACT_CHANGED = ("duplicate file name", "duplicate symbol", "already added, but with different descriptor")
STOPPED = "stopped by an install"  # (not by the admin: a later install may start it again)


class PluginLifecycle(Protocol):
    """What of the plugin host a reinstall uses (kernel/plugin_host.py PluginHost)."""

    records: dict[str, Any]

    async def disable_now(self, name: str, grace: float = 10.0) -> Any: ...
    async def enable_now(self, name: str, make_context: Callable[[str], Any], forget: bool = True) -> Any: ...
    async def start_now(self, record: Any, make_context: Callable[[str], Any]) -> Any: ...


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def installed_plugins() -> dict[str, tuple[str, str]]:
    """{plugin name: (its distribution, a digest of what that has installed now)} (version and pip's
    RECORD, which hashes every file), for third-party plugins: a distribution an install changed is
    one whose digest moved, whatever its version says (an author reinstalls 0.1.0 after each edit)."""
    found: dict[str, tuple[str, str]] = {}
    for ep in metadata.entry_points(group="cortex"):
        dist = getattr(ep, "dist", None)
        name = str(dist.metadata["Name"] or "") if dist is not None else ""
        if dist is not None and name and _normal(name) != BUILT_IN_DIST and ep.name not in found:
            found[ep.name] = (name, hashlib.sha256(f"{dist.version}\n{dist.read_text('RECORD') or ''}".encode()).hexdigest())
    return found


def _own_files(dist_name: str) -> tuple[set[Path], Path | None, set[str]]:
    """The Python files a distribution installed; installed editable (which lists no files of its
    own), its project folder and the top-level names it makes importable from there."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return set(), None, set()
    files = {Path(str(dist.locate_file(f))).resolve() for f in dist.files or [] if f.suffix == ".py"}
    project = editable_project(dist)
    # (setuptools writes top_level.txt; hatchling, flit and pdm do not: then its plugins' own packages)
    tops = set((dist.read_text("top_level.txt") or "").split()) or {
        ep.value.partition(":")[0].split(".")[0].strip() for ep in dist.entry_points if ep.group == "cortex"}
    return files, project, tops


def _environment() -> list[Path]:
    """Where installed packages live (a project folder may hold its own venv: never its modules)."""
    return [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, *site.getsitepackages(), site.getusersitepackages()}]


def modules_of(dist_name: str) -> dict[str, ModuleType]:
    """A distribution's modules in this process: of the files it installed; installed editable, of
    its project folder, under the top-level names it installs (never the kernel's, nor any module of
    an environment's site-packages, nor __main__)."""
    if _normal(dist_name) == BUILT_IN_DIST:
        return {}
    files, project, tops = _own_files(dist_name)
    if not files and project is None:  # not installed (a built-in's "built-in", an in-process plugin): nothing of its own
        return {}
    environment = _environment() if project is not None else []

    def its_own(name: str, module: ModuleType) -> bool:
        where = getattr(module, "__file__", None)
        if not where or name.split(".")[0] in ("cortex", "__main__"):
            return False
        path = Path(where).resolve()
        if path in files:
            return True
        # editable: its sources in the project folder, under the names it installed, none of an environment
        return (project is not None and path.is_relative_to(project) and name.split(".")[0] in tops
                and not any(path.is_relative_to(place) for place in environment))

    return {name: module for name, module in list(sys.modules.items()) if module is not None and its_own(name, module)}


def forget_modules(dist_name: str, also: dict[str, ModuleType] | None = None) -> dict[str, ModuleType]:
    """Take a distribution's modules (modules_of; `also`: those it had before pip changed how it is
    installed, editable or not) out of sys.modules, so that loading its plugins runs the files there
    now rather than the code imported before; returns them, to put back (restore_modules). Plugins
    never import each other, so nothing else holds these modules but the plugins' own objects,
    stopped first."""
    gone = {**(also or {}), **modules_of(dist_name)}
    for name in gone:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return gone


def restore_modules(dist_name: str, modules: dict[str, ModuleType]) -> None:
    """Put back what forget_modules took, dropping what the failed load imported in their place."""
    forget_modules(dist_name, {name: module for name, module in modules.items() if name in sys.modules})
    sys.modules.update(modules)


def kept_running(error: str, running: str, installed: str) -> str:
    """What a plugin whose new files did not come up (`error`) says while the code before serves on
    (configured afresh: as after `enable --now`)."""
    new = f"the installed {installed}" if installed != running else "the files installed now"
    contract = next((error.rpartition(m)[2].strip(" :'\"") for m in CONTRACT_CHANGED if m in error), None)
    if contract is not None:
        return (f"{running} serves on, as it was: {new} {'changes' if installed != running else 'change'} its contract "
                f"{contract}, which only a restart of the kernel loads")
    return f"{running} serves on, as it was: {new} did not come up ({error}); mend it and install again"


async def reinstall(host: PluginLifecycle, spec: str, sha256: str, make_context: Callable[[str], Any], grace: float) -> list[Any]:
    """pip-install `spec`, then bring up the plugins it brings, load again those of every
    distribution it changed that run (or are broken; one disabled stays off, its files load when it
    is enabled) and withdraw those whose entry point went. ValueError when nothing changed."""
    before = installed_plugins()
    # what each running distribution's modules are now, by its files as installed before pip
    imported = {source: modules_of(source) for source in {r.source for r in host.records.values() if r.state == "loaded"}}
    editable, said = await install(spec, sha256)
    now = installed_plugins()
    changed = {dist for name, (dist, digest) in now.items() if before.get(name, (dist, "")) != (dist, digest)}
    changed |= {dist for dist, _ in before.values() if dist not in {d for d, _ in now.values()}}  # uninstalled by it
    changed |= {editable} if editable else set()
    known = {n: r for n, r in host.records.items() if r.source in changed}  # this process's records of them
    running = {n: r for n, r in known.items() if r.state == "loaded"}
    for name in running:
        await host.disable_now(name, grace)  # no new call reaches it; the calls inside finish first
    taken = {dist: forget_modules(dist, imported.get(dist)) for dist in changed}  # once per distribution: one copy
    records = []
    for name, (dist, _) in now.items():
        other = host.records.get(name)
        if dist not in changed or (other is not None and other.source not in changed):
            continue  # unchanged, or the name is another distribution's (a built-in's wins): not this one's to start
        # one the admin disabled stays off (not one this machinery withdrew)
        off = name in known and known[name].state == "disabled" and name not in running and not known[name].error.startswith(STOPPED)
        records.append(known[name] if off else await host.enable_now(name, make_context, forget=False))
    for name in (n for n in running if n not in now):  # its entry point renamed or removed: withdrawn, said so
        host.records[name].error = f"{STOPPED}: {spec} removed its entry point"
        records.append(host.records[name])
    for dist in {running[r.name].source for r in records if r.name in running and r.state == "broken"}:
        records = await _keep_running(host, dist, taken[dist], running, records, make_context, grace)
    if not records:
        kept = next((f"; pip kept what was installed ({line.strip()}): give the new build a new version"
                     for line in said.splitlines() if "already satisfied" in line or "same version" in line), "")
        raise ValueError(f"{spec} installed, but it brings no plugin that is new or changed{kept}")
    return records


async def _keep_running(host: PluginLifecycle, dist: str, modules: dict[str, ModuleType], running: dict[str, Any],
                        records: list[Any], make_context: Callable[[str], Any], grace: float) -> list[Any]:
    """A plugin of `dist` that ran did not come up from the new files: every plugin of `dist` that
    ran serves on from the code before (its modules, object and manifest), saying why."""
    new = {r.name: r for r in records}
    cause = next((f"{r.name}: {r.error}" for r in records if r.name in running and r.state == "broken"), "its new files")
    for record in records:
        if record.source == dist and record.state == "loaded":
            await host.disable_now(record.name, grace)
            record.error = f"{STOPPED}: the new files of another plugin of {dist} did not come up"
    restore_modules(dist, modules)
    for name, old in running.items():
        if old.source == dist:
            mine = new.get(name)
            why = mine.error if mine is not None and mine.state == "broken" else f"plugin {cause}"
            said = kept_running(why, old.version, mine.version if mine is not None else old.version)
            kept = await host.start_now(old, make_context)
            # (the code before may fail to start again too: then both are said)
            kept.error = f"{kept.error}; after {said.partition(': ')[2]}" if kept.error else said
            new[name] = kept
            log.warning("plugin.kept_running" if kept.state == "loaded" else "plugin.rollback_failed", plugin=name, reason=kept.error)
    return list(new.values())
