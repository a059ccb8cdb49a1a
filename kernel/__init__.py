"""Cortex-OS kernel: contract registry, policy router, plugin host, gRPC server and CLI.

This module is the plugin API: everything a plugin (built-in or third-party) may use of the
kernel is importable from here, and a plugin imports nothing else of it (a test holds every
plugin in this repository to that). Names are stable within a PLUGIN_API_VERSION major; a plugin
says which versions it supports with `CORTEX_API = ">=1,<2"` in its plugin module.

    from cortex.kernel import hookimpl, Decision, Health, check_settings

Hooks and their contract: `hookspecs` (`cortex.kernel.hookspecs`, also documented in
docs/plugins/hooks.md). Bridges, CLI helpers and the embedded kernel load on first use.
"""

from typing import Any

from .call import Call, Decision, Outcome, ProviderInfo, RouterError, Unavailable
from .context import KernelChannel, PluginContext, check_settings
from .credentials import LOCAL, AuthError, Identity
from .doctor_check import FAIL, OK, WARN, DoctorCheck, listener_check, port_check
from .hookspecs import hookimpl, hookspec
from .registry import Health, MethodInfo, Registrar

# The plugin API's version: a plugin's CORTEX_API specifier is checked against it before its
# hooks are registered (an incompatible plugin is reported broken, never half-loaded).
# 1.1: LazyApp; 1.2: log_tap; 1.3: context.origin and context.namespace; 1.4: postgres_dsn; 1.5: cortex_web_pages;
# 1.6: AsgiServer's Host/Origin guard (HostGuard, allowed_hosts), read_json, BadJson, JsonBodies;
#      delegation (a call made while serving a caller runs as that caller), channel.for_own_work(),
#      channel.admit(), context.sees_every_namespace, context.namespace_of(principal)
PLUGIN_API_VERSION = "1.6"

# Loaded on first use (they pull in uvicorn, click, the runtime...): name -> module.
_LAZY = {
    # bridges: the contracts as JSON, called as a client
    "KernelGateway": "bridge", "GrpcGateway": "bridge", "bridge_caller": "bridge", "rpc_status": "bridge",
    "parse_json": "bridge", "to_json": "bridge", "describe": "bridge",
    # a plugin's own HTTP listener, under the kernel's listener rule and credentials
    "AsgiServer": "asgi", "LazyApp": "asgi", "split_listen": "asgi", "IDENTITY": "asgi", "headers_of": "asgi",
    "identify_request": "asgi", "is_loopback_host": "remote", "HostGuard": "asgi",
    # request bodies as JSON: a 400 with a sentence for anything the parser refuses
    "read_json": "asgi", "BadJson": "asgi", "JsonBodies": "asgi",
    "SchemaBuilder": "json_schema", "standalone": "json_schema",
    # command-line helpers for `cortex_register_commands`
    "config_option": "cli", "target_option": "cli", "json_option": "cli", "load_config_or_fail": "cli",
    "kernel_client": "cli", "print_json": "cli", "print_table": "cli", "to_dict": "cli",
    "client_dial": "dial", "configure_logging": "logs", "log_tap": "logs",
    # a PostgreSQL database shared with other kernels: its DSN from config, under the listener rule
    "postgres_dsn": "databases", "check_postgres_dsn": "databases", "PostgresPool": "databases",
    "DatabaseUnavailable": "databases",
    # the kernel itself, for a plugin that embeds one (`cortex mcp` on stdio), and its version
    "Kernel": "runtime", "cortex_version": "runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cortex.kernel' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FAIL",
    "LOCAL",
    "OK",
    "PLUGIN_API_VERSION",
    "WARN",
    "AuthError",
    "Call",
    "Decision",
    "DoctorCheck",
    "Health",
    "Identity",
    "KernelChannel",
    "MethodInfo",
    "Outcome",
    "PluginContext",
    "ProviderInfo",
    "Registrar",
    "RouterError",
    "Unavailable",
    "check_settings",
    "hookimpl",
    "hookspec",
    "listener_check",
    "port_check",
    *sorted(_LAZY),
]
