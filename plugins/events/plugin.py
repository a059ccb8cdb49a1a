"""The events plugin: `EventService`, a durable publish/subscribe log (the A2A event bus).

    [plugins.events]
    synchronous = "FULL"          # SQLite durability, as for memories
    max_data_bytes = 1048576      # largest event payload accepted

Events live in `<data dir>/events/events.db`. Each published event is also handed, in order,
to every plugin's `cortex_event` hook.
"""

from __future__ import annotations

from typing import Any

from cortex.contracts.events.v1 import events_pb2 as pb
from cortex.kernel import Health, check_settings, hookimpl

SERVICE = pb.DESCRIPTOR.services_by_name["EventService"]
SETTINGS = {"synchronous", "max_data_bytes"}


class EventsPlugin:
    def __init__(self) -> None:
        self.servicer: Any = None
        self.folder: Any = None
        self.synchronous = "FULL"
        self.max_data_bytes = 1 << 20
        self.context: Any = None

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, SETTINGS, context.name)
        self.synchronous = str(config.get("synchronous", "FULL")).upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError('[plugins.events] synchronous must be "FULL", "NORMAL" or "EXTRA"')
        self.max_data_bytes = int(config.get("max_data_bytes", 1 << 20))
        if not 0 < self.max_data_bytes <= 64 << 20:
            raise ValueError("[plugins.events] max_data_bytes must be between 1 and 67108864")
        self.folder = context.data_dir / "events"
        self.context = context

    @hookimpl
    def cortex_register(self, registry) -> None:
        registry.add(SERVICE, _Deferred(self), local=True)

    @hookimpl
    async def cortex_start(self, context) -> None:
        from .bus import SqliteEventBus
        from .service import EventServicer

        bus = SqliteEventBus(self.folder / "events.db", self.synchronous)
        self.servicer = EventServicer(bus, context.deliver_event, self.max_data_bytes, context.log, context.stopping)

    @hookimpl
    async def cortex_health(self) -> Health:
        return Health(self.servicer is not None, "" if self.servicer else "the event log is closed")

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.servicer is not None:
            await self.servicer.close()
            self.servicer = None


class _Deferred:
    """Registered before start; forwards to the servicer made in cortex_start."""

    def __init__(self, plugin: EventsPlugin):
        self._plugin = plugin

    def _servicer(self):
        if self._plugin.servicer is None:
            import grpc

            from cortex.kernel.call import ProviderAbort

            raise ProviderAbort(grpc.StatusCode.UNAVAILABLE, "the event log is not open (starting or stopping)")
        return self._plugin.servicer

    async def Publish(self, request, context):
        return await self._servicer().Publish(request, context)

    def Subscribe(self, request, context):
        return self._servicer().Subscribe(request, context)


plugin = EventsPlugin()
