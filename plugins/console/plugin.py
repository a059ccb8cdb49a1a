"""The console plugin: the web console, served by the http plugin beside the HTTP/JSON API (its
origin, its credentials, its TLS), and ConsoleService (who am I, the last hour's activity).

    [plugins.console]
    sample_seconds = 30     # how often circuits and the memory count are polled (0: never)
    keep_minutes = 60       # how much activity is kept for the charts (at least 60)

The pages are static files shipped in the wheel (no build step, no CDN): every figure they show
and every change they make is a call to /v1/... with the person's own credential, so it is
governed and audited like any other caller's. See docs/console.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from cortex.kernel import check_settings, hookimpl

CORTEX_API = ">=1.5,<2"  # cortex_web_pages

SETTINGS = {"sample_seconds", "keep_minutes"}
ME = "plugin:console"


class ConsolePlugin:
    def __init__(self) -> None:
        self.activity: Any = None
        self.sample_seconds = 30.0
        self.sampler: asyncio.Task | None = None
        self.pages: Any = None

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        from .activity import Activity

        check_settings(config, SETTINGS, context.name)
        try:
            self.sample_seconds = float(config.get("sample_seconds", 30))
            keep = float(config.get("keep_minutes", 60))
        except (TypeError, ValueError):
            raise ValueError("[plugins.console] sample_seconds and keep_minutes are numbers (seconds, minutes)") from None
        if self.sample_seconds < 0 or keep < 60:
            raise ValueError("[plugins.console] sample_seconds must be >= 0 and keep_minutes >= 60 (an hour)")
        self.activity = Activity(interval=10.0, keep_seconds=keep * 60)

    @hookimpl
    def cortex_register(self, registry) -> None:
        from cortex.contracts.console.v1 import console_pb2

        from .service import ConsoleServicer

        registry.add(console_pb2.DESCRIPTOR.services_by_name["ConsoleService"], ConsoleServicer(self.activity))

    @hookimpl
    async def cortex_start(self, context) -> None:
        from .pages import ConsolePages

        self.pages = ConsolePages()
        if self.sample_seconds:
            self.sampler = asyncio.create_task(self._sample(context))

    @hookimpl
    def cortex_web_pages(self) -> dict[str, Any]:
        return {"/console": self.pages} if self.pages is not None else {}

    @hookimpl
    def cortex_observe(self, call, outcome) -> None:
        if self.activity is None or call.principal == ME:  # its own polling is not the kernel's activity
            return
        # a failed call has no serving provider: the one that answered last is whose error it was;
        # a denied one never reached a provider (its route names the plugin that denied it)
        provider = outcome.provider or (outcome.attempts[-1].provider if outcome.attempts else "")
        provider = provider if outcome.decision.allow else ""
        self.activity.observe(call.method.path, provider, outcome.code, outcome.decision.allow, outcome.latency_s)

    async def _sample(self, context) -> None:
        from .sampler import poll_once

        while True:  # the first poll after one interval: the other plugins are still starting now
            await asyncio.sleep(self.sample_seconds)
            try:
                await poll_once(context.channel, self.activity, context.log)
            except Exception as exc:  # noqa: BLE001 - a bad poll loses one sample, not the charts
                context.log.warning("console.sample_failed", error=repr(exc))

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.sampler is not None:
            self.sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sampler
            self.sampler = None
        self.pages = None


plugin = ConsolePlugin()
