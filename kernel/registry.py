"""The contract registry: which providers serve which gRPC service, known from its descriptor.

A contract is a protobuf service. Plugins add providers for it in their `cortex_register` hook
(in-process servicers); the config adds remote ones (a gRPC endpoint). Several providers may serve
one service; the router picks among them per call.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from .call import Call
from .circuit import CircuitBreaker, CircuitState
from .method import MethodInfo as MethodInfo  # re-exported: the router and the server import it from here


@dataclass
class ServiceInfo:
    full_name: str
    version: str  # from the package: "cortex.kernel.v1" -> "v1"
    methods: dict[str, MethodInfo]
    descriptor: ServiceDescriptor

    @classmethod
    def from_descriptor(cls, desc: ServiceDescriptor) -> ServiceInfo:
        package = desc.file.package
        match = re.search(r"(?:^|\.)(v\d+(?:(?:alpha|beta)\d*)?)$", package)
        return cls(
            full_name=desc.full_name,
            version=match.group(1) if match else "",
            methods={m.name: MethodInfo.from_descriptor(m) for m in desc.methods},
            descriptor=desc,
        )


def resolve_service(service: ServiceDescriptor | str) -> ServiceDescriptor:
    """A service descriptor from itself or its full name (looked up among imported contracts)."""
    if isinstance(service, ServiceDescriptor):
        return service
    try:
        return descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        pass
    _import_builtin_contracts(service)  # a node serving memories to this kernel, which runs none itself
    try:
        return descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        raise ValueError(
            f"unknown contract service '{service}': no imported .proto defines it "
            "(import its generated _pb2 module, or install the plugin that ships it)"
        ) from None


def _import_builtin_contracts(service: str) -> None:
    """Import the generated modules of Cortex-OS's own package `cortex.<area>.v1` named by `service`
    (they ship with the kernel, whether or not the plugin that serves them is enabled here)."""
    import importlib
    import pkgutil

    parts = service.split(".")
    if len(parts) < 4 or parts[0] != "cortex" or not all(p.isidentifier() for p in parts[1:3]):
        return
    try:
        package = importlib.import_module(f"cortex.contracts.{parts[1]}.{parts[2]}")
    except ImportError:
        return
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"{package.__name__}.{module.name}")


@dataclass
class Health:
    """A provider's health as its plugin (or a remote probe) reports it."""

    serving: bool
    detail: str = ""


UNKNOWN_HEALTH = Health(True, "not probed yet")


@dataclass(eq=False)
class Provider:
    """A provider of one service. Subclasses say how a call reaches it."""

    name: str
    plugin: str
    service: ServiceInfo
    breaker: CircuitBreaker
    local: bool = True
    endpoint: str = ""
    timeout: float | None = None  # per attempt, seconds
    health: Health = field(default_factory=lambda: UNKNOWN_HEALTH)
    calls: int = 0
    failures: int = 0
    last_error: str = ""
    latency_ewma: float | None = None  # seconds, successful calls only
    in_flight: int = 0  # attempts at it not yet settled (a plugin disabled live waits for them)
    rank: float = float("inf")  # its plugin's default place among the service's providers: lower first

    async def unary(
        self, method: MethodInfo, request: Any, call: Call, context: Any, timeout: float | None = None
    ) -> Message:
        raise NotImplementedError

    def stream(
        self, method: MethodInfo, request: Any, call: Call, context: Any, timeout: float | None = None
    ) -> AsyncGenerator[Message, None]:
        raise NotImplementedError

    async def probe(self) -> Health | None:
        """A remote provider's own health probe; None where the plugin's hook reports health."""
        return None

    def refuses(self, call: Call, owners: tuple[str, ...]) -> str:
        """Why this provider cannot serve `call` as whom it serves ('' when it can): a remote
        provider cannot act there for someone this kernel's credentials made."""
        return ""

    async def close(self) -> None:
        pass

    @property
    def circuit(self) -> CircuitState:
        return self.breaker.state


def _not_implemented(fn: Any) -> bool:
    # Generated XServicer base classes answer UNIMPLEMENTED; a servicer must override each method.
    func = getattr(fn, "__func__", fn)
    return getattr(func, "__module__", "").endswith("_pb2_grpc")


@dataclass(eq=False)
class InProcessProvider(Provider):
    """A servicer object in this process, called directly: no serialization, no network."""

    servicer: Any = None

    def __post_init__(self) -> None:
        missing = [
            m for m in self.service.methods if not callable(getattr(self.servicer, m, None))
            or _not_implemented(getattr(self.servicer, m))
        ]
        if missing:
            raise ValueError(
                f"{type(self.servicer).__name__} does not implement {self.service.full_name} "
                f"method(s) {', '.join(missing)}; a provider must implement every method of its contract"
            )
        self._sync = {m: not _is_async(getattr(self.servicer, m)) for m in self.service.methods}

    async def unary(self, method: MethodInfo, request: Any, call: Call, context: Any, timeout: float | None = None) -> Message:
        fn = getattr(self.servicer, method.name)
        if self._sync[method.name]:
            return await asyncio.to_thread(fn, request, context)
        return cast(Message, await fn(request, context))  # the servicer's reply, by its contract

    async def stream(self, method: MethodInfo, request: Any, call: Call, context: Any,
                     timeout: float | None = None) -> AsyncGenerator[Message, None]:
        result = getattr(self.servicer, method.name)(request, context)
        if hasattr(result, "__aiter__"):
            async for message in result:
                yield message
        else:
            if inspect.isawaitable(result):
                result = await result
            for message in result or ():
                yield message


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


