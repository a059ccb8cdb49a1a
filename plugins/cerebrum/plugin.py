"""The cerebrum plugin: plan, simulate, execute, critique, teach and replay (`CerebrumService`).

Its manifest declares that it may call any contract (`cerebrum/*` in `cortex.calls`): a plan's
steps are calls of registered methods, each judged by governance as `plugin:cerebrum`.
Traces are kept in `<data dir>/cerebrum/traces.db`, or in PostgreSQL shared by several kernels:

    [plugins.cerebrum]
    backend = "postgres"        # pg_traces.py; the DSN as for memories (CORTEX_POSTGRES_DSN)
"""

from __future__ import annotations

from typing import Any

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.kernel import Health, check_settings, hookimpl

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SERVICE = pb.DESCRIPTOR.services_by_name["CerebrumService"]


class CerebrumPlugin:
    def __init__(self) -> None:
        self.channel: Any = None
        self.traces: Any = None
        self.principal = "plugin:cerebrum"
        self.folder: Any = None
        self.dsn = ""  # PostgreSQL's, when traces are shared there

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, {"backend", "postgres_dsn", "postgres_dsn_env"}, context.name)
        self.channel, self.principal = context.channel, f"plugin:{context.name}"
        self.folder = context.data_dir / "cerebrum"
        backend = config.get("backend", "sqlite")
        if backend not in ("sqlite", "postgres"):
            raise ValueError(f'[plugins.cerebrum] backend = {backend!r}: use "sqlite" or "postgres"')
        if backend == "postgres":
            from cortex.kernel.sdk import postgres_dsn

            self.dsn = postgres_dsn(config, "plugins.cerebrum")
        else:
            self.dsn = ""

    @hookimpl
    def cortex_register(self, registry) -> None:
        from .service import CerebrumServicer

        registry.add(SERVICE, CerebrumServicer(self), local=True)

    @hookimpl
    async def cortex_start(self, context) -> None:
        import asyncio

        if self.dsn:
            from .pg_traces import PostgresTraceStore

            self.traces = await asyncio.to_thread(PostgresTraceStore, self.dsn)
        else:
            from .traces import TraceStore

            self.traces = TraceStore(self.folder / "traces.db")

    @hookimpl
    async def cortex_health(self) -> Health:
        return Health(self.traces is not None, "" if self.traces is not None else "the trace store is closed")

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.traces is not None:
            self.traces.close()
            self.traces = None

    @hookimpl
    def cortex_register_commands(self, cli) -> None:
        from .cli import register

        register(cli)


plugin = CerebrumPlugin()
