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

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SERVICE = pb.DESCRIPTOR.services_by_name["EventService"]
SETTINGS = {"synchronous", "max_data_bytes"}


class EventsPlugin:
    def __init__(self) -> None:
        self.servicer: Any = None
        self.folder: Any = None
        self.synchronous = "FULL"
        self.max_data_bytes = 1 << 20

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

    @hookimpl
    def cortex_register(self, registry) -> None:
        from .service import EventServicer

        self.servicer = EventServicer(self.max_data_bytes)
        registry.add(SERVICE, self.servicer, local=True)

    @hookimpl
    async def cortex_start(self, context) -> None:
        from .bus import SqliteEventBus

        bus = SqliteEventBus(self.folder / "events.db", self.synchronous)
        self.servicer.open(bus, context.deliver_event, context.stopping)

    @hookimpl
    async def cortex_health(self) -> Health:
        is_open = self.servicer is not None and self.servicer.bus is not None
        return Health(is_open, "" if is_open else "the event log is closed")

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.servicer is not None:
            await self.servicer.close()


plugin = EventsPlugin()