class ContractRegistry:
    """Services by full name, each with its providers in registration order."""

    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 30.0):
        self.services: dict[str, ServiceInfo] = {}
        self.providers: dict[str, list[Provider]] = {}
        self._methods: dict[str, MethodInfo] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._breaker_args = (failure_threshold, reset_timeout)
        self.listeners: list[Any] = []  # called with (provider_name, CircuitState) on a change
        # moves whenever what is served changes (a provider added, a plugin withdrawn): what is
        # derived from the served methods is rebuilt only then
        self.generation = 0
        self._served_methods: tuple[int, list[MethodInfo]] = (-1, [])

    def breaker(self, provider_name: str) -> CircuitBreaker:
        """One breaker per provider name, shared by every service that provider serves."""
        if provider_name not in self._breakers:
            threshold, reset = self._breaker_args
            self._breakers[provider_name] = CircuitBreaker(
                threshold, reset, on_change=lambda state: self._circuit_changed(provider_name, state)
            )
        return self._breakers[provider_name]

    def _circuit_changed(self, provider_name: str, state: CircuitState) -> None:
        for listener in self.listeners:
            listener(provider_name, state)

    def service(self, service: ServiceDescriptor | str) -> ServiceInfo:
        desc = resolve_service(service)
        info = self.services.get(desc.full_name)
        if info is None:
            info = self.services[desc.full_name] = ServiceInfo.from_descriptor(desc)
            self.providers[desc.full_name] = []
            for method in info.methods.values():
                self._methods[method.path] = method
        return info

    def add(self, provider: Provider) -> Provider:
        existing = self.providers[provider.service.full_name]
        if any(p.name == provider.name for p in existing):
            raise ValueError(
                f"provider '{provider.name}' already serves {provider.service.full_name}; "
                "give the second one another name"
            )
        existing.append(provider)
        self.generation += 1
        return provider

    def add_servicer(
        self,
        service: ServiceDescriptor | str,
        servicer: Any,
        *,
        plugin: str,
        name: str | None = None,
        local: bool = True,
        timeout: float | None = None,
        rank: float = float("inf"),
    ) -> Provider:
        if math.isnan(rank):  # a NaN compares false with everything: it would scramble the others' order
            raise ValueError(f"provider {name or plugin!r}: rank must be a number (lower first), not NaN")
        info = self.service(service)
        provider_name = name or plugin
        return self.add(InProcessProvider(name=provider_name, plugin=plugin, service=info, breaker=self.breaker(provider_name),
                                          local=local, timeout=timeout, rank=rank, servicer=servicer))

    def remove_plugin(self, plugin: str) -> list[Provider]:
        removed = []
        for service, providers in self.providers.items():
            removed += [p for p in providers if p.plugin == plugin]
            self.providers[service] = [p for p in providers if p.plugin != plugin]
        self.generation += 1
        return removed

    def method(self, path: str) -> MethodInfo | None:
        return self._methods.get(path)

    def served(self) -> list[ServiceInfo]:
        """Services with at least one provider, sorted by name."""
        return [self.services[s] for s in sorted(self.services) if self.providers[s]]

    def served_methods(self) -> list[MethodInfo]:
        """Every method of the served services; the same list object until what is served changes."""
        if self._served_methods[0] != self.generation:
            self._served_methods = (self.generation, [m for s in self.served() for m in s.methods.values()])
        return self._served_methods[1]

    def all_providers(self) -> Iterable[Provider]:
        for providers in self.providers.values():
            yield from providers

    def plugins_of(self, service: str) -> list[str]:
        return [p.plugin for p in self.providers.get(service, [])]

    def ordered(self, service: str, preferred: list[str]) -> list[Provider]:
        """Providers in routing order: the configured order, then the ranks their plugins declared,
        then registration order; within that, healthy providers before unhealthy ones (stable)."""
        providers = self.providers.get(service, [])
        rank = {name: i for i, name in enumerate(preferred)}
        by_config = sorted(providers, key=lambda p: (rank.get(p.name, len(rank)), p.rank))
        return sorted(by_config, key=lambda p: not p.health.serving)


class Registrar:
    """What a plugin's `cortex_register(registry)` hook receives: the registry, bound to it."""

    def __init__(self, registry: ContractRegistry, plugin: str, timeouts: Mapping[str, float | None]):
        self._registry, self.plugin = registry, plugin
        self._timeouts = timeouts  # [providers.NAME] timeout_seconds, by provider name
        self.added: list[Provider] = []

    def add(
        self,
        service: ServiceDescriptor | str,
        servicer: Any,
        *,
        name: str | None = None,
        local: bool = True,
        rank: float = float("inf"),
    ) -> Provider:
        """Serve `service` (a descriptor, or a full name such as "pkg.v1.EchoService") with
        `servicer`, an object with one method per RPC, as for grpc.aio. `name` defaults to the
        plugin's name; `local` says whether calls stay on this machine; `rank`, the provider's
        default place among the service's providers (lower first, after the config's routing order)."""
        provider = self._registry.add_servicer(service, servicer, plugin=self.plugin, name=name, local=local,
                                               timeout=self._timeouts.get(name or self.plugin), rank=rank)
        self.added.append(provider)
        return provider


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The (code, details) of a gRPC-shaped exception, or None."""
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            value = code()
        except Exception:  # noqa: BLE001 - an RpcError without a status (rare, channel-level)
            return None
        if isinstance(value, grpc.StatusCode):
            details = details_of() if callable(details_of := getattr(exc, "details", None)) else str(exc)
            return value, details or ""
    return None
