"""The kernel's configuration: `cortex.toml`, then `CORTEX_*` variables, then CLI flags.

Every key is optional. The kernel's own tables are the typed sections below, each with its keys,
their defaults and what they mean: [kernel] `KernelSection`, [client] `ClientSection`, [plugins]
`PluginsSection`, [circuit] `CircuitSection`, [hybrid] `HybridSection`, [providers.NAME]
`ProviderSection`. A `Config` holds them, built once its values are valid (`config.hybrid.mode`,
`config.kernel_section.required_plugins`). The other tables are named by the admin:

    [plugins.echo]                  # a plugin's own section, handed to its cortex_configure hook
    greeting = "hi"                 #   as a dict (`Config.plugin_section`)

    [routing."cortex_echo.v1.EchoService"]
    order = ["remote-echo", "echo"] # provider names, tried in this order; those it leaves out (all,
                                    #   with no order) follow by the rank their plugins declare
                                    #   (`registry.add(..., rank=)`), then as registered

    [providers.remote-echo]         # a remote provider: the router calls it over gRPC
    endpoint = "10.0.0.7:50051"
    services = ["cortex_echo.v1.EchoService"]

Environment: `CORTEX_CONFIG` names the file; `CORTEX_<SECTION>__<KEY>` sets one key
(`CORTEX_KERNEL__LISTEN=0.0.0.0:6000`, `CORTEX_PLUGINS__DISABLED='["echo"]'`), and
`CORTEX_PLUGINS__<PLUGIN>__<KEY>` one key of a plugin's section; values are read as
TOML values when they parse as one, else as strings. Short variables, each one key: `ENV_ALIASES`.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

DEFAULT_LISTEN = "127.0.0.1:50051"


@dataclass(frozen=True)
class KernelSection:
    """[kernel]: the kernel's process, its listener, and whom it trusts."""
    listen: str = DEFAULT_LISTEN
    data_dir: str = "~/.cortex"
    privacy_mode: bool = False  # true: no call leaves the machine
    log_level: str = "info"  # debug | info | warning | error
    log_format: str = "auto"  # auto (JSON unless a TTY) | json | console
    max_message_bytes: int = 8 * 1024 * 1024  # at least 1024
    shutdown_grace_seconds: float = 10.0  # in-flight calls' time to finish when the kernel stops
    max_in_flight: int = 64  # calls from outside served at once; past it RESOURCE_EXHAUSTED (0: no limit)
    health_interval_seconds: float = 10.0
    required_plugins: tuple[str, ...] = ("governance",)  # without one of these (broken, disabled), serve refuses to start
    require_credentials: bool = False  # true: callers on loopback need a credential too (no `local`)
    tls_cert: str = ""  # TLS for every listener (`cortex tls init` makes these); a listener beyond
    tls_key: str = ""  #   loopback needs TLS and require_credentials = true
    tls_client_ca: str = ""  # mutual TLS: a client certificate from this CA is `node:<CN>`
    # principals whose data is the owner's (besides admin, local, plugins, node:*): everyone else's
    # memories and traces are their own (`key:alice` sees only key:alice's)
    owners: tuple[str, ...] = ("mcp:*", "a2a:*")


@dataclass(frozen=True)
class ClientSection:
    """[client]: how client commands (`cortex ...`, `cortex mcp`) reach the kernel."""
    target: str = ""  # where client commands find the kernel ("": kernel.listen; `Config.target`)
    token_env: str = "CORTEX_TOKEN"  # noqa: S105 - the variable holding an API key to call with (else the admin token)
    tls_ca: str = ""  # the CA to trust (default: the data dir's, when kernel.tls_cert is set)
    tls_cert: str = ""  # mutual TLS: this client's certificate and key
    tls_key: str = ""


@dataclass(frozen=True)
class PluginsSection:
    """[plugins]: which plugins run (a plugin's own [plugins.NAME] table: `Config.plugin_section`)."""
    disabled: tuple[str, ...] = ()  # never imported, hooks never called


@dataclass(frozen=True)
class CircuitSection:
    """[circuit]: when the router stops calling a failing provider, and how it retries."""
    failure_threshold: int = 5  # provider faults in a row that open its circuit
    reset_timeout_seconds: float = 30.0  # then one half-open probe
    retries: int = 1  # 0 to 5 extra passes over the providers, failover-safe methods only
    retry_backoff_seconds: float = 0.05  # before the first extra pass, doubled on each


@dataclass(frozen=True)
class HybridSection:
    """[hybrid]: how the router mixes local and remote providers."""
    mode: str = "balanced"  # balanced: the routing order | performance: fastest (measured) first | privacy: local only
    mlx_first: bool = True  # the preferred provider leads, whatever the mode
    conjunction: bool = True  # false: a remote provider never serves as a fallback
    preferred: str = "mlx"  # ...that provider (a provider name)


