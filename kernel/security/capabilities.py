"""The kernel's privileged objects a plugin may be given beside its channel, each typed by what the
plugin may do with it, and given only where the plugin's manifest asks for it (by its field name):

    [project.entry-points."cortex.capabilities"]      # "PLUGIN.CAPABILITY", as in cortex.calls
    "bridge.credentials" = "cortex_bridge.plugin"

A plugin whose manifest does not ask for one finds an `Undeclared` there: falsy, and any use of it
raises PermissionError naming the entry point to add (but for the two plugin API 1 documented for a
plugin's own listener, `credentials` and `exposure`: given, with a warning naming the entry point)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from typing import Any, Protocol

import structlog

from .credentials import Identity

GROUP = "cortex.capabilities"
log = structlog.get_logger("cortex.plugins")


class PluginDirectory(Protocol):
    """`plugins`: every discovered plugin's record (name, state, contracts, the calls its manifest declares), read-only."""

    def get(self, name: str, /) -> Any: ...
    def values(self) -> Iterable[Any]: ...


class EventSink(Protocol):
    """`deliver_event`: hands a published event to every plugin's cortex_event hook (the bus's plugin)."""

    async def __call__(self, event: Any) -> None: ...


class Stopping(Protocol):
    """`stopping`: set when the kernel begins to stop, before its server drains; endless streams end on it."""

    def is_set(self) -> bool: ...
    async def wait(self) -> bool: ...


class CredentialCheck(Protocol):
    """`credentials`: who a bridge's client is, as for gRPC callers (local, admin, key:NAME); names kept from gateways."""

    def identify(self, authorization: str, loopback: bool, certificate_name: str = "", claimed: str = "") -> Identity: ...
    def key_identity(self, principal: str) -> Identity: ...
    def reserve(self, names: Iterable[str]) -> None: ...


class ListenerRule(Protocol):
    """`exposure`: the kernel's listener rule, `check(listen, setting)`, and its TLS (AsgiServer serves it)."""

    @property
    def tls(self) -> bool: ...
    @property
    def require_credentials(self) -> bool: ...
    def check(self, listen: str, setting: str) -> None: ...
    def uvicorn_settings(self) -> dict[str, str]: ...


class WebPages(Protocol):
    """`web_pages`: every loaded plugin's pages (`cortex_web_pages`), prefix -> ASGI app, asked per request."""

    def __call__(self) -> dict[str, Any]: ...


class Undeclared:
    """A capability the plugin's manifest does not ask for: falsy, and using it says what to declare."""

    def __init__(self, plugin: str, name: str) -> None:
        self.name = name
        self.why = (f"plugin '{plugin}' has no '{name}' capability: add \"{plugin}.{name}\" = \"<its plugin module>\" "
                    f'to [project.entry-points."{GROUP}"] in its pyproject.toml and reinstall it')

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Undeclared({self.name!r})"

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise PermissionError(self.why)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(self.why)


# Plugin API 1.0-1.6 documented these two for a plugin's own listener, with no manifest: a plugin written
# for them keeps working, told to declare them (required from plugin API 2, as CORTEX_API is).
GIVEN_TO_API_1 = frozenset({"credentials", "exposure"})


def grant(plugin: str, distribution: str, offered: dict[str, Any], outside: bool = False) -> dict[str, Any]:
    """`offered` (capability -> the kernel's object) as `plugin` gets it: what the manifest of its own
    distribution asks for (no other package can grant it anything), the rest Undeclared; to a plugin
    from `outside` Cortex-OS's own distribution, also GIVEN_TO_API_1."""
    try:
        entries = metadata.distribution(distribution).entry_points.select(group=GROUP) if distribution else ()
    except metadata.PackageNotFoundError:
        entries = ()
    asked = {ep.name.partition(".")[2] for ep in entries if ep.name.partition(".")[0] == plugin}
    return {name: obj if name in asked else _undeclared(plugin, name, obj, outside) for name, obj in offered.items()}


def _undeclared(plugin: str, name: str, obj: Any, outside: bool) -> Any:
    if outside and name in GIVEN_TO_API_1:
        return _Api1Grant(obj, Undeclared(plugin, name).why)
    return Undeclared(plugin, name)


class _Api1Grant:
    """One of GIVEN_TO_API_1, undeclared: the kernel's object, which says once, when first used, what to declare."""

    def __init__(self, obj: Any, why: str) -> None:
        self._obj, self._why = obj, why

    def __getattr__(self, attr: str) -> Any:
        if self._why:
            log.warning("plugin.capability_undeclared", hint=self._why.replace(" and reinstall it", "; from plugin API 2 "
                        "an undeclared capability is not given"))
            self._why = ""
        return getattr(self._obj, attr)
