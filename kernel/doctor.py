"""`cortex doctor`: check the install and say what to fix.

Checks the config, the data dir, the ports (gRPC and the bridges'), the plugins, MLX (backend,
device, BLAS), the models, the governance keys, and, when a kernel answers, every contract's live
health.
Exit status 1 when anything must be fixed; warnings alone exit 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass

import click
import grpc

OK, WARN, FAIL = "ok", "warning", "fail"
MARKS = {OK: "✓", WARN: "!", FAIL: "✗"}


@dataclass
class Check:
    name: str
    state: str
    detail: str
    fix: str = ""


def _checks(config_path: str | None) -> list[Check]:
    from .config import ConfigError, load_config

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
    checks.append(_port(cfg.listen, running))
    checks.append(_exposure(cfg))
    if not running:
        checks += _bridge_ports(cfg)
    checks += _plugins(cfg)
    checks += _mlx()
    checks += _models(cfg)
    checks.append(_keys(cfg))
    checks.append(_governance(cfg, info))
    if running:
        checks += _live_health(cfg)
    else:
        checks.append(Check("live health", WARN, "no kernel is running", "start `cortex serve` and run doctor again"))
    return checks


def _data_dir(cfg) -> Check:
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=cfg.data_dir):
            pass
    except OSError as exc:
        return Check("data dir", FAIL, f"{cfg.data_dir}: {exc}", "choose a writable kernel.data_dir (or --data-dir)")
    return Check("data dir", OK, f"{cfg.data_dir} is writable")


def _kernel_info(cfg):
    """The running kernel's GetInfo, or None when none answers at kernel.listen."""
    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

    from .dial import client_dial

    dial = client_dial(cfg)
    try:
        with dial.channel(cfg.listen) as channel:
            return kernel_pb2_grpc.KernelServiceStub(channel).GetInfo(
                kernel_pb2.GetInfoRequest(), timeout=1.5, metadata=dial.metadata()
            )
    except (grpc.RpcError, ValueError):
        return None


def _governance(cfg, info) -> Check:
    governed = list(info.governed_by) if info is not None else cfg.kernel["required_plugins"]
    if governed:
        return Check("governance", OK, f"governed by {', '.join(governed)}")
    return Check("governance", WARN, "OFF: calls are allowed unchecked and not audited (kernel.required_plugins is empty"
                 + (", and no plugin authorizes calls)" if info is not None else ")"),
                 'put "governance" back in kernel.required_plugins unless this is on purpose')


def _exposure(cfg) -> Check:
    from .exposure import Exposure

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


def _port(listen: str, running: bool, name: str = "port",
          fix: str = "stop what holds it, or set kernel.listen / --listen") -> Check:
    if running:
        return Check(name, OK, f"a kernel is serving on {listen}")
    host, port = listen.rsplit(":", 1)
    try:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as sock:
            sock.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        return Check(name, FAIL, f"{listen}: {exc.strerror}", fix)
    return Check(name, OK, f"{listen} is free")


def _bridge_ports(cfg) -> list[Check]:
    """The HTTP API's, the A2A endpoint's and MCP-over-HTTP's ports, when no kernel holds them."""
    from cortex.plugins.a2a.plugin import DEFAULT_LISTEN as A2A_LISTEN
    from cortex.plugins.http.plugin import DEFAULT_LISTEN as HTTP_LISTEN

    checks = []
    for plugin, key, default in (("http", "listen", HTTP_LISTEN), ("a2a", "listen", A2A_LISTEN), ("mcp", "http_listen", "")):
        listen = str(cfg.plugin_section(plugin).get(key, default))
        if plugin in cfg.disabled_plugins or not listen or listen.endswith(":0"):
            continue
        checks.append(_port(listen, False, f"port ({plugin})", f"stop what holds it, or set [plugins.{plugin}] {key}"))
    return checks


