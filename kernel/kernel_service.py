"""`cortex.kernel.v1.KernelService`: the kernel describing itself. Served through the router like
any contract, so governance and audit see these calls too."""

from __future__ import annotations

import time
from typing import Protocol

import grpc

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

from .call import LocalContext
from .circuit import CircuitState
from .config import Config
from .plugin_host import BROKEN, DISABLED, LOADED, PluginHost, PluginRecord
from .registry import ContractRegistry
from .router import Router


class Kernel(Protocol):
    """What these services read and do of the running kernel (kernel/runtime.py), named here so
    that the runtime, which serves them, and they do not import each other."""

    version: str
    config: Config
    address: str
    started_at: float
    host: PluginHost
    registry: ContractRegistry
    router: Router

    async def enable_plugin(self, name: str) -> PluginRecord: ...
    async def disable_plugin(self, name: str) -> PluginRecord: ...
    async def install_plugin(self, spec: str, sha256: str) -> list[PluginRecord]: ...

_STATES = {
    LOADED: kernel_pb2.Plugin.STATE_LOADED,
    DISABLED: kernel_pb2.Plugin.STATE_DISABLED,
    BROKEN: kernel_pb2.Plugin.STATE_BROKEN,
}
_CIRCUITS = {
    CircuitState.CLOSED: kernel_pb2.Provider.CIRCUIT_CLOSED,
    CircuitState.OPEN: kernel_pb2.Provider.CIRCUIT_OPEN,
    CircuitState.HALF_OPEN: kernel_pb2.Provider.CIRCUIT_HALF_OPEN,
}

SERVICE = kernel_pb2.DESCRIPTOR.services_by_name["KernelService"]
PLUGIN_SERVICE = kernel_pb2.DESCRIPTOR.services_by_name["PluginService"]


def plugin_message(r: PluginRecord) -> kernel_pb2.Plugin:
    return kernel_pb2.Plugin(
        name=r.name, version=r.version, enabled=r.enabled, source=r.source, contracts=r.contracts,
        state=_STATES[r.state], error=r.error,
    )


class PluginServicer(kernel_pb2_grpc.PluginServiceServicer):
    """Live installs and toggles; the kernel does the work (Kernel.enable_plugin and friends)."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel

    async def _named(self, name: str, context: LocalContext) -> str:
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name the plugin (its entry-point name)")
        return name

    async def Enable(self, request: kernel_pb2.EnableRequest, context: LocalContext) -> kernel_pb2.EnableResponse:
        try:
            record = await self.kernel.enable_plugin(await self._named(request.name, context))
        except KeyError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no plugin {request.name!r} is installed; `cortex plugins list`")
        return kernel_pb2.EnableResponse(plugin=plugin_message(record))

    async def Disable(self, request: kernel_pb2.DisableRequest, context: LocalContext) -> kernel_pb2.DisableResponse:
        try:
            record = await self.kernel.disable_plugin(await self._named(request.name, context))
        except KeyError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no plugin {request.name!r} is installed; `cortex plugins list`")
        except ValueError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return kernel_pb2.DisableResponse(plugin=plugin_message(record))

    async def Install(self, request: kernel_pb2.InstallRequest, context: LocalContext) -> kernel_pb2.InstallResponse:
        if not request.spec.strip() or len(request.spec) > 1000 or request.spec.strip().startswith("-"):
            # (a spec starting with '-' would reach pip as an option: --index-url, -r FILE, ...)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "spec: a distribution name, a path or a wheel (1-1000 characters, not an option)")
        try:
            records = await self.kernel.install_plugin(request.spec.strip(), request.sha256.strip().lower())
        except ValueError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return kernel_pb2.InstallResponse(plugins=[plugin_message(r) for r in records])


class KernelServicer(kernel_pb2_grpc.KernelServiceServicer):
    def __init__(self, kernel: Kernel):
        self.kernel = kernel

    async def GetInfo(self, request: kernel_pb2.GetInfoRequest, context: LocalContext) -> kernel_pb2.GetInfoResponse:
        k = self.kernel
        return kernel_pb2.GetInfoResponse(
            version=k.version,
            data_dir=str(k.config.data_dir),
            privacy_mode=k.config.privacy_mode,
            listen=k.address,
            config_path=str(k.config.path.resolve()) if k.config.path else "",
            uptime_seconds=time.monotonic() - k.started_at,
            governed_by=k.host.authorizers,
            calls_shed=k.router.load.shed, in_flight=k.router.load.in_flight,
        )

    async def ListPlugins(self, request: kernel_pb2.ListPluginsRequest, context: LocalContext) -> kernel_pb2.ListPluginsResponse:
        return kernel_pb2.ListPluginsResponse(
            plugins=[plugin_message(r) for r in self.kernel.host.records.values()]
        )

    async def ListContracts(self, request: kernel_pb2.ListContractsRequest, context: LocalContext) -> kernel_pb2.ListContractsResponse:
        k = self.kernel
        contracts = []
        for service in k.registry.served():
            methods = [
                kernel_pb2.Method(
                    name=m.name,
                    input_type=m.input.DESCRIPTOR.full_name,
                    output_type=m.output.DESCRIPTOR.full_name,
                    client_streaming=m.client_streaming,
                    server_streaming=m.server_streaming,
                    failover_safe=m.failover_safe,
                )
                for m in service.methods.values()
            ]
            providers = [
                kernel_pb2.Provider(
                    name=p.name,
                    plugin=p.plugin,
                    endpoint=p.endpoint,
                    local=p.local,
                    health=kernel_pb2.Provider.HEALTH_SERVING if p.health.serving else kernel_pb2.Provider.HEALTH_NOT_SERVING,
                    health_detail=p.health.detail,
                    circuit=_CIRCUITS[p.circuit],
                    consecutive_failures=p.breaker.consecutive_failures,
                    calls=p.calls,
                    failures=p.failures,
                    last_error=p.last_error,
                    latency_ms=(p.latency_ewma or 0.0) * 1000,
                    admission=(await k.router.admission.admit(None, p, position)).reason,  # for a plain call now
                )
                for position, p in enumerate(k.router.order(service.full_name))  # the order the router will try them
            ]
            contracts.append(
                kernel_pb2.Contract(
                    service=service.full_name, version=service.version, methods=methods, providers=providers
                )
            )
        return kernel_pb2.ListContractsResponse(contracts=contracts)
