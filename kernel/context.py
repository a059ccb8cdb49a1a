"""What a plugin gets from the kernel: its settings, its folder, and a channel to other contracts.

    @hookimpl
    async def cortex_start(context):
        memories = MemoryServiceStub(context.channel)      # the generated grpc.aio stub
        reply = await memories.Search(SearchRequest(query="..."), timeout=2)

The channel is in-process: the call is routed (authorized, observed, failed over) by the same
router as a call from outside, with the plugin as principal, but without a network hop or
serialization.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from .call import CURRENT_CALL, PRINCIPAL_HEADER, Call, RouterError, new_call_id
from .credentials import Identity

if TYPE_CHECKING:
    from .router import Router


class _Multicallable:
    def __init__(self, channel: KernelChannel, path: str):
        self._channel, self._path = channel, path

    def _call(self, request: Any, timeout: float | None, metadata: Any) -> tuple[Any, Call]:
        method = self._channel.router.registry.method(self._path)
        if method is None:
            raise RouterError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{self._path} is not served by this kernel; `cortex contracts list` shows what is",
            )
        channel = self._channel
        meta = (*tuple(metadata or ()), (PRINCIPAL_HEADER, channel.principal))
        if channel.via:
            meta += ((VIA_HEADER, channel.via),)
        serving = CURRENT_CALL.get()
        # a plugin's own call made while serving someone's serves them; a bridge's client is its own
        serves = serving is not None and channel.principal.startswith("plugin:")
        call = Call(
            id=new_call_id(),
            parent_id=serving.id if serving is not None else "",
            method=method,
            request=request,
            principal=channel.principal,
            metadata=meta,
            deadline=None if timeout is None else time.monotonic() + timeout,
            actor=channel.actor,
            scopes=channel.scopes,
            origin=serving.origin if serves else channel.principal,
        )
        return method, call


class _UnaryUnary(_Multicallable):
    def __call__(self, request, *, timeout=None, metadata=None, **_ignored):
        method, call = self._call(request, timeout, metadata)
        return self._channel.router.unary(method, request, call)


class _UnaryStream(_Multicallable):
    def __call__(self, request, *, timeout=None, metadata=None, **_ignored):
        method, call = self._call(request, timeout, metadata)
        return self._channel.router.stream(method, request, call)


VIA_HEADER = "x-cortex-via"
PUBLISH = "/cortex.events.v1.EventService/Publish"
log = structlog.get_logger("cortex.channel")


class KernelChannel:
    """A grpc.aio.Channel look-alike for generated stubs, backed by the kernel's router."""

    def __init__(
        self, router: Router, principal: str, via: str = "", actor: str = "", scopes: tuple[str, ...] | None = None,
        explain: Any = None,
    ):
        self.router, self.principal, self.via = router, principal, via
        self.actor, self.scopes = actor, scopes
        self._explain = explain
        self._publishing: set[asyncio.Task] = set()

    def explain(self, path: str) -> str:
        """Why "/pkg.Service/Method" is not served here (a disabled or broken plugin, a typo), in
        the words gRPC callers get with UNIMPLEMENTED."""
        return self._explain(path) if self._explain else f"{path} is not served by this kernel"

    def acting_for(self, who: str | Identity) -> KernelChannel:
        """A channel whose calls carry a bridge's client as principal, so policy judges the client:
        an Identity from `context.credentials.identify(...)` (local, admin, key:NAME with its
        scopes), or a name the bridge gives its client ("mcp:editor"). The bridging plugin is
        the actor (unless the identity names its own) and is recorded in the x-cortex-via header.
        No plugin may pose as another plugin or the kernel."""
        identity = who if isinstance(who, Identity) else Identity(who, "plugin")
        principal = identity.principal
        if not principal or principal.startswith(("plugin:", "kernel")) or len(principal) > 200:
            raise ValueError(f"a bridge may not act as {principal!r}")
        return KernelChannel(self.router, principal, self.principal, identity.actor or self.principal, identity.scopes,
                             self._explain)

    def methods(self) -> list:
        """Every served contract method (MethodInfo: path, message classes, streaming)."""
        return self.router.registry.served_methods()

    async def call(self, path: str, request: Any, *, timeout: float | None = None, metadata=None):
        """Call any unary method by path, returning (response, outcome): who served it, the
        route, the decision. Raises RouterError (a grpc.RpcError) with the outcome attached."""
        method, call = _Multicallable(self, path)._call(request, timeout, metadata)
        if method.server_streaming or method.client_streaming:
            raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"{path} streams; only unary methods can be called this way")
        return await self.router.unary_with_outcome(method, request, call)

    def method(self, path: str):
        """The registered method at `path` (its message classes, failover safety), or None."""
        return self.router.registry.method(path)

    def unary_unary(self, method: str, request_serializer=None, response_deserializer=None, **_kw):
        return _UnaryUnary(self, method)

    def unary_stream(self, method: str, request_serializer=None, response_deserializer=None, **_kw):
        return _UnaryStream(self, method)

    def stream_unary(self, method: str, *args, **kwargs):
        raise NotImplementedError("client-streaming calls between plugins are not supported")

    stream_stream = stream_unary

    def publish(self, event: Any, timeout: float = 10.0) -> None:
        """Publish a `cortex.events.v1.Event` through EventService, as this channel's principal,
        without waiting for it: when the bus is served, in the background; a failure is logged,
        never raised (what the event reports has happened either way)."""
        if self.method(PUBLISH) is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a direct call outside the kernel): nothing to publish through
            return
        task = loop.create_task(self._publish(event, timeout))
        self._publishing.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, event: Any, timeout: float) -> None:
        from cortex.contracts.events.v1 import events_pb2

        try:
            await self.unary_unary(PUBLISH)(events_pb2.PublishRequest(event=event), timeout=timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            log.warning("event.not_published", principal=self.principal, type=event.type,
                        code=code.name if code else "?", details=details)

    async def close(self) -> None:
        pass


@dataclass
class PluginContext:
    """Handed to a plugin's configure, start and stop hooks."""

    name: str
    config: dict[str, Any]
    data_dir: Path  # the kernel's data dir; keep your files under `plugin_dir`
    privacy_mode: bool
    channel: KernelChannel
    # every discovered plugin's record (name, state, contracts it provides, calls its manifest
    # declares), for plugins that judge other plugins, such as governance; read-only
    plugins: dict[str, Any] = field(default_factory=dict)
    log: Any = field(default=None)
    # hands an event to every plugin's cortex_event hook; used by the plugin that runs the bus
    deliver_event: Any = field(default=None)
    # an asyncio.Event set when the kernel begins to stop, before the gRPC server drains: endless
    # streams (subscriptions) end on it instead of holding the shutdown for its whole grace period
    stopping: Any = field(default=None)
    # the kernel's authenticator (Credentials): bridges identify their clients with it, so that
    # HTTP, MCP and A2A callers have the same identities (local, admin, key:NAME) as gRPC callers
    credentials: Any = field(default=None)
    # the kernel's listener rule and TLS settings (Exposure): a plugin's own listener calls
    # `context.exposure.check(listen, setting)`; cortex.kernel.asgi.AsgiServer serves its TLS
    exposure: Any = field(default=None)
    # every loaded plugin's pages (`cortex_web_pages`), prefix -> ASGI app: the http plugin serves
    # them on its listener; called per request (plugins come and go while the kernel runs)
    web_pages: Any = field(default=None)

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = structlog.get_logger("cortex.plugin").bind(plugin=self.name)

    @property
    def plugin_dir(self) -> Path:
        folder = self.data_dir / "plugins" / self.name
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder


def check_settings(config: dict[str, Any], known: set[str], plugin: str) -> None:
    """Refuse settings a plugin does not know (a typo must not pass silently). Raise it from
    `cortex_configure`: the plugin is reported broken with this message."""
    unknown = set(config) - known
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(sorted(unknown))} in [plugins.{plugin}]; "
            + (f"known: {', '.join(sorted(known))}" if known else "this plugin takes no settings")
        )
