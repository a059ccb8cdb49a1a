"""The mcp plugin: the kernel's contracts as MCP tools (official `mcp` SDK), generated from the
descriptors, every call routed (and so governed) with the MCP client as principal.

    [plugins.mcp]
    http_listen = ""                 # e.g. "127.0.0.1:50081": serve streamable HTTP at /mcp
    expose = ["*"]                   # globs over "package.Service/Method" or tool names
    hide = ["cortex.events.v1.EventService/Subscribe"]
    timeout_seconds = 300            # deadline of each tool call, resource read and prompt

    [[plugins.mcp.prompts]]          # prompts of your own, beside the built-in ones (prompts.py)
    name = "weekly_review"
    text = "Help me review my week, focusing on {focus}."
    arguments = [{ name = "focus", required = true, values = ["work", "home"] }]

stdio, for editors, is the `cortex mcp` command: it bridges a running kernel (`--target`) or
starts an embedded one when none answers.
"""

from __future__ import annotations

from typing import Any

from cortex.kernel import check_settings, hookimpl, listener_check
from cortex.kernel.sdk import split_listen

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SETTINGS = {"http_listen", "expose", "hide", "timeout_seconds", "prompts"}


def tool_settings(config: dict[str, Any]) -> dict[str, Any]:
    from .prompts import from_config
    from .tools import DEFAULT_EXPOSE, DEFAULT_HIDE

    expose, hide = config.get("expose", DEFAULT_EXPOSE), config.get("hide", DEFAULT_HIDE)
    for key, value in (("expose", expose), ("hide", hide)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"[plugins.mcp] {key} must be a list of globs, e.g. [\"cortex.memories.v1.MemoryService/*\"]")
    timeout = float(config.get("timeout_seconds", 300))
    if timeout <= 0:
        raise ValueError("[plugins.mcp] timeout_seconds must be positive")
    return {"expose": expose, "hide": hide, "timeout": timeout, "prompts": from_config(config.get("prompts"))}


class McpPlugin:
    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.http_listen = ""
        self.server: Any = None
        self.mcp_server: Any = None
        self.address = ""

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, SETTINGS, context.name)
        self.settings = tool_settings(config)
        self.http_listen = str(config.get("http_listen", ""))
        if self.http_listen:
            split_listen(self.http_listen)
            context.exposure.check(self.http_listen, "[plugins.mcp] http_listen")

    @hookimpl
    async def cortex_start(self, context) -> None:
        if not self.http_listen:
            return
        from mcp.server.transport_security import TransportSecuritySettings

        from cortex.kernel.sdk import AsgiServer, JsonBodies, KernelGateway

        from .serve import build_server

        mcp_server = build_server(KernelGateway(context.channel), self.settings, transport="http")
        host, _ = split_listen(self.http_listen)
        # Host and Origin are the kernel's to check (HostGuard, in AsgiServer, as on every listener),
        # not the SDK's: one rule, one message, and API keys work by any name
        app = mcp_server.streamable_http_app(
            host=host, transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        app = JsonBodies(app, server="mcp")  # what the JSON parser refuses: 400, one log line
        self.server = AsgiServer(app, self.http_listen, "mcp", exposure=context.exposure, credentials=context.credentials)
        self.address = await self.server.start()
        mcp_server.start_watching()
        self.mcp_server = mcp_server
        scheme = "https" if context.exposure.tls else "http"
        context.log.info("mcp.http_serving", url=f"{scheme}://{self.address}/mcp")

    @hookimpl
    def cortex_doctor(self, config, running) -> list:
        return listener_check("mcp", "http_listen", str(config.get("http_listen", "")), running)

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.mcp_server is not None:
            await self.mcp_server.stop_watching()
            self.mcp_server = None

    @hookimpl
    def cortex_register_commands(self, cli) -> None:
        from .cli import register

        register(cli)


plugin = McpPlugin()
