"""The http plugin: the HTTP/JSON API (every contract method, generated from the registry),
OpenAPI, health, readiness, Prometheus metrics, and outgoing webhooks.

    [plugins.http]
    listen = "127.0.0.1:50080"   # "" turns the API off
    token_env = "CORTEX_HTTP_TOKEN"   # the bearer token, from this variable (or token = "...")
    trust_loopback = true         # loopback clients need no token
    rate_limit = 50.0             # requests per second per client (0: no limit)
    rate_burst = 100
    timeout_seconds = 120         # deadline of each unary call
    max_body_bytes = 8388608

    [[plugins.http.webhook]]
    url = "https://example.org/hooks/cortex"
    topics = ["memory.*"]
    secret_env = "CORTEX_WEBHOOK_SECRET"

A listener on a non-loopback address refuses to start without a token. Calls made through the
API reach the router with the principal `http:<client address>`, so policy applies to them.
"""

from __future__ import annotations

import os
from typing import Any

from cortex.kernel import check_settings, hookimpl
from cortex.kernel.asgi import is_loopback_host, split_listen

SETTINGS = {"listen", "token", "token_env", "trust_loopback", "rate_limit", "rate_burst", "timeout_seconds",
            "max_body_bytes", "webhook"}
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

        check_settings(config, SETTINGS, context.name)
        listen = str(config.get("listen", DEFAULT_LISTEN))
        token = str(config.get("token") or os.environ.get(str(config.get("token_env", "CORTEX_HTTP_TOKEN")), ""))
        if listen:
            host, _port = split_listen(listen)
            if not is_loopback_host(host) and not token:
                raise ValueError(
                    f"[plugins.http] listen = {listen!r} is not loopback: set a bearer token "
                    "(token_env = \"CORTEX_HTTP_TOKEN\" and export it) or listen on 127.0.0.1"
                )
        rate, burst = float(config.get("rate_limit", 50.0)), float(config.get("rate_burst", 100))
        if rate < 0 or burst < 1:
            raise ValueError("[plugins.http] rate_limit must be >= 0 and rate_burst >= 1")
        hooks = config.get("webhook", [])
        if not isinstance(hooks, list):
            raise ValueError("[plugins.http] webhooks are [[plugins.http.webhook]] tables")
        self.webhooks = [Webhook.from_config(i, raw, dict(os.environ)) for i, raw in enumerate(hooks)]
        self.settings = {
            "listen": listen, "token": token, "trust_loopback": bool(config.get("trust_loopback", True)),
            "rate": rate, "burst": burst, "timeout": float(config.get("timeout_seconds", 120)),
            "max_body_bytes": int(config.get("max_body_bytes", 8 << 20)),
        }
        self.metrics = Metrics()

    @hookimpl
    async def cortex_start(self, context) -> None:
        from cortex.kernel.asgi import AsgiServer
        from cortex.kernel.bridge import KernelGateway
        from cortex.kernel.runtime import cortex_version

        from .app import HttpApi
        from .guard import Authenticator, RateLimiter
        from .webhooks import WebhookRunner

        s = self.settings
        if s["listen"]:
            self.api = HttpApi(
                KernelGateway(context.channel), context.channel, self.metrics,
                Authenticator(s["token"], s["trust_loopback"]), RateLimiter(s["rate"], s["burst"]),
                max_body_bytes=s["max_body_bytes"], timeout=s["timeout"], version=cortex_version(),
            )
            self.server = AsgiServer(self.api.app(), s["listen"], "http-api")
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
    async def cortex_stop(self, context) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        if self.server is not None:
            await self.server.stop()
            self.server = None


plugin = HttpPlugin()
