"""The events plugin: `EventService`, a durable publish/subscribe log (the A2A event bus).

    [plugins.events]
    backend = "sqlite"            # or "nats": a NATS JetStream stream several kernels share
    synchronous = "FULL"          # SQLite durability, as for memories
    max_data_bytes = 1048576      # largest event payload accepted
    nats_url = "nats://127.0.0.1:4222"   # backend = "nats" (nats_bus.py): beyond loopback tls://
    nats_stream = "CORTEX_EVENTS"
    nats_token_env = ""           # the environment variable holding the server's token
    nats_tls_ca = ""              # the CA of the server's certificate
    duplicate_window_seconds = 86400  # a repeated publish (source, id) within it is one event

Events live in `<data dir>/events/events.db`, or in the NATS stream. Each event published through
this kernel is also handed, in order, to every plugin's `cortex_event` hook (events published
through another kernel of the stream reach its hooks, and this kernel's subscribers).
"""

from __future__ import annotations

import re
from typing import Any

from cortex.contracts.events.v1 import events_pb2 as pb
from cortex.kernel import Health, check_settings, hookimpl

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SERVICE = pb.DESCRIPTOR.services_by_name["EventService"]
SETTINGS = {"backend", "synchronous", "max_data_bytes", "nats_url", "nats_stream", "nats_token_env", "nats_tls_ca",
            "duplicate_window_seconds"}


class EventsPlugin:
    def __init__(self) -> None:
        self.servicer: Any = None
        self.folder: Any = None
        self.synchronous = "FULL"
        self.max_data_bytes = 1 << 20
        self.make_bus: Any = None

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
        backend = config.get("backend", "sqlite")
        if backend == "sqlite":
            from .bus import SqliteEventBus

            self.make_bus = lambda: SqliteEventBus(self.folder / "events.db", self.synchronous)
        elif backend == "nats":
            self.make_bus = self._nats(config)
        else:
            raise ValueError(f'[plugins.events] backend = {backend!r}: use "sqlite" or "nats"')

    @staticmethod
    def _nats(config: dict[str, Any]):
        import os

        try:
            import nats  # noqa: F401 - only to say which extra is missing
        except ImportError:
            raise ValueError("[plugins.events] backend = \"nats\" needs nats-py: pip install 'cortex-os[cluster]'") from None
        from .nats_bus import NatsEventBus, check_url

        url, ca = str(config.get("nats_url", "nats://127.0.0.1:4222")), str(config.get("nats_tls_ca", ""))
        token_env = str(config.get("nats_token_env", ""))
        token = os.environ.get(token_env, "") if token_env else ""
        if token_env and not token:
            raise ValueError(f"[plugins.events] nats_token_env = {token_env!r}, but that variable is not set")
        window = float(config.get("duplicate_window_seconds", 86400))
        if not 1 <= window <= 30 * 86400:
            raise ValueError("[plugins.events] duplicate_window_seconds must be 1 to 2592000 (30 days)")
        check_url(url, ca, token)
        stream = str(config.get("nats_stream", "CORTEX_EVENTS"))
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", stream):
            raise ValueError(f"[plugins.events] nats_stream {stream!r}: letters, digits, '_' and '-'")
        return lambda: NatsEventBus(url, stream, window, ca, token)

    @hookimpl
    def cortex_register(self, registry) -> None:
        from .service import EventServicer

        self.servicer = EventServicer(self.max_data_bytes)
        registry.add(SERVICE, self.servicer, local=True)

    @hookimpl
    async def cortex_start(self, context) -> None:
        await self.servicer.open(self.make_bus(), context.deliver_event, context.stopping)

    @hookimpl
    async def cortex_health(self) -> Health:
        is_open = self.servicer is not None and self.servicer.bus is not None
        return Health(is_open, "" if is_open else "the event log is closed")

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.servicer is not None:
            await self.servicer.close()


plugin = EventsPlugin()