@dataclass(frozen=True)
class ProviderSection:
    """[providers.NAME]: a remote provider, which the router calls over gRPC."""
    endpoint: str = ""  # "host:port"
    services: tuple[str, ...] = ()  # the contracts it serves there ("pkg.v1.Service")
    timeout_seconds: float | None = None  # per attempt, within the caller's deadline
    local: bool | None = None  # whether calls to it stay on this machine (default: a loopback endpoint)
    tls_ca: str = ""  # call it over TLS (required beyond loopback); mutual TLS with a client
    tls_cert: str = ""  #   certificate (the remote sees node:<CN>), and/or
    tls_key: str = ""
    token_env: str = ""  #   an API key of the remote kernel, from this variable


@dataclass(frozen=True)
class PrivacySection:
    """[privacy]: personal data in a request for a remote provider is replaced by placeholders
    before it leaves, and put back in the answer here (kernel/security/redaction.py)."""
    redact: bool = True
    kinds: tuple[str, ...] = ("email", "phone", "card", "iban", "postcode", "national_id")
    patterns: tuple[str, ...] = ()  # more kinds: "NAME=regular expression"
    regions: tuple[str, ...] = ()  # phone, postcode and national-number regions (ISO codes); empty: the redactor's
    # the contracts whose remote providers get redacted requests: models, which answer from the request
    # alone (a remote kernel serving memories must store the text as it is: it is yours, over TLS)
    services: tuple[str, ...] = ("cortex.models.v1.ModelService", "cortex.models.v1.RerankService")


# The kernel's tables with fixed keys, by name; `routing` and `providers` are keyed by names the admin chooses.
SECTIONS = {"kernel": KernelSection, "client": ClientSection, "plugins": PluginsSection, "circuit": CircuitSection,
            "hybrid": HybridSection, "privacy": PrivacySection}
OPEN_TABLES = {"routing", "providers"}
DEFAULTS: dict[str, dict[str, Any]] = {  # as TOML values
    name: {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in fields(cls)} for name, cls in SECTIONS.items()
} | {"routing": {}, "providers": {}}
PROVIDER_KEYS = {f.name for f in fields(ProviderSection)}
# how each key is checked: by its type, or these words, or these choices
KINDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "str": (str, "a string"), "bool": (bool, "true or false"), "int": (int, "an integer"),
    "float": ((int, float), "a number of seconds"), "tuple[str, ...]": (list, "a list of names")}
WHAT = {"kernel.listen": "a 'host:port' string", "kernel.data_dir": "a path", "hybrid.preferred": "a provider name",
        "kernel.owners": "a list of principal globs", "kernel.required_plugins": "a list of plugin names",
        "plugins.disabled": "a list of plugin names"}
CHOICES = {"kernel.log_level": ("debug", "info", "warning", "error"), "kernel.log_format": ("auto", "json", "console"),
           "hybrid.mode": ("balanced", "performance", "privacy")}

ENV_ALIASES = {  # the short variables: each sets one key
    "CORTEX_LISTEN": ("kernel", "listen"),
    "CORTEX_DATA_DIR": ("kernel", "data_dir"),
    "CORTEX_PRIVACY_MODE": ("kernel", "privacy_mode"),  # true: no call leaves the machine
    "CORTEX_LOG_LEVEL": ("kernel", "log_level"),
    "CORTEX_LOG_FORMAT": ("kernel", "log_format"),
    "CORTEX_TARGET": ("client", "target"),  # where client commands find the kernel
    "CORTEX_HYBRID_MODE": ("hybrid", "mode"),  # privacy: no call leaves the machine either
    "CORTEX_MLX_FIRST_PRIORITY": ("hybrid", "mlx_first"),
    "CORTEX_CONJUNCTION_ENABLED": ("hybrid", "conjunction"),
}


class ConfigError(Exception):
    """A config problem a person can fix: it names the file (or variable) and the line."""

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None):
        self.path, self.line = path, line
        where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
        super().__init__(where + message)


