"""What a plugin gets from the kernel: its settings, its folder, and a channel to other contracts.

    @hookimpl
    async def cortex_start(context):
        memories = MemoryServiceStub(context.channel)      # the generated grpc.aio stub
        reply = await memories.Search(SearchRequest(query="..."), timeout=2)

The channel is in-process: the call is routed (authorized, observed, failed over) by the same
router as a call from outside, but without a network hop or serialization. Who the call is
(delegation, as OAuth token exchange's subject and actor, RFC 8693):

- made while the plugin serves a caller (inside a servicer method): it runs **as that caller**,
  its principal, namespace and key scopes, with the plugin as actor. It may do at most what the
  caller could do directly and what the plugin's manifest allows (`cortex.calls`);
- made on the plugin's own account (at start, from a timer, or through `channel.for_own_work()`
  for work such as embedding the text it stores): the plugin is the principal, bounded by its
  manifest; data it touches while serving someone is still that caller's namespace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import grpc
import structlog
from google.protobuf.descriptor import Descriptor

from .call import CURRENT_CALL, PRINCIPAL_HEADER, Call, Decision, Outcome, RouterError, asks_local_only, new_call_id
from .method import MethodInfo
from .registry import ContractRegistry
from .security.capabilities import CredentialCheck, EventSink, ListenerRule, PluginDirectory, Stopping, WebPages
from .security.credentials import OWNER_NAMESPACE, AuthError, Identity, namespace_of
from .security.labels import holds, request_labels, returned, streamed


class Router(Protocol):
    """What a channel needs of the policy router (kernel/router.py), named here so that the
    channel and the router do not import each other."""

    registry: ContractRegistry
    owners: tuple[str, ...]

    async def unary(self, method: MethodInfo, request: Any, call: Call) -> Any: ...
    async def unary_with_outcome(self, method: MethodInfo, request: Any, call: Call) -> tuple[Any, Outcome]: ...
    def stream(self, method: MethodInfo, request: Any, call: Call) -> AsyncIterator[Any]: ...
    async def admit(self, method: MethodInfo, request: Any, call: Call) -> Decision: ...


class _Multicallable:
    def __init__(self, channel: KernelChannel, path: str):
        self._channel, self._path = channel, path

    def _call(self, request: Any, timeout: float | None, metadata: Any) -> tuple[Any, Call, Call | None]:
        method = self._channel.router.registry.method(self._path)
        if method is None:
            raise RouterError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{self._path} is not served by this kernel; `cortex contracts list` shows what is",
            )
        channel = self._channel
        serving = CURRENT_CALL.get()
        principal, actor, scopes, origin = channel.principal, channel.actor, channel.scopes, channel.principal
        if serving is not None and channel.principal.startswith("plugin:"):
            if channel.own_work:  # the plugin's own work for the caller: judged as the plugin, on the caller's data
                origin = serving.origin
            else:  # delegation: the call runs as the caller it serves, the plugin as its actor
                principal, scopes, origin = serving.principal, serving.scopes, serving.origin
                actor = ", ".join((*serving.actors, channel.principal))  # whoever acted before stays named
        meta = (*tuple(metadata or ()), (PRINCIPAL_HEADER, principal))
        local_only, labels = False, request_labels(request, meta)
        if serving is not None:  # what the caller said of its data, and the data it holds, go with every call made for it
            labels |= serving.labels
            local_only = serving.local_only or asks_local_only(serving.request)
        if channel.via:
            meta += ((VIA_HEADER, channel.via),)
        call = Call(
            id=new_call_id(),
            parent_id=serving.id if serving is not None else "",
            method=method,
            request=request,
            principal=principal,
            metadata=meta,
            deadline=None if timeout is None else time.monotonic() + timeout,
            actor=actor,
            scopes=scopes,
            origin=origin,
            local_only=local_only,
            labels=labels,
        )
        return method, call, serving


class _UnaryUnary(_Multicallable):
    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_ignored: Any) -> Awaitable[Any]:
        method, call, serving = self._call(request, timeout, metadata)
        return returned(serving, call, self._channel.router.unary(method, request, call))


class _UnaryStream(_Multicallable):
    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_ignored: Any) -> AsyncIterator[Any]:
        method, call, serving = self._call(request, timeout, metadata)
        return streamed(serving, call, self._channel.router.stream(method, request, call))


VIA_HEADER = "x-cortex-via"
log = structlog.get_logger("cortex.channel")


class KernelChannel:
    """A grpc.aio.Channel look-alike for generated stubs, backed by the kernel's router."""

    def __init__(
        self, router: Router, principal: str, via: str = "", actor: str = "", scopes: tuple[str, ...] | None = None,
        explain: Callable[[str], str] | None = None, own_work: bool = False, credentials: CredentialCheck | None = None,
    ):
        self.router, self.principal, self.via = router, principal, via
        self.actor, self.scopes = actor, scopes
        self.own_work = own_work
        self.credentials = credentials  # the kernel's: to act for a key by name with its scopes
        self._explain = explain
        self._publishing: set[asyncio.Task[None]] = set()

    def explain(self, path: str) -> str:
        """Why "/pkg.Service/Method" is not served here (a disabled or broken plugin, a typo), in
        the words gRPC callers get with UNIMPLEMENTED."""
        return self._explain(path) if self._explain else f"{path} is not served by this kernel"

    def acting_for(self, who: str | Identity) -> KernelChannel:
        """A channel whose calls carry a bridge's client as principal, so policy judges the client:
        an Identity from `context.credentials.identify(...)` (local, admin, key:NAME with its
        scopes), or a name the bridge gives a client of the owner's ("mcp:editor"). The bridging
        plugin is an actor (after the identity's own, a gateway) and is recorded in the x-cortex-via
        header. No plugin may pose as another plugin or the kernel, nor name a key or a gateway's
        user without the Identity that carries its limits."""
        identity = who if isinstance(who, Identity) else self._named(who)
        principal = identity.principal
        if not principal or principal.startswith(("plugin:", "kernel")) or len(principal) > 200:
            raise ValueError(f"a bridge may not act as {principal!r}")
        actor = ", ".join(a for a in (identity.actor, self.principal) if a)  # the plugin always named
        return KernelChannel(self.router, principal, self.principal, actor, identity.scopes, self._explain,
                             credentials=self.credentials)

    def _named(self, principal: str) -> Identity:
        """The identity a plugin may act as by name: a key's as its credential has it now (its
        scopes: a name alone would carry none of them), or one of the owner's identities (admin,
        a stdio bridge's "mcp:editor"). A gateway's user by name alone is refused: which gateway
        spoke for it, with what scopes, the name does not say."""
        if principal.startswith("key:") and self.credentials is not None:
            try:
                return self.credentials.key_identity(principal)
            except AuthError as exc:
                raise ValueError(exc.message) from None
        if namespace_of(principal, self.router.owners) != OWNER_NAMESPACE:
            raise ValueError(f"a plugin may act for {principal!r} only with the Identity its credential gave "
                             "(context.credentials.identify), never by name")
        return Identity(principal, "plugin")

    def for_own_work(self) -> KernelChannel:
        """A channel for the plugin's own work while it serves a caller: embedding the text it
        stores, publishing what it did. Its calls are judged as the plugin (its manifest) and
        touch the caller's namespace, but are not bounded by the caller's key scopes. Never use
        it for a call the caller's request chooses (a plan step, a tool the caller names): those
        go through `channel`, where they run as the caller (docs/ARCHITECTURE.md, Delegation)."""
        if not self.principal.startswith("plugin:"):
            raise ValueError("only a plugin's own channel has work of its own")
        return KernelChannel(self.router, self.principal, self.via, self.actor, self.scopes, self._explain, True,
                             self.credentials)

    def methods(self) -> list[MethodInfo]:
        """Every served contract method (MethodInfo: path, message classes, streaming)."""
        return self.router.registry.served_methods()

    async def call(self, path: str, request: Any, *, timeout: float | None = None, metadata: Any = None) -> tuple[Any, Outcome]:
        """Call any unary method by path, returning (response, outcome): who served it, the
        route, the decision. Raises RouterError (a grpc.RpcError) with the outcome attached."""
        method, call, serving = _Multicallable(self, path)._call(request, timeout, metadata)
        if method.server_streaming or method.client_streaming:
            raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"{path} streams; only unary methods can be called this way")
        response, outcome = await self.router.unary_with_outcome(method, request, call)
        return holds(serving, call, response), outcome

    async def admit(self, path: str, request: Any, *, metadata: Any = None) -> Decision:
        """Judge a call of `path` with `request` as this channel would make it (the caller's
        rights, when a plugin serves one) without making it: a side door such as an import,
        admitting each part as the direct call would be. Returns the Decision; raises RouterError
        (PERMISSION_DENIED, ...) when refused."""
        method, call, _ = _Multicallable(self, path)._call(request, None, metadata)
        return await self.router.admit(method, request, call)

    def method(self, path: str) -> MethodInfo | None:
        """The registered method at `path` (its message classes, failover safety), or None."""
        return self.router.registry.method(path)

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **_kw: Any) -> _UnaryUnary:
        return _UnaryUnary(self, method)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **_kw: Any) -> _UnaryStream:
        return _UnaryStream(self, method)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("client-streaming calls between plugins are not supported")

    stream_stream = stream_unary

    def publish(self, event: Any, timeout: float = 10.0) -> None:
        """Publish an event (a message, such as the events contract's Event) as this channel's
        principal, without waiting for it, through its own contract's `Publish` (`publishing_route`):
        when that is served, in the background; a failure is logged, never raised (what the event
        reports has happened either way)."""
        route = publishing_route(event.DESCRIPTOR) if hasattr(event, "DESCRIPTOR") else None
        method = self.method(route[0]) if route else None
        if route is None or method is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a direct call outside the kernel): nothing to publish through
            return
        task = loop.create_task(self._publish(method.path, method.input(**{route[1]: event}), event, timeout))
        self._publishing.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, path: str, request: Any, event: Any, timeout: float) -> None:
        channel = self.for_own_work() if self.principal.startswith("plugin:") else self
        try:
            await channel.unary_unary(path)(request, timeout=timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            log.warning("event.not_published", principal=self.principal, type=getattr(event, "type", "?"),
                        code=code.name if code else "?", details=details)

    async def close(self) -> None:
        pass


def publishing_route(event: Descriptor) -> tuple[str, str] | None:
    """Where an event is published: the unary `Publish` method of the contract that defines the
    event's type, whose request is that event alone, and the field that carries it (only a method
    named so: a contract's other methods taking one message, such as AddSource, are never it). The
    contract says so; the kernel names none (a plugin's own event type is published alike)."""
    for service in event.file.services_by_name.values():
        m = service.methods_by_name.get("Publish")
        fields = m.input_type.fields if m is not None and not (m.client_streaming or m.server_streaming) else []
        if len(fields) == 1 and fields[0].message_type is not None and fields[0].message_type.full_name == event.full_name:
            return f"/{service.full_name}/Publish", fields[0].name
    return None


@dataclass
class PluginContext:
    """Handed to a plugin's configure, start and stop hooks. Its capabilities (`plugins` and the
    fields after `log`) are the kernel's privileged objects, each typed by what a plugin may do with
    it (kernel/security/capabilities.py), given only where the plugin's manifest asks for it
    ("PLUGIN.CAPABILITY" in the group cortex.capabilities); elsewhere an Undeclared: falsy, and
    saying when used what to declare."""

    name: str
    config: dict[str, Any]
    data_dir: Path  # the kernel's data dir; keep your files under `plugin_dir`
    privacy_mode: bool
    channel: KernelChannel
    plugins: PluginDirectory | None = None  # every plugin's record, for those that judge plugins (governance)
    log: Any = field(default=None)
    deliver_event: EventSink | None = None  # for the plugin that runs the event bus
    stopping: Stopping | None = None  # endless streams end on it instead of holding the shutdown
    credentials: CredentialCheck | None = None  # bridges identify their clients with it
    exposure: ListenerRule | None = None  # a plugin's own listener is checked and served with it
    web_pages: WebPages | None = None  # the plugins' pages, for the plugin that serves them (http)

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
