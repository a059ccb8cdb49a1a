"""The plugin contract: every hook a Cortex-OS plugin may implement.

A plugin is a module or object with functions marked `@hookimpl`, registered under the
entry-point group `cortex` of its distribution:

    [project.entry-points.cortex]
    echo = "cortex_echo.plugin"

    # optional static manifest, read without importing the plugin: "PLUGIN.SERVICE" names what
    # it provides (cortex.contracts) and what it may call through the kernel (cortex.calls;
    # "PLUGIN.any": every contract)
    [project.entry-points."cortex.contracts"]
    "echo.cortex_echo.v1.EchoService" = "cortex_echo.plugin"
    [project.entry-points."cortex.calls"]
    "echo.cortex.kernel.v1.KernelService" = "cortex_echo.plugin"
    # and the kernel's privileged objects it is handed in its context (cortex.capabilities)

Hook names are checked when the plugin is registered: a misspelt hook is an error, not silence.
A plugin never imports another plugin; it calls other contracts through `context.channel`
(see PluginContext), which goes through the kernel's router like any outside call.

Hooks may be plain functions or coroutines where noted. Each plugin's hooks run in isolation: an
exception marks that plugin broken (or, in `cortex_authorize`, denies the call) and the kernel
goes on with the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from .call import Call, Decision, Outcome
    from .context import PluginContext
    from .doctor_check import DoctorCheck
    from .registry import Health, Registrar

PROJECT = "cortex"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cortex_configure(config: dict[str, Any], context: PluginContext) -> None:
    """Receive the plugin's own config section (`[plugins.NAME]`, {} when absent) and its context: `name`, `config`,
    `data_dir` (the kernel's), `plugin_dir` (yours: `<data dir>/plugins/NAME`, made 0700 when first read, kept across
    restarts), `privacy_mode`, `channel` (to call other contracts), `log`, the capabilities its manifest asks for. Called
    first (again when enabled or reinstalled live). Raise ValueError saying what to fix: the plugin is reported broken."""


@hookspec
def cortex_register(registry: Registrar) -> None:
    """Register the contracts this plugin provides: `registry.add(service, servicer)`, where
    `service` is a protobuf ServiceDescriptor (or its full name) and `servicer` implements every
    method of it, grpc.aio style (`async def Method(self, request, context)`)."""


@hookspec
async def cortex_start(context: PluginContext) -> None:
    """Start background work (open databases, load models lazily). Plugins start in load order."""


@hookspec
async def cortex_stop(context: PluginContext) -> None:
    """Release what `cortex_start` took. Plugins stop in reverse load order, after in-flight calls
    have finished."""


@hookspec
async def cortex_health() -> Health | dict[str, Health] | None:
    """Report this plugin's providers' health: one Health for all of them, or a dict keyed by
    service full name. Keep it cheap and bounded in time: the kernel polls it periodically."""


@hookspec
def cortex_authorize(call: Call) -> Decision | None:
    """Judge a call about to reach `call.provider`. Return Decision.deny(reason) to refuse it,
    Decision.permit() to allow, or None to abstain. Any deny wins; the caller gets
    PERMISSION_DENIED with every deny's reasons (FAILED_PRECONDITION where every deny sets
    `code` so: about where the data may go; a deny with an `approval` id refuses the whole call,
    which waits for that approval). `call.labels` are the data labels it carries. May return an
    awaitable."""


@hookspec
def cortex_observe(call: Call, outcome: Outcome) -> None:
    """Learn how a call ended (provider, decision, attempts, status, latency), e.g. for an audit
    log. Called after the response is produced; keep it fast. May return an awaitable."""


@hookspec
def cortex_event(event: Any) -> None:
    """React to an event published on the event bus (a `cortex.events.v1.Event`: id, source,
    type, subject, time, data, position), e.g. `memory.stored`. Delivered by the events plugin
    once, in order, after the event is durable; events published while the kernel was down, or
    not yet handed over when it died, do not come back here: a plugin that must see every event
    subscribes through EventService with a saved position (as the http plugin's webhooks do).
    Keep it short or hand the work to a task; an exception is logged. May return an awaitable."""


@hookspec
def cortex_doctor(config: dict[str, Any], running: bool) -> list[DoctorCheck] | None:
    """Check what this plugin needs on this machine and say what to fix, for `cortex doctor`:
    a list of `DoctorCheck(name, state, detail, fix)` with state OK, WARN or FAIL. `config` is the
    plugin's section; `running` says whether a kernel answers at kernel.listen (so a port it holds
    is not a problem). Called without configure or start: read files, import, probe; change nothing."""


@hookspec
def cortex_web_pages() -> dict[str, Any] | None:
    """Pages to serve on the kernel's HTTP listener (the http plugin's), beside the HTTP/JSON API
    and so on its origin: `{"/console": asgi_app}` serves `asgi_app` under that path prefix. What a
    mounted app serves is public to whoever reaches the listener (no credential is asked for it):
    static pages and their assets only. Everything a page shows or changes it fetches from the API
    with the person's own credential, as a governed, audited call. Asked on each request, so a
    plugin enabled or disabled while the kernel runs adds or takes away its pages at once."""


@hookspec
def cortex_register_commands(cli: click.Group) -> None:
    """Add subcommands to the `cortex` command line (as `llm` plugins do)."""