@dataclass
class Config:
    """The merged configuration. `data` holds every table as plain TOML values; the kernel's own
    are read as typed sections, built once the values are valid (`override` changes values)."""

    data: dict[str, Any]
    path: Path | None = None
    text: str = ""
    sources: dict[str, str] = field(default_factory=dict)  # "kernel.listen" -> where it was set
    kernel_section: KernelSection = field(init=False)
    client: ClientSection = field(init=False)
    plugins: PluginsSection = field(init=False)
    circuit: CircuitSection = field(init=False)
    hybrid: HybridSection = field(init=False)
    privacy: PrivacySection = field(init=False)
    routing: Mapping[str, tuple[str, ...]] = field(init=False)  # service -> its order (provider names)
    providers: Mapping[str, ProviderSection] = field(init=False)  # name -> a remote provider

    @property
    def kernel(self) -> dict[str, Any]:
        """[kernel] as TOML values (`kernel_section` is the typed one)."""
        return cast(dict[str, Any], self.data["kernel"])

    @property
    def listen(self) -> str:
        return self.kernel_section.listen

    @property
    def data_dir(self) -> Path:
        return Path(os.path.expanduser(self.kernel_section.data_dir)).resolve()

    @property
    def privacy_mode(self) -> bool:
        return self.kernel_section.privacy_mode

    @property
    def local_only(self) -> bool:
        """No call may leave the machine: privacy mode, or the privacy hybrid mode."""
        return self.privacy_mode or self.hybrid.mode == "privacy"

    @property
    def target(self) -> str:
        return self.client.target or self.listen

    @property
    def disabled_plugins(self) -> list[str]:
        return list(self.plugins.disabled)

    def plugin_section(self, name: str) -> dict[str, Any]:
        section = self.data["plugins"].get(name, {})
        return dict(section) if isinstance(section, dict) else {}

    def plugin_sections(self) -> list[str]:
        return [k for k, v in self.data["plugins"].items() if isinstance(v, dict)]

    def routing_order(self, service: str) -> list[str]:
        return list(self.routing.get(service, ()))

    def override(self, values: dict[str, Any], origin: str = "command line") -> None:
        """Set "section.key" (or "plugins.NAME.KEY") values from `origin`, skipping None (a flag not
        given), then validate and build the typed sections again: for CLI flags, and for a program
        that starts a kernel with settings of its own. ConfigError names `origin` for a bad one."""
        data, sources = copy.deepcopy(self.data), dict(self.sources)
        try:
            for dotted, value in values.items():
                section, _, key = dotted.partition(".")
                if section in SECTIONS and key not in DEFAULTS[section] and not (section == "plugins" and "." in key):
                    raise ConfigError(f"{origin}: unknown key {dotted}; known: {', '.join(sorted(DEFAULTS[section]))}")
                if value is not None:
                    self._set(dotted, value, origin)
            _validate(self)
        except (ConfigError, KeyError) as exc:  # nothing changes: the values and the typed sections agree
            self.data, self.sources = data, sources
            _validate(self)
            raise exc if isinstance(exc, ConfigError) else ConfigError(f"{origin}: no table [{exc.args[0]}] to set") from None

    def _set(self, dotted: str, value: Any, origin: str) -> None:
        section, _, key = dotted.partition(".")
        table = self.data[section]
        if section == "plugins" and "." in key:  # one key of a plugin's own section
            name, key = key.split(".", 1)
            table = table.setdefault(name, {})
            if not isinstance(table, dict):
                return
        table[key] = list(value) if isinstance(value, tuple) else value  # as TOML holds a list
        self.sources[dotted] = origin

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


