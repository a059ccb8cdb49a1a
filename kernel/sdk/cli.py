"""The `cortex` command line.

    cortex serve [--config PATH] [--listen HOST:PORT] [--data-dir DIR]
    cortex info | health | contracts list      talk to a running kernel (--target HOST:PORT)
    cortex plugins list | enable NAME | disable NAME     read and edit the config file

Every listing command takes --json. Plugins may add commands (`cortex_register_commands`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
import grpc

from ..config import Config, ConfigError, editable_config_path, load_config
from ..security.dial import client_dial
from .logs import configure_logging
from .terminal import (
    TIMEOUT,
    config_option,
    json_option,
    kernel_client,
    load_config_or_fail,
    print_json,
    print_table,
    target_option,
    to_dict,
)


class _Commands(click.Group):
    """The `cortex` group: an unknown command may be a plugin's that is not loaded now, so say where to look."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            hint = ("Plugins add commands (`cortex plugin` is the devkit plugin's, `cortex recall` memories'): "
                    "`cortex plugins list` shows which are disabled or broken, `cortex doctor` why.")
            raise click.exceptions.NoSuchCommand(exc.command_name, f"{exc.message}\n{hint}", self.commands, exc.ctx) from None


@click.group(cls=_Commands)
@click.version_option(package_name="cortex-os", prog_name="cortex")
def cli() -> None:
    """Cortex-OS: a local-first, governed, deterministic second-brain runtime."""


# -- serve ----------------------------------------------------------------------------------------
@cli.command()
@config_option
@click.option("--listen", default=None, help="HOST:PORT for gRPC (default 127.0.0.1:50051).")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Data directory (default ~/.cortex).")
def serve(config: str | None, listen: str | None, data_dir: str | None) -> None:
    """Start the kernel and serve every enabled plugin's contracts over gRPC."""
    cfg = load_config_or_fail(config, **{"kernel.listen": listen, "kernel.data_dir": data_dir})
    configure_logging(cfg.kernel_section.log_level, cfg.kernel_section.log_format)
    from . import at_rest

    # an encrypted data dir without its key, a passphrase set on a plain one, a missing or damaged
    # encryption.json: say so now, not as plugins broken one by one (and a passphrase set on a new
    # data dir makes it encrypted here, before any store is created)
    try:
        at_rest.key(cfg.data_dir)
    except at_rest.AtRestError as exc:
        raise click.ClickException(f"{exc}; the kernel will not serve") from None
    try:
        asyncio.run(_serve(cfg))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


async def _serve(cfg: Config) -> None:
    from ..runtime import Kernel

    # everything the kernel and its plugins write (databases and their -wal files, keys, policies)
    # is the owner's alone: one rule here rather than a chmod after each file is made
    os.umask(0o077)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before "serving on": a stop may follow at once
        loop.add_signal_handler(sig, stop.set)
    kernel = Kernel(cfg)
    await kernel.start()
    # what start-up made lives as long as the kernel: out of the collector's way, so that its
    # full collections under load walk only what calls make
    gc.freeze()
    click.echo(f"cortex: serving on {kernel.address} (data dir {cfg.data_dir})")
    sys.stdout.flush()
    await stop.wait()
    await kernel.stop()


# -- client commands ------------------------------------------------------------------------------
@cli.command()
@config_option
@target_option
@json_option
def info(config: str | None, target: str | None, as_json: bool) -> None:
    """Show the running kernel's version, data dir and privacy mode."""
    from cortex.contracts.kernel.v1 import kernel_pb2

    client = kernel_client(config, target)
    reply = client.call(client.kernel().GetInfo, kernel_pb2.GetInfoRequest())
    if as_json:
        return print_json(to_dict(reply))
    click.echo(f"cortex {reply.version} at {reply.listen}")
    click.echo(f"  data dir:     {reply.data_dir}")
    click.echo(f"  privacy mode: {'on' if reply.privacy_mode else 'off'}")
    governed = ", ".join(reply.governed_by)
    click.echo(f"  governance:   {f'on ({governed})' if governed else 'OFF: every call is allowed unchecked, nothing is audited'}")
    click.echo(f"  config:       {reply.config_path or '(embedded defaults)'}")
    click.echo(f"  uptime:       {reply.uptime_seconds:.0f}s")


