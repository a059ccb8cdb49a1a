"""Contract methods as MCP tools: names, descriptions and JSON Schemas generated from the
descriptors, which methods are exposed from config (globs), and the call itself (JSON in,
structured JSON out, gRPC errors as tool errors)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from cortex.kernel import MethodInfo
from cortex.kernel.sdk import describe, parse_json, standalone, to_json

# tool-name prefixes of the built-in contracts; other services use their own name, snake_cased
PREFIXES = {
    "cortex.memories.v1.MemoryService": "memory",
    "cortex.cerebrum.v1.CerebrumService": "cortex",
    "cortex.models.v1.ModelService": "cortex",
    "cortex.governance.v1.GovernanceService": "governance",
    "cortex.kernel.v1.KernelService": "kernel",
    "cortex.events.v1.EventService": "events",
}
DEFAULT_EXPOSE = ["*"]
# watching a live event stream cannot end as a tool result; subscribe over gRPC or HTTP instead
DEFAULT_HIDE = ["cortex.events.v1.EventService/Subscribe"]
MAX_STREAM_MESSAGES = 1000


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def tool_name(method: MethodInfo) -> str:
    service = method.service.rsplit(".", 1)[-1]
    prefix = PREFIXES.get(method.service) or snake(service.removesuffix("Service")) or "cortex"
    return f"{prefix}_{snake(method.name)}"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    method: MethodInfo
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


def _matches(method: MethodInfo, name: str, patterns: list[str]) -> bool:
    keys = (f"{method.service}/{method.name}", name)
    return any(fnmatch.fnmatchcase(key, p) for p in patterns for key in keys)


def build_tools(methods: list[MethodInfo], expose: list[str], hide: list[str]) -> dict[str, ToolSpec]:
    """Tools for the methods matching `expose` and not `hide` (globs over "package.Service/Method"
    or tool names)."""
    tools: dict[str, ToolSpec] = {}
    for method in sorted(methods, key=lambda m: m.path):
        name = tool_name(method)
        if not _matches(method, name, expose) or _matches(method, name, hide):
            continue
        if name in tools:  # two services map to one name: qualify the later one
            name = f"{snake(method.service.replace('.', '_'))}_{snake(method.name)}"
        output = standalone(method.output.DESCRIPTOR)
        description = describe(method)
        if method.server_streaming:
            output = {
                "type": "object",
                "properties": {"messages": {"type": "array", "items": {k: v for k, v in output.items() if k != "$defs"}}},
                **({"$defs": output["$defs"]} if "$defs" in output else {}),
            }
            description += " (Streams: the result lists every message in order.)"
        tools[name] = ToolSpec(name, method, description, standalone(method.input.DESCRIPTOR), output)
    return tools


def progress_of(message: dict[str, Any], count: int) -> tuple[float, float | None, str]:
    """(progress, total, text) for a streamed message: a batch's done/total when it has them
    (Reindex), else the messages so far; the text names a step as it ran (Execute)."""
    done, total = message.get("done"), message.get("total")
    if done is not None and total is not None:
        return float(done), float(total), f"{done} of {total}"
    step = message.get("step")
    if isinstance(step, dict) and "step_id" in step:
        state = str(step.get("state", "")).removeprefix("STATE_").lower()
        return float(count), None, f"step {step['step_id']} {state}".strip()
    if "summary" in message:
        return float(count), None, f"finished: {message['summary'].get('status', '')}".strip()
    return float(count), None, f"message {count}"


async def run_tool(gateway: Any, tool: ToolSpec, arguments: dict[str, Any], principal: Any, timeout: float | None,
                   progress: Any = None) -> dict[str, Any]:
    """Call the tool's method; returns its structured result. A streaming method's messages are
    reported to `progress(done, total, text)` as they arrive. Raises grpc.RpcError."""
    request = parse_json(tool.method, {} if arguments is None else arguments)  # MCP may omit arguments
    if not tool.method.server_streaming:
        return to_json(await gateway.unary(tool.method, request, principal, timeout=timeout))
    messages = []
    async for message in gateway.stream(tool.method, request, principal, timeout=timeout):
        messages.append(to_json(message))
        if progress is not None:
            await progress(*progress_of(messages[-1], len(messages)))
        if len(messages) >= MAX_STREAM_MESSAGES:
            break
    return {"messages": messages}
