"""Cortex-OS kernel: the core (config, plugin host and hookspecs, contract registry, policy router
and its admission, gRPC server, runtime), its security ring (`cortex.kernel.security`) and the SDK
plugins build with (`cortex.kernel.sdk`). docs/ARCHITECTURE.md draws the rings.

This module is the plugin API's core: the names a plugin (built-in or third-party) needs to be a
plugin at all. With `cortex.kernel.sdk` (bridges, HTTP listeners, databases, CLI helpers, model
helpers, testing fixtures) it is everything a plugin may use of the kernel, and a plugin imports
nothing else of it (a test holds every plugin in this repository to that). Names are stable within
a PLUGIN_API_VERSION major; a plugin says which versions it supports with `CORTEX_API = ">=1,<2"`.

    from cortex.kernel import hookimpl, Decision, Health, check_settings
    from cortex.kernel.sdk import AsgiServer, kernel_client

Hooks and their contract: `hookspecs` (`cortex.kernel.hookspecs`, also documented in
docs/plugins/hooks.md).
"""

import warnings
from typing import Any

from . import hookspecs
from .call import APPROVAL_HEADER, PROVIDER_HEADER, Call, Decision, Outcome, ProviderInfo, RouterError, Unavailable
from .context import KernelChannel, PluginContext, check_settings
from .doctor_check import FAIL, OK, WARN, DoctorCheck, listener_check, port_check
from .hookspecs import hookimpl, hookspec
from .method import MethodInfo
from .registry import Health, Registrar
from .security.capabilities import CredentialCheck, EventSink, ListenerRule, PluginDirectory, Stopping, WebPages
from .security.credentials import LOCAL, AuthError, Identity

# The plugin API's version: a plugin's CORTEX_API specifier is checked against it before its
# hooks are registered (an incompatible plugin is reported broken, never half-loaded).
# 1.1: LazyApp; 1.2: log_tap; 1.3: context.origin and context.namespace; 1.4: postgres_dsn; 1.5: cortex_web_pages;
# 1.6: AsgiServer's Host/Origin guard (HostGuard, allowed_hosts), read_json, BadJson, JsonBodies;
#      delegation (a call made while serving a caller runs as that caller), channel.for_own_work(),
#      channel.admit(), context.sees_every_namespace, context.namespace_of(principal)
# 1.7: cortex.kernel.sdk, imported explicitly and typed; the names below moved there and stay
#      importable from here, deprecated (removed in API 2); cortex.kernel.hookspecs; registry.add(rank=);
#      the context's privileged objects typed (PluginDirectory, EventSink, ...) and given only where the
#      manifest asks ("PLUGIN.CAPABILITY" in the group cortex.capabilities)
PLUGIN_API_VERSION = "1.7"

# API 1 exported these from cortex.kernel (loaded on first use); they live in cortex.kernel.sdk now.
# An outside plugin written for API 1 keeps loading; it is told, once per name, where they went.
MOVED_TO_SDK = frozenset({
    "KernelGateway", "GrpcGateway", "bridge_caller", "rpc_status", "parse_json", "to_json", "describe",
    "AsgiServer", "LazyApp", "split_listen", "IDENTITY", "headers_of", "identify_request", "is_loopback_host",
    "HostGuard", "read_json", "BadJson", "JsonBodies", "SchemaBuilder", "standalone",
    "config_option", "target_option", "json_option", "load_config_or_fail", "kernel_client", "print_json",
    "print_table", "to_dict", "client_dial", "configure_logging", "log_tap",
    "postgres_dsn", "check_postgres_dsn", "PostgresPool", "DatabaseUnavailable", "Kernel", "cortex_version",
})


def __getattr__(name: str) -> Any:
    if name not in MOVED_TO_SDK:
        raise AttributeError(f"module 'cortex.kernel' has no attribute {name!r}")
    from importlib import import_module

    warnings.warn(
        f"cortex.kernel.{name} moved to cortex.kernel.sdk (plugin API 1.7): import it from there; "
        "cortex.kernel keeps it until plugin API 2", DeprecationWarning, stacklevel=2,
    )
    value = getattr(import_module(f"{__name__}.sdk"), name)
    globals()[name] = value
    return value


__all__ = [
    "APPROVAL_HEADER", "FAIL", "LOCAL", "OK", "PLUGIN_API_VERSION", "PROVIDER_HEADER", "WARN", "AuthError", "Call",
    "CredentialCheck", "Decision", "DoctorCheck", "EventSink", "Health", "Identity", "KernelChannel", "ListenerRule", "MethodInfo",
    "Outcome", "PluginContext", "PluginDirectory", "ProviderInfo", "Registrar", "RouterError", "Stopping",
    "Unavailable", "WebPages", "check_settings", "hookimpl", "hookspec", "hookspecs", "listener_check",
    "port_check"
]
