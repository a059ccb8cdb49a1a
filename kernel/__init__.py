"""Cortex-OS kernel: contract registry, policy router, plugin host, gRPC server and CLI.

What a plugin needs is importable from here:

    from cortex.kernel import hookimpl, Decision, Health
"""

from .call import Call, Decision, Outcome, ProviderInfo, RouterError, Unavailable
from .context import PluginContext, check_settings
from .hookspecs import hookimpl, hookspec
from .registry import Health, Registrar

__all__ = [
    "Call",
    "Decision",
    "Health",
    "Outcome",
    "PluginContext",
    "ProviderInfo",
    "Registrar",
    "RouterError",
    "Unavailable",
    "check_settings",
    "hookimpl",
    "hookspec",
]
