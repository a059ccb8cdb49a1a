"""The kernel's configuration: `cortex.toml`, then `CORTEX_*` variables, then CLI flags.

A config file looks like this (every key optional):

    [kernel]
    listen = "127.0.0.1:50051"
    data_dir = "~/.cortex"
    privacy_mode = false            # true: no call leaves the machine
    log_level = "info"
    log_format = "auto"             # auto (JSON unless a TTY) | json | console
    max_message_bytes = 8388608
    shutdown_grace_seconds = 10
    health_interval_seconds = 10
    required_plugins = ["governance"]  # without one of these (broken, disabled), serve refuses to start
    require_credentials = false     # true: callers on loopback need a credential too (no `local`)
    tls_cert = ""                   # TLS for every listener (`cortex tls init` makes these); a listener
    tls_key = ""                    #   beyond loopback needs TLS and require_credentials = true
    tls_client_ca = ""              # mutual TLS: a client certificate from this CA is `node:<CN>`
    owners = ["mcp:*", "a2a:*"]     # principals whose data is the owner's (besides admin, local,
                                    #   plugins, node:*): everyone else's memories and traces are
                                    #   their own (`key:alice` sees only key:alice's)

    [client]
    target = "127.0.0.1:50051"      # where client commands find the kernel (default: kernel.listen)
    token_env = "CORTEX_TOKEN"      # an API key to call with (else the data dir's admin token)
    tls_ca = ""                     # the CA to trust (default: the data dir's, when kernel.tls_cert is set)
    tls_cert = ""                   # mutual TLS: this client's certificate and key
    tls_key = ""

    [plugins]
    disabled = ["echo"]             # never imported, hooks never called

    [plugins.echo]                  # a plugin's own section, handed to its cortex_configure hook
    greeting = "hi"

    [routing."cortex_echo.v1.EchoService"]
    order = ["remote-echo", "echo"] # provider names, tried in this order

    [providers.remote-echo]         # a remote provider: the router calls it over gRPC
    endpoint = "10.0.0.7:50051"
    services = ["cortex_echo.v1.EchoService"]
    timeout_seconds = 5             # per attempt, within the caller's deadline
    tls_ca = "ca.pem"               # call it over TLS (required beyond loopback); mutual TLS with
    tls_cert = "node.pem"           #   a client certificate (the remote sees node:<CN>), and/or
    tls_key = "node.key"
    token_env = "BOX2_KEY"          #   an API key of the remote kernel, from this variable

    [circuit]
    failure_threshold = 5
    reset_timeout_seconds = 30
    retries = 1                     # extra passes over the providers, failover-safe methods only
    retry_backoff_seconds = 0.05    # doubled on each pass

    [hybrid]                        # how the router mixes local and remote providers
    mode = "balanced"               # balanced: the configured order | performance: fastest first
                                    # (measured latency) | privacy: local providers only
    mlx_first = true                # the preferred provider leads, whatever the mode
    preferred = "mlx"               # ...this one (a provider name)
    conjunction = true              # false: a remote provider never serves as a fallback

    The default order for cortex.models.v1.ModelService is mlx, ollama, openai.

Environment: `CORTEX_CONFIG` names the file; `CORTEX_<SECTION>__<KEY>` sets one key
(`CORTEX_KERNEL__LISTEN=0.0.0.0:6000`, `CORTEX_PLUGINS__DISABLED='["echo"]'`), and
`CORTEX_PLUGINS__<PLUGIN>__<KEY>` one key of a plugin's section; values are read as
TOML values when they parse as one, else as strings. Short variables, each one kernel key:

    `CORTEX_LISTEN`               kernel.listen
    `CORTEX_DATA_DIR`             kernel.data_dir
    `CORTEX_PRIVACY_MODE`         kernel.privacy_mode        true: no call leaves the machine
    `CORTEX_LOG_LEVEL`            kernel.log_level
    `CORTEX_LOG_FORMAT`           kernel.log_format
    `CORTEX_TARGET`               client.target              where client commands find the kernel
    `CORTEX_HYBRID_MODE`          hybrid.mode                privacy: no call leaves the machine either
    `CORTEX_MLX_FIRST_PRIORITY`   hybrid.mlx_first
    `CORTEX_CONJUNCTION_ENABLED`  hybrid.conjunction
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:50051"

DEFAULTS: dict[str, dict[str, Any]] = {
    "kernel": {
        "listen": DEFAULT_LISTEN,
        "data_dir": "~/.cortex",
        "privacy_mode": False,
        "log_level": "info",
        "log_format": "auto",
        "max_message_bytes": 8 * 1024 * 1024,
        "shutdown_grace_seconds": 10.0,
        "health_interval_seconds": 10.0,
        # plugins without which the kernel must not serve: governance fails closed
        "required_plugins": ["governance"],
        "require_credentials": False,
        "tls_cert": "",
        "tls_key": "",
        "tls_client_ca": "",
        "owners": ["mcp:*", "a2a:*"],
    },
    "client": {"target": "", "token_env": "CORTEX_TOKEN", "tls_ca": "", "tls_cert": "", "tls_key": ""},
    "plugins": {"disabled": []},
    "routing": {"cortex.models.v1.ModelService": {"order": ["mlx", "ollama", "openai"]}},
    "providers": {},
    "circuit": {"failure_threshold": 5, "reset_timeout_seconds": 30.0, "retries": 1, "retry_backoff_seconds": 0.05},
    "hybrid": {"mode": "balanced", "mlx_first": True, "conjunction": True, "preferred": "mlx"},
}
HYBRID_MODES = ("balanced", "performance", "privacy")
PROVIDER_KEYS = {"endpoint", "services", "timeout_seconds", "local", "tls_ca", "tls_cert", "tls_key", "token_env"}


def _loopback_endpoint(endpoint: str) -> bool:
    from .security.remote import is_loopback

    return is_loopback(endpoint)

# Tables whose keys are names chosen by the user (plugin, service and provider names).
OPEN_TABLES = {"routing", "providers"}

ENV_ALIASES = {
    "CORTEX_LISTEN": ("kernel", "listen"),
    "CORTEX_DATA_DIR": ("kernel", "data_dir"),
    "CORTEX_PRIVACY_MODE": ("kernel", "privacy_mode"),
    "CORTEX_LOG_LEVEL": ("kernel", "log_level"),
    "CORTEX_LOG_FORMAT": ("kernel", "log_format"),
    "CORTEX_TARGET": ("client", "target"),
    "CORTEX_HYBRID_MODE": ("hybrid", "mode"),
    "CORTEX_MLX_FIRST_PRIORITY": ("hybrid", "mlx_first"),
    "CORTEX_CONJUNCTION_ENABLED": ("hybrid", "conjunction"),
}

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


class ConfigError(Exception):
    """A config problem a person can fix: it names the file (or variable) and the line."""

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None):
        self.path, self.line = path, line
        where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
        super().__init__(where + message)


@dataclass
class Config:
    """The merged configuration. `data` holds every section as plain TOML values."""

    data: dict[str, Any]
    path: Path | None = None
    text: str = ""
    sources: dict[str, str] = field(default_factory=dict)  # "kernel.listen" -> where it was set

    # -- typed accessors for the kernel's own keys -------------------------------------------------
    @property
    def kernel(self) -> dict[str, Any]:
        return self.data["kernel"]

    @property
    def listen(self) -> str:
        return self.kernel["listen"]

    @property
    def data_dir(self) -> Path:
        return Path(os.path.expanduser(str(self.kernel["data_dir"]))).resolve()

    @property
    def privacy_mode(self) -> bool:
        return bool(self.kernel["privacy_mode"])

    @property
    def local_only(self) -> bool:
        """No call may leave the machine: privacy mode, or the privacy hybrid mode."""
        return self.privacy_mode or self.data["hybrid"]["mode"] == "privacy"

    @property
    def target(self) -> str:
        return self.data["client"]["target"] or self.listen

    @property
    def disabled_plugins(self) -> list[str]:
        return list(self.data["plugins"]["disabled"])

    def plugin_section(self, name: str) -> dict[str, Any]:
        section = self.data["plugins"].get(name, {})
        return dict(section) if isinstance(section, dict) else {}

    def plugin_sections(self) -> list[str]:
        return [k for k, v in self.data["plugins"].items() if isinstance(v, dict)]

    def routing_order(self, service: str) -> list[str]:
        return list(self.data["routing"].get(service, {}).get("order", []))

    def provider(self, name: str) -> dict[str, Any]:
        return dict(self.data["providers"].get(name, {}))

    def line_of(self, needle: str) -> int | None:
        """The first line of the file that mentions `needle`, for error messages."""
        for number, line in enumerate(self.text.splitlines(), start=1):
            if needle in line:
                return number
        return None

    def error(self, message: str, needle: str | None = None) -> ConfigError:
        line = self.line_of(needle) if needle else None
        return ConfigError(message, self.path, line)


USER_CONFIG = Path("~/.cortex/cortex.toml")


def config_path(explicit: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Path | None:
    """The file to read: --config, else $CORTEX_CONFIG, else ./cortex.toml, else
    ~/.cortex/cortex.toml; None when there is none (the embedded defaults apply)."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit).expanduser()
    if env.get("CORTEX_CONFIG"):
        return Path(env["CORTEX_CONFIG"]).expanduser()
    for candidate in (Path("cortex.toml"), USER_CONFIG.expanduser()):
        if candidate.is_file():
            return candidate
    return None