def _plugins(cfg) -> list[Check]:
    from .plugin_host import BROKEN, DISABLED, PluginHost
    from .registry import ContractRegistry

    host = PluginHost(cfg, ContractRegistry(), quiet=True)
    try:
        host.load()
    except Exception as exc:  # noqa: BLE001 - a config naming an unknown plugin
        return [Check("plugins", FAIL, str(exc), "fix the plugin names in the config")]
    checks = []
    for record in host.records.values():
        if record.state == BROKEN:
            checks.append(Check(f"plugin {record.name}", FAIL, record.error, f"fix or `cortex plugins disable {record.name}`"))
        elif record.state == DISABLED:
            checks.append(Check(f"plugin {record.name}", OK, "disabled"))
        else:
            checks.append(Check(f"plugin {record.name}", OK, f"{record.version} ({record.source})"))
    return checks


def _mlx() -> list[Check]:
    if importlib.util.find_spec("mlx") is None:
        fix = "pip install 'mlx[cpu]'" if sys.platform.startswith("linux") else "pip install mlx"
        return [Check("mlx", FAIL, "not installed", fix)]
    from cortex.plugins.mlx.blas import use_fast_blas

    blas = use_fast_blas()
    import mlx.core as mx

    checks = [Check("mlx", OK, f"{mx.__version__}, device {mx.default_device()}")]
    if sys.platform.startswith("linux"):
        checks.append(
            Check("blas", OK, f"OpenBLAS {blas}") if blas
            else Check("blas", WARN, "reference BLAS: MLX on this CPU is tens of times slower",
                       "apt-get install libopenblas0-pthread (scripts/setup.sh does it)")
        )
    return checks


def _models(cfg) -> list[Check]:
    from cortex.plugins.mlx.plugin import packaged_minilm

    checks = []
    settings = cfg.plugin_section("mlx")
    embedding = settings.get("embedding_model")
    if embedding:
        ok = os.path.exists(os.path.join(os.path.expanduser(str(embedding)), "config.json"))
        checks.append(Check("embedding model", OK if ok else FAIL, str(embedding), "point [plugins.mlx] embedding_model at a BERT folder"))
    else:
        found = packaged_minilm()
        checks.append(Check("embedding model", OK if found else FAIL, str(found or "all-MiniLM-L6-v2 missing"),
                            "cortex models install"))
    generation = settings.get("generation_model")
    if generation and not os.path.exists(os.path.expanduser(str(generation))):
        checks.append(Check("generation model", WARN, f"{generation} is not a folder: it would be fetched from a hub",
                            "download it once, then point generation_model at the folder"))
    else:
        checks.append(Check("generation model", OK, str(generation or "cortex-tiny-llama (built on first use)")))
    return checks


def _keys(cfg) -> Check:
    key = cfg.data_dir / "governance" / "signing_key.pem"
    if not key.exists():
        return Check("signing key", OK, "created on first start")
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & 0o077:
        return Check("signing key", FAIL, f"{key} is mode {mode:o}", f"chmod 600 {key}")
    return Check("signing key", OK, f"{key} (mode 600)")


def _live_health(cfg) -> list[Check]:
    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

    from .dial import client_dial

    dial = client_dial(cfg)
    with dial.channel(cfg.listen) as channel:
        contracts = kernel_pb2_grpc.KernelServiceStub(channel).ListContracts(
            kernel_pb2.ListContractsRequest(), timeout=5, metadata=dial.metadata()
        )
    checks = []
    for contract in contracts.contracts:
        for p in contract.providers:
            healthy = p.health == kernel_pb2.Provider.HEALTH_SERVING
            remote_or_optional = not p.local or p.plugin in ("ollama", "openai")
            state = OK if healthy else WARN if remote_or_optional else FAIL
            checks.append(Check(f"{contract.service.rsplit('.', 1)[-1]} via {p.name}", state,
                                p.health_detail or ("serving" if healthy else "not serving"),
                                "" if healthy else f"see `cortex contracts list`; disable with `cortex plugins disable {p.plugin}`"))
    return checks


@click.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="CORTEX_CONFIG", help="Config file.")
@click.option("--json", "as_json", is_flag=True)
def doctor(config, as_json):
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
