"""The a2a plugin: Cortex-OS as an Agent2Agent agent (official `a2a-sdk`). Other agents read its
card at /.well-known/agent-card.json and send messages (JSON-RPC `SendMessage` /
`SendStreamingMessage` at /a2a) that map onto memories and Cerebrum.

    [plugins.a2a]
    listen = "127.0.0.1:50082"   # "" turns it off; beyond loopback with TLS and required credentials
    name = "Cortex-OS"

A message picks its skill with metadata {"skill": "recall"} (or a data part), or a prefix:
"remember: ...", "recall: ...", "plan: ...", "execute: ..."; plain text is a recall.

Without a credential, the agent answers only by a loopback name and to loopback origins (the
kernel's HostGuard, as on every listener): a web page cannot reach the owner's memories through
the owner's browser, by DNS rebinding or by posting across sites.
"""

from __future__ import annotations

from typing import Any

from cortex.kernel import check_settings, hookimpl, listener_check
from cortex.kernel.sdk import split_listen

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SETTINGS = {"listen", "name"}
DEFAULT_LISTEN = "127.0.0.1:50082"
RPC_PATH = "/a2a"


class A2aPlugin:
    def __init__(self) -> None:
        self.listen = DEFAULT_LISTEN
        self.name = "Cortex-OS"
        self.server: Any = None
        self.address = ""

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, SETTINGS, context.name)
        self.listen = str(config.get("listen", DEFAULT_LISTEN))
        self.name = str(config.get("name", "Cortex-OS"))
        if self.listen:
            split_listen(self.listen)
            context.exposure.check(self.listen, "[plugins.a2a] listen")

    @hookimpl
    async def cortex_start(self, context) -> None:
        if not self.listen:
            return
        from cortex.kernel.sdk import AsgiServer, JsonBodies, LazyApp

        self.server = AsgiServer(None, self.listen, "a2a", exposure=context.exposure, credentials=context.credentials)
        # the card names the real URL, so bind first (port 0 becomes a port); the A2A SDK loads
        # with the first request, not with the kernel
        self.address = await self.server.bind()
        scheme = "https" if context.exposure.tls else "http"
        # the SDK parses bodies its own way (a 5,000-digit number is a 200 with an internal error and
        # a traceback): JsonBodies answers what the JSON parser refuses first (400, one log line)
        app = JsonBodies(LazyApp(lambda: self._app(context, f"{scheme}://{self.address}{RPC_PATH}")), server="a2a")
        await self.server.serve(app)
        context.log.info("a2a.serving", card=f"{scheme}://{self.address}/.well-known/agent-card.json")

    def _app(self, context, url: str):
        from a2a.server.request_handlers import DefaultRequestHandler
        from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
        from a2a.server.tasks import InMemoryTaskStore
        from starlette.applications import Starlette

        from cortex.kernel.sdk import KernelGateway

        from .agent import CortexAgentExecutor, IdentityContextBuilder
        from .card import agent_card

        card = agent_card(self.name, url)
        handler = DefaultRequestHandler(
            agent_executor=CortexAgentExecutor(KernelGateway(context.channel)),
            task_store=InMemoryTaskStore(),
            agent_card=card,
        )
        routes = create_jsonrpc_routes(handler, rpc_url=RPC_PATH, context_builder=IdentityContextBuilder())
        return Starlette(routes=[*create_agent_card_routes(card), *routes])

    @hookimpl
    def cortex_doctor(self, config, running) -> list:
        return listener_check("a2a", "listen", str(config.get("listen", DEFAULT_LISTEN)), running)

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


plugin = A2aPlugin()
