"""An MCPServer (official `mcp` SDK 2.x) whose tools are the contracts' methods: listed from the
descriptors rather than from Python functions, and called through a gateway (the kernel's router
in-process, or a kernel over gRPC), with the MCP client as principal. Resources (resources.py) and
prompts (prompts.py) are contract calls too, as the same principal; streaming tools report MCP
progress per message when the client sends a progress token; `logging/setLevel` chooses which of a
call's log notifications a session gets; a cancelled request cancels its gRPC call."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import mcp_types as types
import structlog
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import CallToolResult, TextContent
from mcp_types import Tool as MCPTool

from cortex.kernel.sdk import IDENTITY, bridge_caller, log_tap, rpc_status

from . import resources
from .prompts import Prompts, arguments_of, render
from .tools import ToolSpec, run_tool
from .updates import Subscriptions, changed_uris, watch

# Logging and resources/subscribe are deprecated in the 2026-07-28 protocol (SEP-2577) but are how
# every 2025-era client (editors today, the conformance suite) gets logs and updates: served for them.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=__name__)
_log = structlog.get_logger("cortex.mcp")
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
STRUCTLOG_LEVELS = {"warn": "warning", "exception": "error", "fatal": "critical"}
KERNEL_LOG_QUEUE = 256  # a call's kernel log lines waiting to be sent; beyond it, lines are dropped

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
    """The identity the kernel gave this HTTP request (cortex.kernel.sdk.asgi.Authenticate); None on
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
        self.watched = Subscriptions()  # resources/subscribe, per connection
        self._watch: asyncio.Task | None = None
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
            async with _kernel_logs(log):
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
        """Subscribe to a resource the client may read now: it is read once, as the client, so an
        unknown id or a policy's deny is the answer here rather than silence later."""
        await self.read_resource(params.uri, _Lowlevel(ctx))
        self.watched.add(_connection(ctx.session), str(params.uri))
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        self.watched.remove(_connection(ctx.session), str(params.uri))
        return types.EmptyResult()

    # -- what changed ----------------------------------------------------------------------------------
    def start_watching(self) -> None:
        """Follow the event bus (updates.py) while this server runs, for update notifications."""
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(watch(self.gateway, self._who(None), self.changed))

    async def stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None

    async def changed(self, event: Any) -> None:
        """Tell who subscribed that a resource changed: 2025-era clients that sent resources/subscribe,
        each on its connection; 2026-07-28 clients through the SDK's subscriptions/listen streams."""
        for connection, uri in self.watched.matching(event.type, event.subject):
            try:
                await connection.send_resource_updated(uri)
            except Exception as exc:  # noqa: BLE001 - a closed or broken connection must not stop the others
                _log.info("mcp.update_not_sent", uri=uri, error=repr(exc))
        for uri in changed_uris(event.type, event.subject):
            await self._subscriptions.publish(ResourceUpdated(uri=uri))

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


@asynccontextmanager
async def _kernel_logs(send: Callable[[str, Any], Awaitable[None]]) -> AsyncIterator[None]:
    """Forward, as the call's log notifications, what the kernel logs while the block runs (the
    router's failed calls, a provider's warnings, a Cerebrum step's nested calls): in-process only,
    since a kernel reached over gRPC keeps its logs."""
    queue: asyncio.Queue = asyncio.Queue(KERNEL_LOG_QUEUE)
    done, listening = object(), [True]

    def receive(event: dict[str, Any]) -> None:
        if not listening[0]:  # a task the call started outlives it, and keeps the tap: ignore it
            return
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            pass  # the client reads slower than the kernel logs: the log on stderr has every line

    async def forward() -> None:
        while (event := await queue.get()) is not done:
            level = str(event.pop("level", "info"))
            level = STRUCTLOG_LEVELS.get(level, level if level in LEVELS else "info")
            await send(level, {"logger": "cortex.kernel", **json.loads(json.dumps(event, default=str))})

    forwarder = asyncio.get_running_loop().create_task(forward())  # outside the tap: it logs nothing back
    try:
        with log_tap(receive):
            yield
    finally:
        listening[0] = False
        await queue.put(done)
        await asyncio.gather(forwarder, return_exceptions=True)


def _error(code: str, message: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{code}: {message}")],
        structured_content={"error": {"code": code, "message": message}},
        is_error=True,
    )