def config_path(explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path | None:
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
    env: Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Read and validate the config. `overrides` maps "section.key" to CLI-flag values."""
    env = os.environ if env is None else env
    file = config_path(path, env)
    cfg = Config(copy.deepcopy(DEFAULTS), file)
    if file is not None:
        try:
            cfg.text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("config file not found", file) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file: {exc}", file) from None
        try:
            parsed = tomllib.loads(cfg.text)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
            raise ConfigError(f"invalid TOML: {exc}", file, line) from None
        _merge_file(cfg, parsed)
    for name, value in sorted(env.items()):
        if name.startswith("CORTEX_") and name != "CORTEX_CONFIG":
            _apply_env(cfg, name, value)
    cfg.override(overrides or {})
    return cfg


def _line_from_message(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


def _merge_file(cfg: Config, parsed: dict[str, Any]) -> None:
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
            cfg.data[section][key] = value  # (a plugin's name may hold a dot: no `_set`)
            cfg.sources[f"{section}.{key}"] = str(cfg.path)


def _apply_env(cfg: Config, name: str, raw: str) -> None:
    if name in ENV_ALIASES:
        section, key = ENV_ALIASES[name]
    else:
        parts = name[len("CORTEX_") :].lower().split("__")
        if len(parts) == 3 and parts[0] == "plugins" and all(parts):
            # CORTEX_PLUGINS__HTTP__LISTEN=127.0.0.1:0 -> [plugins.http] listen; the plugin checks its keys
            cfg._set(".".join(parts), _parse_env_value(raw), f"${name}")
            return
        if len(parts) != 2 or parts[0] not in DEFAULTS:
            return  # not a config variable: ignored
        section, key = parts
        if section not in OPEN_TABLES and key not in DEFAULTS[section]:
            raise ConfigError(f"unknown key '{key}' in [{section}]", name)
    cfg._set(f"{section}.{key}", _parse_env_value(raw), f"${name}")


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _check(cfg: Config, section: str, key: str, annotation: str) -> None:
    """One key of a typed section: its type (a bool is no number), or one of its choices."""
    dotted, value = f"{section}.{key}", cfg.data[section][key]
    kind, what = KINDS[annotation]
    if dotted in CHOICES:
        ok, what = value in CHOICES[dotted], f"one of {', '.join(CHOICES[dotted])}"
    elif kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
    else:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        message, where = f"{dotted} must be {WHAT.get(dotted, what)}, got {value!r}", cfg.sources.get(dotted, "")
        raise ConfigError(message, where) if where and where != str(cfg.path) else cfg.error(message, key)


def _typed(cls: type, values: dict[str, Any]) -> Any:
    """A typed section from valid TOML values: lists become tuples, whole seconds floats."""
    return cls(**{
        f.name: tuple(v) if isinstance(v, list) else float(v) if "float" in str(f.type) and isinstance(v, int) else v
        for f in fields(cls) for v in [values.get(f.name, f.default)]
    })


def _validate(cfg: Config) -> None:
    """Check every value (a bad one raises ConfigError naming the file and line, or the variable),
    then build the typed sections."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            _check(cfg, section, f.name, str(f.type))
    for service, route in cfg.data["routing"].items():
        order = route.get("order", []) if isinstance(route, dict) else None
        if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
            raise cfg.error(f'routing."{service}".order must be a list of provider names', service)
    for name, provider in cfg.data["providers"].items():
        _check_provider(cfg, name, provider)
    for section, cls in SECTIONS.items():
        setattr(cfg, "kernel_section" if section == "kernel" else section, _typed(cls, cfg.data[section]))
    cfg.routing = MappingProxyType({s: tuple(r.get("order", ())) for s, r in cfg.data["routing"].items()})
    cfg.providers = MappingProxyType({n: _typed(ProviderSection, p) for n, p in cfg.data["providers"].items()})
    kernel = cfg.kernel_section
    if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}", kernel.listen):
        raise cfg.error(f"kernel.listen must look like 'host:port', got {kernel.listen!r}", "listen")
    if bool(kernel.tls_cert) != bool(kernel.tls_key):
        raise cfg.error("kernel.tls_cert and kernel.tls_key go together: set both (`cortex tls init` prints them)", "tls_")
    if kernel.max_message_bytes < 1024:
        raise cfg.error("kernel.max_message_bytes must be at least 1024", "max_message_bytes")
    if not 0 <= kernel.max_in_flight <= 100_000:
        raise cfg.error("kernel.max_in_flight must be between 0 (no limit) and 100000", "max_in_flight")
    if not 0 <= cfg.circuit.retries <= 5:
        raise cfg.error("circuit.retries must be between 0 and 5", "retries")


def _check_provider(cfg: Config, name: str, provider: Any) -> None:
    from .security.remote import is_loopback

    if not isinstance(provider, dict):
        raise cfg.error(f"[providers.{name}] must be a table", name)
    unknown = set(provider) - PROVIDER_KEYS
    if unknown:
        known = ", ".join(sorted(PROVIDER_KEYS))
        raise cfg.error(f"unknown key(s) {', '.join(sorted(unknown))} in [providers.{name}]; known: {known}", name)
    for key in ("endpoint", "tls_ca", "tls_cert", "tls_key", "token_env"):
        if not isinstance(provider.get(key, ""), str):
            raise cfg.error(f"providers.{name}.{key} must be a string", name)
    if not isinstance(provider.get("local", False), bool):  # "false" (a string) would be true: a remote provider local
        raise cfg.error(f"providers.{name}.local must be true or false, got {provider['local']!r}", name)
    if "endpoint" in provider:
        services = provider.get("services")
        if not isinstance(services, list) or not services or not all(isinstance(s, str) and s for s in services):
            raise cfg.error(f"[providers.{name}] has an endpoint, so it needs services = [\"pkg.v1.Service\", ...]", name)
    endpoint = provider.get("endpoint", "")
    if endpoint and not provider.get("tls_ca") and not is_loopback(endpoint):
        raise cfg.error(
            f"[providers.{name}] endpoint {endpoint!r} is not loopback: set tls_ca (and tls_cert/tls_key or "
            "token_env for a credential) so that calls to it are encrypted and authenticated",
            name,
        )
    timeout = provider.get("timeout_seconds")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise cfg.error(f"providers.{name}.timeout_seconds must be a positive number", name)