@cli.command()
@config_option
@target_option
@json_option
@click.option("--service", "services", multiple=True, help="Check only this service (repeatable).")
def health(config: str | None, target: str | None, as_json: bool, services: tuple[str, ...]) -> None:
    """Check the kernel's gRPC health, overall and per contract. Exits 1 if anything is not serving."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cortex.contracts.kernel.v1 import kernel_pb2

    client = kernel_client(config, target)
    if not services:
        contracts = client.call(client.kernel().ListContracts, kernel_pb2.ListContractsRequest())
        services = ("", *(c.service for c in contracts.contracts))
    stub = health_pb2_grpc.HealthStub(client.channel)
    statuses: dict[str, str] = {}
    for service in services:
        try:
            reply = stub.Check(  # type: ignore[attr-defined]  # typeshed's HealthStub declares no methods
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
            )
            statuses[service or "(overall)"] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise client.error(exc) from None
            statuses[service or "(overall)"] = "SERVICE_UNKNOWN"
    if as_json:
        print_json(statuses)
    else:
        print_table([[s, st] for s, st in statuses.items()], ["SERVICE", "STATUS"])
    if not as_json:
        try:
            info = client.kernel().GetInfo(kernel_pb2.GetInfoRequest(), timeout=TIMEOUT, metadata=client.metadata)
        except grpc.RpcError:
            info = None  # health needs no credential; this line does
        if info is not None and not info.governed_by:
            click.echo("governance: OFF (kernel.required_plugins is empty): calls are allowed unchecked and not audited")
    if any(st != "SERVING" for st in statuses.values()):
        sys.exit(1)


@cli.group()
def contracts() -> None:
    """Contracts served by the running kernel."""


@contracts.command("list")
@config_option
@target_option
@json_option
def contracts_list(config: str | None, target: str | None, as_json: bool) -> None:
    """List every served contract, its methods, and its providers in routing order."""
    from cortex.contracts.kernel.v1 import kernel_pb2

    client = kernel_client(config, target)
    reply = client.call(client.kernel().ListContracts, kernel_pb2.ListContractsRequest())
    if as_json:
        return print_json(to_dict(reply))
    for c in reply.contracts:
        click.echo(f"{c.service} ({c.version})")
        click.echo("  methods:   " + ", ".join(m.name + (" [stream]" if m.server_streaming else "") for m in c.methods))
        for p in c.providers:
            health = kernel_pb2.Provider.Health.Name(p.health).removeprefix("HEALTH_").lower()
            circuit = kernel_pb2.Provider.Circuit.Name(p.circuit).removeprefix("CIRCUIT_").lower()
            where = p.endpoint or "in-process"
            click.echo(
                f"  provider:  {p.name} ({where}, {'local' if p.local else 'remote'}) "
                f"health={health} circuit={circuit} calls={p.calls} failures={p.failures}"
            )
            if p.admission:  # why a plain call would not go to it now (kernel/admission.py)
                click.echo(f"             not admitted: {p.admission}")


# -- plugins --------------------------------------------------------------------------------------
@cli.group()
def plugins() -> None:
    """Installed plugins, and enabling or disabling them in the config file."""


@plugins.command("list")
@config_option
@json_option
@click.option("--hooks", "show_hooks", is_flag=True, help="Also the hooks each plugin implements (imports them).")
def plugins_list(config: str | None, as_json: bool, show_hooks: bool) -> None:
    """List installed plugins, whether the config enables them, and, when a kernel answers, their
    state in it (loaded, broken with its error, disabled)."""
    from ..plugin_host import PluginHost, discover
    from ..registry import ContractRegistry

    cfg = load_config_or_fail(config)
    disabled = set(cfg.disabled_plugins)
    running = _running_plugins(cfg)
    hooks: dict[str, list[str]] = {}
    if show_hooks:
        host = PluginHost(cfg, ContractRegistry(), quiet=True)
        host.load()
        hooks = {r.name: sorted(c.name for c in host.pm.get_hookcallers(r.obj) or ()) for r in host.loaded()}
    installed = {r.name: r for r in discover()}
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            # what the kernel runs, where one answers (a reinstall it could not load leaves the version before)
            "version": running[name]["version"] if name in running else r.version if r else "",
            **({"installed": r.version} if r and name in running and r.version != running[name]["version"] else {}),
            "enabled": name not in disabled,
            "source": r.source if r else running[name]["source"],
            "contracts": r.contracts if r else running[name]["contracts"],
            **({"state": running[name]["state"], "error": running[name]["error"]} if name in running else {}),
            **({"hooks": hooks.get(name, [])} if show_hooks else {}),
        }
        # (a plugin installed in the kernel's environment only, as a live install into another venv, is listed too)
        for name, r in [*installed.items(), *((n, None) for n in running if n not in installed)]
    ]
    if as_json:
        return print_json({"config": str(cfg.path or ""), "kernel": bool(running), "plugins": rows})
    if not rows:
        click.echo("no plugins installed")
        return
    header = ["NAME", "VERSION", "ENABLED", "SOURCE", "CONTRACTS"] + (["IN KERNEL"] if running else []) + (["HOOKS"] if show_hooks else [])
    print_table(
        [
            [r["name"], r["version"] + (f" ({r['installed']} installed)" if "installed" in r else ""),
             "yes" if r["enabled"] else "no", r["source"], ", ".join(r["contracts"])]
            + ([r.get("state", "-") + (f": {r['error']}" if r.get("error") else "")] if running else [])
            + ([", ".join(h.removeprefix("cortex_") for h in r["hooks"])] if show_hooks else [])
            for r in rows
        ],
        header,
    )


def _running_plugins(cfg: Config) -> dict[str, dict[str, Any]]:
    """{name: its state, error, version, source and contracts} from the kernel at client.target, or {}
    when none answers."""
    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

    dial = client_dial(cfg)
    try:
        with dial.channel(cfg.target) as channel:
            reply = kernel_pb2_grpc.KernelServiceStub(channel).ListPlugins(
                kernel_pb2.ListPluginsRequest(), timeout=1.5, metadata=dial.metadata()
            )
    except (grpc.RpcError, ValueError):
        return {}
    return {p.name: {"state": kernel_pb2.Plugin.State.Name(p.state).removeprefix("STATE_").lower(), "error": p.error,
                     "version": p.version, "source": p.source, "contracts": list(p.contracts)} for p in reply.plugins}


def _set_enabled(config: str | None, name: str, enabled: bool, restart_hint: bool = True) -> None:
    import tomlkit

    from ..plugin_host import discover

    known = {r.name for r in discover()}
    if name not in known:
        raise click.ClickException(f"unknown plugin '{name}'; installed plugins: {', '.join(sorted(known)) or '(none)'}")
    path = editable_config_path(config)
    cfg = load_config_or_fail(str(path) if path.exists() else None)  # refuse to edit a file that does not parse
    if not enabled and name in cfg.kernel_section.required_plugins:  # else the next `cortex serve` refuses to start
        raise click.ClickException(
            f"'{name}' is in kernel.required_plugins: the kernel does not serve without it, so it stays enabled. To serve "
            f"without it on purpose (calls then pass unchecked), remove it from kernel.required_plugins first")
    doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    section = doc.setdefault("plugins", tomlkit.table())
    disabled = section.setdefault("disabled", tomlkit.array())
    names = [str(n) for n in disabled]
    if enabled:
        for index in reversed([i for i, n in enumerate(names) if n == name]):
            del disabled[index]
    elif name not in names:
        disabled.append(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(tomlkit.dumps(doc), encoding="utf-8")
    state = "enabled" if enabled else "disabled"
    click.echo(f"{state} plugin '{name}' in {path}" + ("; restart the kernel to apply (or use --now)" if restart_hint else ""))


def _live(config: str | None, target: str | None, method: str, request: Any) -> Any:
    from cortex.contracts.kernel.v1 import kernel_pb2_grpc

    client = kernel_client(config, target)
    return client.call(getattr(kernel_pb2_grpc.PluginServiceStub(client.channel), method), request, timeout=600)


def _state(plugin: Any) -> str:
    from cortex.contracts.kernel.v1 import kernel_pb2

    state = kernel_pb2.Plugin.State.Name(plugin.state).removeprefix("STATE_").lower()
    return state + (f": {plugin.error}" if plugin.error else "")


now_option = click.option("--now", is_flag=True, help="Also in the running kernel, without a restart (admin only).")


def _toggle(config: str | None, target: str | None, now: bool, name: str, enabled: bool) -> None:
    from cortex.contracts.kernel.v1 import kernel_pb2

    if now:  # the running kernel first: the file is edited only once the kernel agreed
        request = kernel_pb2.EnableRequest(name=name) if enabled else kernel_pb2.DisableRequest(name=name)
        reply = _live(config, target, "Enable" if enabled else "Disable", request)
        click.echo(f"plugin '{name}' in the running kernel: {_state(reply.plugin)}")
    _set_enabled(config, name, enabled, restart_hint=not now)


@plugins.command("enable")
@config_option
@target_option
@now_option
@click.argument("name")
def plugins_enable(config: str | None, target: str | None, now: bool, name: str) -> None:
    """Enable plugin NAME in the config file (and, with --now, in the running kernel)."""
    _toggle(config, target, now, name, True)


@plugins.command("disable")
@config_option
@target_option
@now_option
@click.argument("name")
def plugins_disable(config: str | None, target: str | None, now: bool, name: str) -> None:
    """Disable plugin NAME in the config file: it will not be loaded at all (with --now, it stops
    in the running kernel and its contracts are withdrawn)."""
    _toggle(config, target, now, name, False)


@plugins.command("install")
@config_option
@target_option
@click.argument("spec")
@click.option("--sha256", default="", help="The SHA-256 the file at SPEC must have.")
def plugins_install(config: str | None, target: str | None, spec: str, sha256: str) -> None:
    """Install SPEC (a distribution, a path or a wheel) into the running kernel's environment and
    enable the plugins it brings, without a restart (admin only)."""
    from cortex.contracts.kernel.v1 import kernel_pb2

    if Path(spec).exists():
        spec = str(Path(spec).resolve())  # the kernel may run elsewhere in the file system
    click.echo(f"installing {spec} into the running kernel's environment (pip; up to a minute or two)...", err=True)
    reply = _live(config, target, "Install", kernel_pb2.InstallRequest(spec=spec, sha256=sha256))
    for plugin in reply.plugins:
        click.echo(f"installed plugin '{plugin.name}' {plugin.version}: {_state(plugin)}")


def _add_plugin_commands() -> None:
    """Let plugins add subcommands. A broken config or plugin never breaks the CLI itself."""
    try:
        from ..plugin_host import PluginHost
        from ..registry import ContractRegistry

        cfg = load_config(None)
        host = PluginHost(cfg, ContractRegistry(), quiet=True)
        host.load()
        host.register_commands(cli)
    except Exception as exc:  # noqa: BLE001 - the core commands must work whatever is broken
        from ..plugin_host import first_line

        # say so, once, on stderr: a silent skip left people wondering where `cortex recall` went
        click.echo(
            f"cortex: plugin commands are unavailable ({first_line(exc)}); `cortex doctor` says what to fix",
            err=True,
        )


def main() -> None:
    # One OpenBLAS thread per library (numpy's, and the one MLX uses) unless the user says
    # otherwise: a server's matrices are small and its requests concurrent, and OpenBLAS's idle
    # workers spin: on 2 cores they burned more CPU than the work (scripts/loadtest.py, issue 14).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from . import key_commands
    from .doctor import doctor

    key_commands.register(cli)
    cli.add_command(doctor)
    _add_plugin_commands()
    cli(prog_name="cortex")
