"""The http plugin: the HTTP/JSON API (every contract method, generated from the registry),
OpenAPI, health, readiness, Prometheus metrics, and outgoing webhooks.

    [plugins.http]
    listen = "127.0.0.1:50080"   # "" turns the API off
    rate_limit = 50.0             # requests per second per principal (0: no limit)
    rate_burst = 100
    timeout_seconds = 120         # deadline of each unary call
    max_body_bytes = 8388608

    [[plugins.http.webhook]]
    url = "https://example.org/hooks/cortex"
    topics = ["memory.*"]
    secret_env = "CORTEX_WEBHOOK_SECRET"

Clients are identified by the kernel's credentials, as gRPC callers are: `Authorization: Bearer
<API key>` is `key:NAME` (with its scopes), the admin token is `admin`, and a loopback client
without one is `local`. The listener follows the kernel's rule: beyond loopback only with TLS
(kernel.tls_cert, served here too) and kernel.require_credentials = true.
"""

from __future__ import annotations

import os
from typing import Any

from cortex.kernel import check_settings, hookimpl, listener_check
from cortex.kernel.sdk import split_listen

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SETTINGS = {"listen", "rate_limit", "rate_burst", "timeout_seconds", "max_body_bytes", "webhook"}
REPLACED = {
    "token": "API keys replace it: `cortex keys create NAME`, sent as 'Authorization: Bearer <key>'",
    "token_env": "API keys replace it: `cortex keys create NAME`, sent as 'Authorization: Bearer <key>'",
    "trust_loopback": "set kernel.require_credentials = true to require a credential on loopback too",
}
DEFAULT_LISTEN = "127.0.0.1:50080"


class HttpPlugin:
    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.metrics: Any = None
        self.server: Any = None
        self.api: Any = None
        self.webhooks: list[Any] = []
        self.runner: Any = None
        self.address = ""

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        from .metrics import Metrics
        from .webhooks import Webhook

        for old in sorted(set(config) & set(REPLACED)):
            raise ValueError(f"[plugins.http] {old} is no longer a setting: {REPLACED[old]}")
        check_settings(config, SETTINGS, context.name)
        listen = str(config.get("listen", DEFAULT_LISTEN))
        if listen:
            split_listen(listen)
            context.exposure.check(listen, "[plugins.http] listen")
        rate, burst = float(config.get("rate_limit", 50.0)), float(config.get("rate_burst", 100))
        if rate < 0 or burst < 1:
            raise ValueError("[plugins.http] rate_limit must be >= 0 and rate_burst >= 1")
        hooks = config.get("webhook", [])
        if not isinstance(hooks, list):
            raise ValueError("[plugins.http] webhooks are [[plugins.http.webhook]] tables")
        self.webhooks = [Webhook.from_config(i, raw, dict(os.environ)) for i, raw in enumerate(hooks)]
        self.settings = {
            "listen": listen,
            "rate": rate, "burst": burst, "timeout": float(config.get("timeout_seconds", 120)),
            "max_body_bytes": int(config.get("max_body_bytes", 8 << 20)),
        }
        self.metrics = Metrics()

    @hookimpl
    async def cortex_start(self, context) -> None:
        from cortex.kernel.sdk import AsgiServer, KernelGateway, cortex_version

        from .app import HttpApi
        from .guard import RateLimiter
        from .webhooks import WebhookRunner

        s = self.settings
        if s["listen"]:
            self.api = HttpApi(
                KernelGateway(context.channel), context.channel, self.metrics,
                context.credentials, RateLimiter(s["rate"], s["burst"]),
                max_body_bytes=s["max_body_bytes"], timeout=s["timeout"], version=cortex_version(),
                pages=context.web_pages,
            )
            self.server = AsgiServer(self.api.app(), s["listen"], "http-api", exposure=context.exposure)
            self.address = await self.server.start()
            context.log.info("http.api_serving", address=self.address, url=f"http://{self.address}/openapi.json")
        if self.webhooks:
            self.runner = WebhookRunner(self.webhooks, context.channel, context.plugin_dir, self.metrics)
            self.runner.start()

    @hookimpl
    def cortex_observe(self, call, outcome) -> None:
        if self.metrics is not None:
            self.metrics.observe(call, outcome)

    @hookimpl
    def cortex_doctor(self, config, running) -> list:
        return listener_check("http", "listen", str(config.get("listen", DEFAULT_LISTEN)), running)

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        if self.server is not None:
            await self.server.stop()
            self.server = None


plugin = HttpPlugin()
