"""An MCPServer (official `mcp` SDK 2.x) whose tools are the contracts' methods: listed from the
descriptors rather than from Python functions, and called through a gateway (the kernel's router
in-process, or a kernel over gRPC), with the MCP client as principal. Resources (resources.py) and
prompts (prompts.py) are contract calls too, as the same principal; streaming tools report MCP
progress per message when the client sends a progress token; `logging/setLevel` chooses which of a
call's log notifications a session gets; a cancelled request cancels its gRPC call."""

from __future__ import annotations

import json
import time
import warnings
import weakref
from typing import Any

import grpc
import mcp_types as types
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import CallToolResult, TextContent
from mcp_types import Tool as MCPTool

from cortex.kernel import IDENTITY, bridge_caller, rpc_status

from . import resources
from .prompts import Prompts, arguments_of, render
from .tools import ToolSpec, run_tool

# Logging and resources/subscribe are deprecated in the 2026-07-28 protocol (SEP-2577) but are how
# every 2025-era client (editors today, the conformance suite) gets logs and updates: served for them.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=__name__)
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

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


class _Lowlevel:
    """What the name and identity helpers read, for a low-level handler's request context."""

    def __init__(self, ctx: Any):
        self.request_context, self.session = ctx, ctx.session


def _connection(session: Any) -> Any:
    """The client connection behind a per-request session proxy (what logging/setLevel and
    resources/subscribe are scoped to)."""
    return getattr(session, "_connection", session)


def _status_error(exc: grpc.RpcError) -> MCPError:
    code, details = rpc_status(exc)
    mcp_code = types.INVALID_PARAMS if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND) else types.INTERNAL_ERROR
    return MCPError(code=mcp_code, message=f"{code.name}: {details}", data={"grpc_status": code.name})



