"""The kernel: config + plugin host + contract registry + router + gRPC server, started and
stopped in the right order.

start: load plugins -> configure -> register contracts -> add remote providers -> start plugins
       -> first health probe -> serve.
stop:  health NOT_SERVING -> server stops (in-flight calls get `shutdown_grace_seconds`)
       -> plugins stop in reverse order -> remote channels close.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2

from .circuit import CircuitState
from .config import Config, ConfigError
from .context import KernelChannel, PluginContext
from .kernel_service import PLUGIN_SERVICE, KernelServicer, PluginServicer
from .kernel_service import SERVICE as KERNEL_SERVICE
from .plugin_host import BROKEN, BUILT_IN_DIST, DISABLED, PluginHost, PluginRecord
from .registry import ContractRegistry, Health, resolve_service
from .router import Router
from .security.capabilities import grant
from .security.credentials import Credentials
from .security.dial import provider_dial
from .security.exposure import Exposure
from .security.remote import RemoteProvider, is_loopback
from .server import LateContracts, build_server

log = structlog.get_logger("cortex.kernel")
T = TypeVar("T")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def cortex_version() -> str:
    try:
        return metadata.version("cortex-os")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Kernel:
    def __init__(self, config: Config, extra_plugins: list[tuple[str, Any]] | None = None):
        self.config = config
        self.version = cortex_version()
        self.registry = ContractRegistry(config.circuit.failure_threshold, config.circuit.reset_timeout_seconds)
        self.host = PluginHost(config, self.registry, extra_plugins or [])
        self.router = Router(self.registry, self.host, config)
        self.health = health.aio.HealthServicer()
        self.exposure = Exposure.from_config(config.kernel)
        self.credentials = Credentials(config.data_dir, self.exposure.require_credentials, config.kernel_section.owners)
        self.server: grpc.aio.Server | None = None
        self.server_handlers: LateContracts | None = None  # serves contracts registered after start (live enables)
        self._plugin_changes = asyncio.Lock()
        self._changing: set[asyncio.Future[Any]] = set()
        self.address = config.listen
        self.started_at = time.monotonic()
        self._monitor: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    # -- start ----------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log.info("kernel.starting", version=self.version, data_dir=str(cfg.data_dir), config=str(cfg.path or ""))
        try:  # before anything starts: a listener that would be exposed refuses here
            self.exposure.check(cfg.listen, "kernel.listen")
            server_credentials = self.exposure.server_credentials() if self.exposure.tls else None
        except ValueError as exc:
            raise ConfigError(str(exc), cfg.path) from None
        self.credentials.ensure_admin_token()
        self.host.load()
        self.registry.add_servicer(KERNEL_SERVICE, KernelServicer(self), plugin="kernel")
        self.registry.add_servicer(PLUGIN_SERVICE, PluginServicer(self), plugin="kernel")
        await self.host.configure(self._plugin_context)
        await self.host.register()
        self._add_remote_providers()
        await self.host.start()
        for record in self.host.records.values():
            if record.state == BROKEN:
                log.warning("plugin.skipped", plugin=record.name, error=record.error)
        await self._require_plugins()
        self._check_routing()
        await self.refresh_health()
        self.server, self.server_handlers = build_server(
            self.registry, self.router, self.health, self.explain_unknown, cfg.kernel_section.max_message_bytes,
            self.credentials, mutual_tls=bool(self.exposure.tls_client_ca),
        )
        try:
            port = (self.server.add_insecure_port(cfg.listen) if server_credentials is None
                    else self.server.add_secure_port(cfg.listen, server_credentials))
        except RuntimeError as exc:
            await self.host.stop()
            raise ConfigError(f"cannot listen on {cfg.listen}: {exc} (is another kernel running there?)") from None
        host = cfg.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        await self.server.start()
        self.registry.listeners.append(self._on_circuit_change)
        self._monitor = asyncio.create_task(self._health_loop(), name="cortex-health")
        self.started_at = time.monotonic()
        log.info("kernel.serving", listen=self.address, tls=self.exposure.tls, mutual_tls=bool(self.exposure.tls_client_ca),
                 require_credentials=self.exposure.require_credentials,
                 governed_by=self.host.authorizers or "NOBODY: calls are not authorized or audited",
                 plugins=[r.name for r in self.host.loaded()], contracts=[s.full_name for s in self.registry.served()])

    async def _require_plugins(self) -> None:
        """Fail closed: a kernel whose required plugins (governance, by default) did not come up
        serves nothing. An admin who means to run without one removes it from the list."""
        problems = []
        for name in self.host.required:
            record = self.host.records.get(name)
            if record is None:
                problems.append(f"'{name}' is not installed")
            elif record.state == DISABLED:
                problems.append(f"'{name}' is {record.error or 'disabled in [plugins] disabled'}")
            elif record.state == BROKEN:
                problems.append(f"'{name}' is broken: {record.error}")
        if problems:
            await self.host.stop()
            raise ConfigError(
                f"required plugin(s) not running, so the kernel will not serve: {'; '.join(problems)}. Fix it, or, "
                "to serve without it on purpose, remove it from kernel.required_plugins",
                self.config.path,
            )

    def _plugin_context(self, name: str) -> PluginContext:
        source = getattr(self.host.records.get(name), "source", "")  # its distribution's manifest grants it
        offered = {"plugins": self.host.records, "deliver_event": self.host.deliver_event, "stopping": self._stopped,
                   "credentials": self.credentials, "exposure": self.exposure, "web_pages": self.host.web_pages}
        return PluginContext(
            name=name,
            config=self.config.plugin_section(name),
            data_dir=self.config.data_dir,
            privacy_mode=self.config.privacy_mode,
            channel=KernelChannel(self.router, principal=f"plugin:{name}", explain=self.explain_unknown,
                                  credentials=self.credentials),
            **grant(name, {"built-in": BUILT_IN_DIST, "in-process": ""}.get(source, source), offered, source != "built-in"),
        )

    def _add_remote_providers(self) -> None:
        cfg = self.config
        for name, settings in cfg.providers.items():
            endpoint = settings.endpoint
            if not endpoint:
                continue
            for service in settings.services:
                try:
                    info = self.registry.service(resolve_service(service))
                except ValueError as exc:
                    raise cfg.error(f"[providers.{name}]: {exc}", service) from None
                local = is_loopback(endpoint) if settings.local is None else settings.local
                self.registry.add(RemoteProvider(
                    name=name, plugin="", service=info, breaker=self.registry.breaker(name), local=local, endpoint=endpoint,
                    timeout=settings.timeout_seconds, max_message_bytes=cfg.kernel_section.max_message_bytes,
                    dial=provider_dial(settings)))

    def _check_routing(self) -> None:
        for service, order in self.config.routing.items():
            names = {p.name for p in self.registry.providers.get(service, [])}
            unknown = [n for n in order if n not in names]
            if unknown:
                log.warning("routing.unknown_providers", service=service, providers=unknown, known=sorted(names))

    # -- health ---------------------------------------------------------------------------------
    async def refresh_health(self) -> None:
        """Probe every provider (plugin hooks, remote health checks) and publish gRPC health.
        Under privacy nothing leaves the machine, probes included: remote providers are not
        probed, and plugins whose providers are all remote are not asked."""
        private = self.config.local_only
        providers = list(self.registry.all_providers())
        remote_only = {p.plugin for p in providers if not p.local and all(not q.local for q in providers if q.plugin == p.plugin)}
        reports = await self.host.health(skip=remote_only if private else set())
        remote = [p for p in providers if p.endpoint and (p.local or not private)]
        probes = await asyncio.gather(*(p.probe() for p in remote), return_exceptions=True)
        for provider, result in zip(remote, probes, strict=True):
            provider.health = result if isinstance(result, Health) else Health(False, f"probe failed: {result!r}")
        for provider in providers:
            if private and not provider.local:
                provider.health = Health(False, "remote: not used or probed under privacy")
                continue
            report = reports.get(provider.plugin)
            if isinstance(report, Health):
                provider.health = report
            elif isinstance(report, dict) and provider.service.full_name in report:
                provider.health = report[provider.service.full_name]
            elif not provider.endpoint and report is None:
                provider.health = Health(True, "")
        await self._publish_health()

    async def _publish_health(self) -> None:
        for service in self.registry.services.values():
            providers = self.registry.providers[service.full_name]
            up = any(p.health.serving and p.circuit is not CircuitState.OPEN for p in providers)
            await self.health.set(service.full_name, SERVING if up else NOT_SERVING)
        await self.health.set("", SERVING)

    def _on_circuit_change(self, provider: str, state: CircuitState) -> None:
        log.warning("circuit.changed", provider=provider, state=state.value)
        asyncio.get_running_loop().create_task(self._publish_health())

    async def _health_loop(self) -> None:
        interval = self.config.kernel_section.health_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_health()
            except Exception as exc:  # noqa: BLE001 - keep probing
                log.error("health.refresh_failed", error=repr(exc))

    # -- plugins while serving ------------------------------------------------------------------------
    async def enable_plugin(self, name: str) -> PluginRecord:
        """Load an installed plugin now; its contracts are served at once (KeyError: unknown)."""
        record = await self._change(lambda: self.host.enable_now(name, self._plugin_context))
        log.info("plugin.enabled_live", plugin=name, state=record.state, error=record.error or None)
        return record

    async def disable_plugin(self, name: str) -> PluginRecord:
        """Stop a plugin now and withdraw its contracts (ValueError for a required one)."""
        if name not in self.host.records:
            raise KeyError(name)
        if name in self.host.required:
            raise ValueError(f"'{name}' is in kernel.required_plugins: the kernel does not serve without it")
        record = await self._change(lambda: self.host.disable_now(name, self.config.kernel_section.shutdown_grace_seconds))
        log.info("plugin.disabled_live", plugin=name)
        return record

    async def _change(self, work: Callable[[], Awaitable[T]]) -> T:
        """One live plugin change at a time, never left half-done when its caller goes away (a cancelled Install)."""
        async def locked() -> T:
            async with self._plugin_changes:
                if self._stopped.is_set():
                    raise ValueError("the kernel is stopping: no plugin changes now")
                try:
                    return await work()
                finally:  # the late handlers look again, and health says what serves now
                    if self.server_handlers is not None:
                        self.server_handlers.refresh()
                    await self.refresh_health()
        task = asyncio.ensure_future(locked())
        self._changing.add(task)  # (the loop holds tasks weakly)
        task.add_done_callback(self._changing.discard)
        return await asyncio.shield(task)

    async def install_plugin(self, spec: str, sha256: str = "") -> list[PluginRecord]:
        """pip-install `spec` into this kernel's environment, then enable the plugins it brings and
        load again, from their new files, those it changed (security/reinstall.py)."""
        from .security.reinstall import reinstall

        grace = self.config.kernel_section.shutdown_grace_seconds
        records = await self._change(lambda: reinstall(self.host, spec, sha256, self._plugin_context, grace))
        log.info("plugin.installed_live", spec=spec, plugins={r.name: r.state for r in records})
        if wrong := [f"plugin '{r.name}' {r.error}" for r in records if r.state != DISABLED and r.error]:  # broken, or kept
            raise ValueError(f"{spec} installed, but " + "; ".join(wrong))
        return records

    # -- unknown methods ------------------------------------------------------------------------------
    def explain_unknown(self, path: str) -> str:
        return self.router.explain_unknown(path)

    # -- stop -----------------------------------------------------------------------------------
    async def stop(self, grace: float | None = None) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.kernel_section.shutdown_grace_seconds if grace is None else grace
        log.info("kernel.stopping", grace_seconds=grace)
        if self._monitor:
            self._monitor.cancel()
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
        if self._changing:  # a live plugin change in progress ends first (within the grace): what it started is stopped
            await asyncio.wait([*self._changing], timeout=grace)
        await self.host.stop()
        for provider in self.registry.all_providers():
            await provider.close()
        log.info("kernel.stopped")

    async def wait(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()
