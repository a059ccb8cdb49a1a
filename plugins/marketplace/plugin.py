"""The marketplace plugin (cortex-marketplace): installs and enables a plugin when a
`marketplace.server.installed` event says so, and reports `marketplace.server.enabled` or
`marketplace.server.failed` (with the reason) on the event bus.

    {"spec": "cortex-bookmarks==0.2.0", "sha256": "..."}     the event's data (JSON); spec may be
                                                            a distribution, a path or a wheel

The installation is made acting for the event's publisher (recorded by the bus from their
credential), so policy decides exactly as if they had called PluginService/Install themselves: by
default only the admin may; anyone else gets `.failed` with PERMISSION_DENIED, and nothing is
installed. The event may arrive through EventService, or from an agent over A2A publishing it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import structlog

from cortex.contracts.events.v1 import events_pb2
from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.kernel import check_settings, hookimpl
from cortex.kernel.sdk import rpc_status

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

log = structlog.get_logger("cortex.marketplace")
INSTALLED, ENABLED, FAILED = "marketplace.server.installed", "marketplace.server.enabled", "marketplace.server.failed"
INSTALL_TIMEOUT = 600


class Marketplace:
    def __init__(self) -> None:
        self.channel: Any = None
        self._tasks: set[asyncio.Task] = set()

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, set(), context.name)
        self.channel = context.channel

    @hookimpl
    def cortex_event(self, event) -> None:
        if event.type != INSTALLED or self.channel is None:
            return
        task = asyncio.get_running_loop().create_task(self._install(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _install(self, event) -> None:
        try:
            data = json.loads(event.data or "{}")
            spec, sha256 = str(data["spec"]).strip(), str(data.get("sha256", "")).strip()
        except (ValueError, KeyError, TypeError, AttributeError):
            return await self._report(FAILED, event, {"reason": 'the data must be JSON {"spec": "...", "sha256": "..."}'})
        if not event.publisher:
            return await self._report(FAILED, event, {"spec": spec, "reason": "the event names no publisher"})
        try:  # as the publisher: policy judges them, and the audit log says the marketplace acted
            stub = kernel_pb2_grpc.PluginServiceStub(self.channel.acting_for(event.publisher))
            reply = await stub.Install(kernel_pb2.InstallRequest(spec=spec, sha256=sha256), timeout=INSTALL_TIMEOUT)
        except (grpc.RpcError, ValueError) as exc:
            code, details = rpc_status(exc) if isinstance(exc, grpc.RpcError) else (grpc.StatusCode.PERMISSION_DENIED, str(exc))
            log.warning("marketplace.install_refused", spec=spec, publisher=event.publisher, code=code.name)
            return await self._report(FAILED, event, {"spec": spec, "code": code.name, "reason": details})
        plugins = [{"name": p.name, "version": p.version, "state": kernel_pb2.Plugin.State.Name(p.state), "error": p.error}
                   for p in reply.plugins]
        loaded = all(p.state == kernel_pb2.Plugin.STATE_LOADED for p in reply.plugins)
        await self._report(ENABLED if loaded else FAILED, event, {"spec": spec, "plugins": plugins})

    async def _report(self, topic: str, cause, data: dict[str, Any]) -> None:
        self.channel.publish(events_pb2.Event(type=topic, source="cortex/marketplace", subject=cause.id,
                                              data=json.dumps(data), datacontenttype="application/json",
                                              trace_id=cause.trace_id))

    @hookimpl
    async def cortex_stop(self, context) -> None:
        for task in list(self._tasks):
            task.cancel()


plugin = Marketplace()