class ContractToolServer(MCPServer):
    def __init__(self, gateway: Any, tools: dict[str, ToolSpec], *, version: str, timeout: float | None,
                 transport: str, prompts: tuple = ()):
        super().__init__(name="cortex-os", version=version, instructions=INSTRUCTIONS, log_level="WARNING")
        self.gateway, self._tools, self.timeout, self.transport = gateway, tools, timeout, transport
        self._served = tuple(m.path for m in gateway.methods())
        self.rebuild = None  # set by build_server: the tools for the methods served now
        self._retired: dict[str, str] = {}  # tool name -> its method path, for tools withdrawn live
        self.prompts = Prompts(prompts)
        self._levels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection -> logging/setLevel
        self.subscriptions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection -> URIs
        low = self._lowlevel_server
        low.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self._set_level)
        low.add_request_handler("completion/complete", types.CompleteRequestParams, self._complete)
        low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, self._subscribe)
        low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, self._unsubscribe)

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
        who = self._who(context)
        log = self._logger(context)
        path, started = tool.method.path, time.monotonic()
        await log("debug", {"event": "call", "method": path})

        async def progress(done: float, total: float | None, message: str) -> None:
            await log("debug", {"event": "message", "method": path, "message": message})
            if context is not None:  # the SDK sends nothing when the client asked for no progress
                await context.report_progress(done, total, message)

        try:
            result = await run_tool(self.gateway, tool, arguments or {}, who, self.timeout, progress)
        except grpc.RpcError as exc:
            code, details = rpc_status(exc)
            await log("warning", {"event": "failed", "method": path, "code": code.name, "details": details})
            return _error(code.name, details)
        await log("info", {"event": "done", "method": path, "ms": round((time.monotonic() - started) * 1000, 1)})
        return CallToolResult(
            content=[TextContent(type="text", text=json.dumps(result, ensure_ascii=False))], structured_content=result
        )


    # -- who is asking, and what they hear ------------------------------------------------------------
    def _who(self, context: Any) -> Any:
        return bridge_caller("mcp", _client_name(context), self.transport, _identity(context))

    def _logger(self, context: Any):
        """A function sending a log notification about this request, when the session's level
        (logging/setLevel; "warning" until set) lets it through. 2026-07-28 clients opt in per
        request instead, which the SDK's session applies."""
        session = getattr(getattr(context, "request_context", None), "session", None)
        if session is None:
            async def nothing(level: str, data: Any) -> None:
                return None
            return nothing
        floor = LEVELS.index(self._levels.get(_connection(session), "warning"))
        request_id = context.request_context.request_id

        async def send(level: str, data: Any) -> None:
            if LEVELS.index(level) >= floor:
                await session.send_log_message(level=level, data=data, logger="cortex.mcp", related_request_id=request_id)
        return send

    async def _set_level(self, ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        self._levels[_connection(ctx.session)] = params.level
        return types.EmptyResult()

    # -- resources -------------------------------------------------------------------------------------
    async def list_resources(self) -> list[types.Resource]:
        return [types.Resource(uri=r.uri, name=r.name, description=r.description, mime_type="application/json")
                for r in resources.served(resources.RESOURCES, self.gateway)]

    async def list_resource_templates(self) -> list[types.ResourceTemplate]:
        return [types.ResourceTemplate(uri_template=t.uri_template, name=t.name, description=t.description)
                for t in resources.served(resources.TEMPLATES, self.gateway)]

    async def read_resource(self, uri: Any, context: Any = None) -> list[ReadResourceContents]:
        try:
            contents = await resources.read(self.gateway, str(uri), self._who(context), self.timeout)
        except resources.ResourceNotFound as exc:
            raise MCPError(code=types.INVALID_PARAMS, message=str(exc), data={"uri": str(uri)}) from None
        except grpc.RpcError as exc:
            raise _status_error(exc) from None
        return [ReadResourceContents(content=contents.text, mime_type=contents.mime_type, meta=contents.meta)]

    async def _subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        try:
            resources.parse(str(params.uri))
        except resources.ResourceNotFound as exc:
            raise MCPError(code=types.INVALID_PARAMS, message=str(exc), data={"uri": str(params.uri)}) from None
        self.subscriptions.setdefault(_connection(ctx.session), set()).add(str(params.uri))
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        self.subscriptions.get(_connection(ctx.session), set()).discard(str(params.uri))
        return types.EmptyResult()

    # -- prompts ---------------------------------------------------------------------------------------
    async def list_prompts(self) -> list[types.Prompt]:
        return [
            types.Prompt(name=p.name, description=p.description, arguments=[
                types.PromptArgument(name=a.name, description=a.description or None, required=a.required)
                for a in p.arguments])
            for p in self.prompts.specs(self.gateway).values()
        ]

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None, context: Any = None) -> types.GetPromptResult:
        spec = self.prompts.specs(self.gateway).get(name)
        if spec is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"no prompt {name!r}; prompts/list shows them")
        try:
            messages = await render(self.gateway, spec, arguments_of(spec, arguments), self._who(context), self.timeout)
        except grpc.RpcError as exc:
            raise _status_error(exc) from None
        return types.GetPromptResult(description=spec.description, messages=messages)

    # -- completion ------------------------------------------------------------------------------------
    async def _complete(self, ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        ref, prefix = params.ref, params.argument.value or ""
        if isinstance(ref, types.PromptReference):
            try:
                values = self.prompts.complete(self.gateway, ref.name, params.argument.name, prefix)
            except KeyError:
                raise MCPError(code=types.INVALID_PARAMS, message=f"no prompt {ref.name!r}; prompts/list shows them") from None
        else:
            try:
                values = await resources.complete_id(self.gateway, ref.uri, prefix, self._who(_Lowlevel(ctx)), self.timeout)
            except grpc.RpcError as exc:
                raise _status_error(exc) from None
        return types.CompleteResult(completion=types.Completion(values=values[:100], total=len(values),
                                                                has_more=len(values) > 100))


def _error(code: str, message: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{code}: {message}")],
        structured_content={"error": {"code": code, "message": message}},
        is_error=True,
    )