def editable_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The file `cortex plugins enable|disable` edits (created when missing)."""
    return config_path(explicit) or USER_CONFIG.expanduser()


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Read and validate the config. `overrides` maps "section.key" to CLI-flag values."""
    env = os.environ if env is None else env
    file = config_path(path, env)
    data = copy.deepcopy(DEFAULTS)
    sources: dict[str, str] = {}
    text = ""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("config file not found", file) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file: {exc}", file) from None
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
            raise ConfigError(f"invalid TOML: {exc}", file, line) from None
        cfg_for_errors = Config(data, file, text)
        _merge_file(data, parsed, cfg_for_errors, sources, str(file))
    cfg = Config(data, file, text, sources)
    for name, value in sorted(env.items()):
        if name.startswith("CORTEX_") and name != "CORTEX_CONFIG":
            _apply_env(cfg, name, value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            section, key = dotted.split(".", 1)
            cfg.data[section][key] = value
            cfg.sources[dotted] = "command line"
    _validate(cfg)
    return cfg


def _line_from_message(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


def _merge_file(data: dict, parsed: dict, cfg: Config, sources: dict, origin: str) -> None:
    for section, values in parsed.items():
        if section not in DEFAULTS:
            known = ", ".join(sorted(DEFAULTS))
            raise cfg.error(f"unknown section [{section}]; known sections: {known}", section)
        if not isinstance(values, dict):
            raise cfg.error(f"[{section}] must be a table", section)
        for key, value in values.items():
            closed = section not in OPEN_TABLES and not (section == "plugins" and isinstance(value, dict))
            if closed and key not in DEFAULTS[section]:
                known = ", ".join(sorted(DEFAULTS[section])) or "(none)"
                raise cfg.error(f"unknown key '{key}' in [{section}]; known keys: {known}", key)
            data[section][key] = value
            sources[f"{section}.{key}"] = origin


def _apply_env(cfg: Config, name: str, raw: str) -> None:
    if name in ENV_ALIASES:
        section, key = ENV_ALIASES[name]
    else:
        parts = name[len("CORTEX_") :].lower().split("__")
        if len(parts) == 3 and parts[0] == "plugins" and all(parts):
            # CORTEX_PLUGINS__HTTP__LISTEN=127.0.0.1:0 -> [plugins.http] listen; the plugin checks its keys
            section = cfg.data["plugins"].setdefault(parts[1], {})
            if isinstance(section, dict):
                section[parts[2]] = _parse_env_value(raw)
                cfg.sources[f"plugins.{parts[1]}.{parts[2]}"] = f"${name}"
            return
        if len(parts) != 2 or parts[0] not in DEFAULTS:
            return  # not a config variable: ignored
        section, key = parts
        if section not in OPEN_TABLES and key not in DEFAULTS[section]:
            raise ConfigError(f"unknown key '{key}' in [{section}]", name)
    cfg.data[section][key] = _parse_env_value(raw)
    cfg.sources[f"{section}.{key}"] = f"${name}"


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _expect(cfg: Config, section: str, key: str, kind: type | tuple[type, ...], what: str) -> None:
    value = cfg.data[section][key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        ok = False
    else:
        ok = isinstance(value, kind)
    if not ok:
        where = cfg.sources.get(f"{section}.{key}", "")
        if where.startswith("$") or where == "command line":
            raise ConfigError(f"{section}.{key} must be {what}, got {value!r}", where)
        raise cfg.error(f"{section}.{key} must be {what}, got {value!r}", key)


def _validate(cfg: Config) -> None:
    _expect(cfg, "kernel", "listen", str, "a 'host:port' string")
    if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}", cfg.listen):
        raise cfg.error(f"kernel.listen must look like 'host:port', got {cfg.listen!r}", "listen")
    _expect(cfg, "kernel", "data_dir", str, "a path")
    _expect(cfg, "kernel", "privacy_mode", bool, "true or false")
    _expect(cfg, "kernel", "require_credentials", bool, "true or false")
    owners = cfg.kernel.get("owners")
    if not isinstance(owners, list) or not all(isinstance(o, str) and o for o in owners):
        raise cfg.error(f"kernel.owners must be a list of principal globs, got {owners!r}", "owners")
    for section, keys in (("kernel", ("tls_cert", "tls_key", "tls_client_ca")), ("client", ("token_env", "tls_ca", "tls_cert", "tls_key"))):
        for key in keys:
            _expect(cfg, section, key, str, "a string")
    if bool(cfg.kernel["tls_cert"]) != bool(cfg.kernel["tls_key"]):
        raise cfg.error("kernel.tls_cert and kernel.tls_key go together: set both (`cortex tls init` prints them)", "tls_")
    _expect(cfg, "kernel", "max_message_bytes", int, "an integer")
    _expect(cfg, "kernel", "shutdown_grace_seconds", (int, float), "a number of seconds")
    _expect(cfg, "kernel", "health_interval_seconds", (int, float), "a number of seconds")
    _expect(cfg, "circuit", "failure_threshold", int, "an integer")
    _expect(cfg, "circuit", "reset_timeout_seconds", (int, float), "a number of seconds")
    _expect(cfg, "circuit", "retries", int, "an integer")
    _expect(cfg, "circuit", "retry_backoff_seconds", (int, float), "a number of seconds")
    _expect(cfg, "hybrid", "mlx_first", bool, "true or false")
    _expect(cfg, "hybrid", "preferred", str, "a provider name")
    _expect(cfg, "hybrid", "conjunction", bool, "true or false")
    if cfg.data["hybrid"]["mode"] not in HYBRID_MODES:
        where = cfg.sources.get("hybrid.mode", "")
        message = f"hybrid.mode must be one of {', '.join(HYBRID_MODES)}, got {cfg.data['hybrid']['mode']!r}"
        raise ConfigError(message, where) if where.startswith("$") else cfg.error(message, "mode")
    if not 0 <= cfg.data["circuit"]["retries"] <= 5:
        raise cfg.error("circuit.retries must be between 0 and 5", "retries")
    if cfg.kernel["log_level"] not in LOG_LEVELS:
        raise cfg.error(f"kernel.log_level must be one of {', '.join(LOG_LEVELS)}", "log_level")
    if cfg.kernel["log_format"] not in LOG_FORMATS:
        raise cfg.error(f"kernel.log_format must be one of {', '.join(LOG_FORMATS)}", "log_format")
    if cfg.kernel["max_message_bytes"] < 1024:
        raise cfg.error("kernel.max_message_bytes must be at least 1024", "max_message_bytes")
    required = cfg.kernel["required_plugins"]
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        raise cfg.error("kernel.required_plugins must be a list of plugin names", "required_plugins")
    disabled = cfg.data["plugins"]["disabled"]
    if not isinstance(disabled, list) or not all(isinstance(n, str) for n in disabled):
        raise cfg.error("plugins.disabled must be a list of plugin names", "disabled")
    for service, route in cfg.data["routing"].items():
        order = route.get("order", []) if isinstance(route, dict) else None
        if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
            raise cfg.error(f'routing."{service}".order must be a list of provider names', service)
    for name, provider in cfg.data["providers"].items():
        if not isinstance(provider, dict):
            raise cfg.error(f"[providers.{name}] must be a table", name)
        unknown = set(provider) - PROVIDER_KEYS
        if unknown:
            raise cfg.error(
                f"unknown key(s) {', '.join(sorted(unknown))} in [providers.{name}]; known: {', '.join(sorted(PROVIDER_KEYS))}",
                name,
            )
        for key in ("tls_ca", "tls_cert", "tls_key", "token_env"):
            if not isinstance(provider.get(key, ""), str):
                raise cfg.error(f"providers.{name}.{key} must be a string", name)
        if "endpoint" in provider:
            services = provider.get("services")
            if not isinstance(services, list) or not services:
                raise cfg.error(
                    f"[providers.{name}] has an endpoint, so it needs services = [\"pkg.v1.Service\", ...]",
                    name,
                )
        endpoint = provider.get("endpoint", "")
        if endpoint and not provider.get("tls_ca") and not _loopback_endpoint(endpoint):
            raise cfg.error(
                f"[providers.{name}] endpoint {endpoint!r} is not loopback: set tls_ca (and tls_cert/tls_key or "
                "token_env for a credential) so that calls to it are encrypted and authenticated",
                name,
            )
        timeout = provider.get("timeout_seconds")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise cfg.error(f"providers.{name}.timeout_seconds must be a positive number", name)
