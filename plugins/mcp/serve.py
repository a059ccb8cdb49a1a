"""Building the MCP server over a gateway, and running it on stdio for `cortex mcp`."""

from __future__ import annotations

from typing import Any

import structlog

from .server import ContractToolServer
from .tools import build_tools

log = structlog.get_logger("cortex.mcp")


def build_server(gateway: Any, settings: dict[str, Any], transport: str) -> ContractToolServer:
    from cortex.kernel.sdk import cortex_version

    def tools():
        return build_tools(gateway.methods(), settings["expose"], settings["hide"])

    server = ContractToolServer(gateway, tools(), version=cortex_version(), timeout=settings["timeout"],
                                transport=transport, prompts=settings.get("prompts", ()))
    server.rebuild = tools
    log.info("mcp.tools", transport=transport, count=len(server.tools))
    return server


async def serve_stdio(cfg: Any, target: str | None, embedded: str) -> None:
    """Bridge the kernel at `target` over stdio; when none answers and `embedded` allows it,
    start a kernel in this process (its gRPC on a free loopback port, no HTTP listeners)."""
    from cortex.kernel.sdk import GrpcGateway, KernelGateway, client_dial

    from .plugin import tool_settings

    settings = tool_settings(cfg.plugin_section("mcp"))
    target = target or cfg.target
    kernel = None
    gateway: Any = None
    if embedded != "always":
        remote = GrpcGateway(target, cfg.kernel_section.max_message_bytes, client_dial(cfg))
        try:
            await remote.discover(timeout=3.0)
            gateway = remote
            log.info("mcp.bridging", target=target)
        except Exception as exc:  # noqa: BLE001 - any failure to reach it means: no kernel there
            await remote.close()
            if embedded == "never":
                raise SystemExit(f"cortex mcp: no kernel answers at {target} ({exc!r}); start one with `cortex serve`") from None
            log.info("mcp.no_kernel", target=target, error=repr(exc))
    if gateway is None:
        from cortex.kernel import KernelChannel
        from cortex.kernel.sdk import Kernel

        embedded_settings = {"kernel.listen": "127.0.0.1:0", "plugins.http.listen": "", "plugins.mcp.http_listen": ""}
        cfg.override(embedded_settings, origin="cortex mcp (its embedded kernel)")
        kernel = Kernel(cfg)
        await kernel.start()
        gateway = KernelGateway(KernelChannel(kernel.router, principal="plugin:mcp"))
        log.info("mcp.embedded_kernel", listen=kernel.address, data_dir=str(cfg.data_dir))
    server = build_server(gateway, settings, transport="stdio")
    server.start_watching()
    try:
        await server.run_stdio_async()
    finally:
        await server.stop_watching()
        await gateway.close()
        if kernel is not None:
            await kernel.stop(grace=1.0)
