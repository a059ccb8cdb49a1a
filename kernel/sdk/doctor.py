"""`cortex doctor`: check the install and say what to fix.

Checks the config, the data dir, the kernel's port and listener rule, the plugins, whether calls
are governed, and, when a kernel answers, every contract's live health; each plugin adds its own
checks (its ports, its models, its libraries, its keys) through the `cortex_doctor` hook, with
$CORTEX_CONFIG naming the config checked, so that one that reads the config reads this one.
Exit status 1 when anything must be fixed; warnings alone exit 0.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict
from typing import TYPE_CHECKING

import click
import grpc

from ..doctor_check import FAIL, OK, WARN, port_check
from ..doctor_check import DoctorCheck as Check

if TYPE_CHECKING:
    from cortex.contracts.kernel.v1 import kernel_pb2

    from ..config import Config

MARKS = {OK: "✓", WARN: "!", FAIL: "✗"}


def _checks(config_path: str | None) -> list[Check]:
    from ..config import ConfigError, load_config

    checks = [
        Check("python", OK if sys.version_info >= (3, 11) else FAIL, sys.version.split()[0], "use Python 3.11 or newer")
    ]
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        return [*checks, Check("config", FAIL, str(exc), "fix the file at that line")]
    checks.append(Check("config", OK, str(cfg.path or "embedded defaults")))
    checks.append(_data_dir(cfg))
    info = _kernel_info(cfg)
    running = info is not None
    checks.append(port_check(cfg.listen, "port", "stop what holds it, or set kernel.listen / --listen", running))
    checks.append(_exposure(cfg))
    checks += _plugins(cfg, running)
    checks.append(_governance(cfg, info))
    if running:
        checks += _live_health(cfg)
    else:
        checks.append(Check("live health", WARN, "no kernel is running", "start `cortex serve` and run doctor again"))
    return checks


def _data_dir(cfg: Config) -> Check:
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=cfg.data_dir):
            pass
    except OSError as exc:
        return Check("data dir", FAIL, f"{cfg.data_dir}: {exc}", "choose a writable kernel.data_dir (or --data-dir)")
    return Check("data dir", OK, f"{cfg.data_dir} is writable")


def _kernel_info(cfg: Config) -> kernel_pb2.GetInfoResponse | None:
    """The running kernel's GetInfo, or None when none answers at kernel.listen."""
    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

    from ..security.dial import client_dial

    dial = client_dial(cfg)
    try:
        with dial.channel(cfg.listen) as channel:
            info: kernel_pb2.GetInfoResponse = kernel_pb2_grpc.KernelServiceStub(channel).GetInfo(
                kernel_pb2.GetInfoRequest(), timeout=1.5, metadata=dial.metadata()
            )
            return info
    except (grpc.RpcError, ValueError):
        return None


def _governance(cfg: Config, info: kernel_pb2.GetInfoResponse | None) -> Check:
    governed = list(info.governed_by) if info is not None else list(cfg.kernel_section.required_plugins)
    if governed:
        return Check("governance", OK, f"governed by {', '.join(governed)}")
    return Check("governance", WARN, "OFF: calls are allowed unchecked and not audited (kernel.required_plugins is empty"
                 + (", and no plugin authorizes calls)" if info is not None else ")"),
                 "restore kernel.required_plugins (its default) unless this is on purpose")


def _exposure(cfg: Config) -> Check:
    from ..security.exposure import Exposure

    exposure = Exposure.from_config(cfg.kernel)
    try:
        exposure.check(cfg.listen, "kernel.listen")
        if exposure.tls:
            exposure.read_files()
    except ValueError as exc:
        return Check("listener", FAIL, str(exc), "see README, Security")
    parts = ["TLS" if exposure.tls else "plaintext (loopback only)",
             "mutual TLS" if exposure.tls_client_ca else "",
             "credentials required" if exposure.require_credentials else "loopback callers are `local`"]
    return Check("listener", OK, f"{cfg.listen}: " + ", ".join(p for p in parts if p))


def _plugins(cfg: Config, running: bool) -> list[Check]:
    """Each plugin's state, then the checks each plugin makes of itself (`cortex_doctor`)."""
    from ..plugin_host import BROKEN, DISABLED, PluginHost
    from ..registry import ContractRegistry

    host = PluginHost(cfg, ContractRegistry(), quiet=True)
    try:
        host.load()
    except Exception as exc:  # noqa: BLE001 - a config naming an unknown plugin
        return [Check("plugins", FAIL, str(exc), "fix the plugin names in the config")]
    checks = []
    for record in host.records.values():
        if record.state == BROKEN:
            checks.append(Check(f"plugin {record.name}", FAIL, record.error, f"fix or `cortex plugins disable {record.name}`"))
        elif record.state == DISABLED and record.name in host.required:  # `cortex serve` refuses to start so
            checks.append(Check(f"plugin {record.name}", FAIL, f"disabled, and kernel.required_plugins names it: "
                                f"`cortex serve` will not start ({record.error or 'plugins.disabled'})",
                                f"`cortex plugins enable {record.name}`, or remove it from kernel.required_plugins on purpose"))
        elif record.state == DISABLED:
            checks.append(Check(f"plugin {record.name}", OK, "disabled"))
        else:
            checks.append(Check(f"plugin {record.name}", OK, f"{record.version} ({record.source})"))
    before = os.environ.get("CORTEX_CONFIG")
    if cfg.path is not None:
        os.environ["CORTEX_CONFIG"] = str(cfg.path)
    try:
        return checks + host.doctor(running)
    finally:
        if before is None:
            os.environ.pop("CORTEX_CONFIG", None)
        else:
            os.environ["CORTEX_CONFIG"] = before


def _live_health(cfg: Config) -> list[Check]:
    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

    from ..security.dial import client_dial

    dial = client_dial(cfg)
    with dial.channel(cfg.listen) as channel:
        contracts: kernel_pb2.ListContractsResponse = kernel_pb2_grpc.KernelServiceStub(channel).ListContracts(
            kernel_pb2.ListContractsRequest(), timeout=5, metadata=dial.metadata()
        )
    checks = []
    for contract in contracts.contracts:
        for p in contract.providers:
            healthy = p.health == kernel_pb2.Provider.HEALTH_SERVING
            # a provider down is a warning while another serves the contract, a failure otherwise
            covered = any(q.health == kernel_pb2.Provider.HEALTH_SERVING for q in contract.providers)
            state = OK if healthy else WARN if covered or not p.local else FAIL
            checks.append(Check(f"{contract.service.rsplit('.', 1)[-1]} via {p.name}", state,
                                p.health_detail or ("serving" if healthy else "not serving"),
                                "" if healthy else f"see `cortex contracts list`; disable with `cortex plugins disable {p.plugin}`"))
    return checks


@click.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="CORTEX_CONFIG", help="Config file.")
@click.option("--json", "as_json", is_flag=True)
def doctor(config: str | None, as_json: bool) -> None:
    """Check the install (MLX, models, data dir, port, keys, plugins) and print what to fix."""
    from .logs import configure_logging

    configure_logging("warning", "console")  # findings go to stdout; logs, if any, to stderr
    checks = _checks(config)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            line = f"{MARKS[c.state]} {c.name}: {c.detail}"
            click.echo(line + (f"\n    fix: {c.fix}" if c.state != OK and c.fix else ""))
    if any(c.state == FAIL for c in checks):
        sys.exit(1)
