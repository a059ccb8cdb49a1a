"""An MCPServer (official `mcp` SDK 2.x) whose tools are the contracts' methods: listed from the
descriptors rather than from Python functions, and called through a gateway (the kernel's router
in-process, or a kernel over gRPC), with the MCP client as principal."""

from __future__ import annotations

import json
from typing import Any

import grpc
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent
from mcp_types import Tool as MCPTool

from cortex.kernel import IDENTITY, bridge_caller, rpc_status

from .tools import ToolSpec, run_tool

INSTRUCTIONS = (
    "Cortex-OS: a local-first, governed second brain. memory_* tools store and search memories; "
    "cortex_plan / cortex_simulate / cortex_execute / cortex_replay plan and run governed multi-step work; "
    "cortex_generate runs the local model. Every call is checked by policy and audited."
)


def _client_name(context: Any) -> str:
    try:
        return context.session.client_params.client_info.name
    except AttributeError:
        return ""


def _identity(context: Any) -> Any:
    """The identity the kernel gave this HTTP request (cortex.kernel.asgi.Authenticate); None on
    stdio, where the bridge's own credential speaks for the editor that started it."""
    try:
        return context.request_context.request.scope.get(IDENTITY)
    except AttributeError:
        return None




class ContractToolServer(MCPServer):
    def __init__(self, gateway: Any, tools: dict[str, ToolSpec], *, version: str, timeout: float | None,
                 transport: str):
        super().__init__(name="cortex-os", version=version, instructions=INSTRUCTIONS, log_level="WARNING")
        self.gateway, self._tools, self.timeout, self.transport = gateway, tools, timeout, transport
        self._served = tuple(m.path for m in gateway.methods())
        self.rebuild = None  # set by build_server: the tools for the methods served now
        self._retired: dict[str, str] = {}  # tool name -> its method path, for tools withdrawn live

    @property
    def tools(self) -> dict[str, ToolSpec]:
        """The tools for what the kernel serves now (plugins may come and go while it runs)."""
        served = tuple(m.path for m in self.gateway.methods())
        if served != self._served and self.rebuild is not None:
            fresh = self.rebuild()
            self._retired.update({n: t.method.path for n, t in self._tools.items() if n not in fresh})
            self._tools, self._served = fresh, served
        return self._tools

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        tool = self.tools.get(name)
        return None if tool is None else tool.input_schema

    async def list_tools(self) -> list[MCPTool]:
        return [
            MCPTool(name=t.name, description=t.description, input_schema=t.input_schema, output_schema=t.output_schema)
            for t in self.tools.values()
        ]

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> CallToolResult:
        tool = self.tools.get(name)
        if tool is None and name in self._retired:  # its plugin was disabled while the kernel runs
            return _error("UNIMPLEMENTED", self.gateway.explain(self._retired[name]))
        if tool is None:
            return _error("NOT_FOUND", f"no tool {name!r}; tools/list shows what is exposed")
        who = bridge_caller("mcp", _client_name(context), self.transport, _identity(context))
        try:
            result = await run_tool(self.gateway, tool, arguments or {}, who, self.timeout)
        except grpc.RpcError as exc:
            code, details = rpc_status(exc)
            return _error(code.name, details)
        return CallToolResult(
            content=[TextContent(type="text", text=json.dumps(result, ensure_ascii=False))], structured_content=result
        )


def _error(code: str, message: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{code}: {message}")],
        structured_content={"error": {"code": code, "message": message}},
        is_error=True,
    )
