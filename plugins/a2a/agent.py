"""The A2A agent executor: a user message becomes one skill run, answered with one agent
message carrying a text part (for people) and a data part (the structured result)."""

from __future__ import annotations

from typing import Any

import grpc
from a2a.helpers import new_data_part, new_text_part
from a2a.helpers.proto_helpers import new_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.types import a2a_pb2
from google.protobuf import json_format

from cortex.kernel.sdk import IDENTITY, bridge_caller, rpc_status

from . import skills


def _metadata(context: RequestContext) -> dict[str, Any]:
    found: dict[str, Any] = {}
    message = context.message
    if message is not None and message.HasField("metadata"):
        found.update(json_format.MessageToDict(message.metadata))
    for part in message.parts if message is not None else ():
        if part.HasField("data"):
            data = json_format.MessageToDict(part.data)
            if isinstance(data, dict):
                found.update(data)
    return found


class IdentityContextBuilder(DefaultServerCallContextBuilder):
    """Hands the identity the kernel gave the request (cortex.kernel.sdk.asgi.Authenticate) to the
    executor."""

    def build(self, request):
        context = super().build(request)
        context.state["identity"] = request.scope.get(IDENTITY)
        return context


def _principal(context: RequestContext) -> Any:
    call = context.call_context
    identity = call.state.get("identity") if call is not None else None
    return bridge_caller("a2a", getattr(getattr(call, "user", None), "user_name", ""), "agent", identity)


class CortexAgentExecutor(AgentExecutor):
    def __init__(self, gateway: Any):
        self.gateway = gateway

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        metadata = _metadata(context)
        skill, text = skills.choose(context.get_user_input(), metadata)
        if not text and isinstance(metadata.get("text"), str):
            text = metadata["text"].strip()
        try:
            said, result = await skills.run(skill, text, self.gateway, _principal(context))
            data = {"skill": skill, "ok": True, "result": result}
        except skills.SkillError as exc:
            said, data = str(exc), {"skill": skill, "ok": False, "error": {"code": "INVALID_ARGUMENT", "message": str(exc)}}
        except grpc.RpcError as exc:
            code, details = rpc_status(exc)
            said = f"{code.name}: {details}"
            data = {"skill": skill, "ok": False, "error": {"code": code.name, "message": details}}
        reply = new_message(
            [new_text_part(said), new_data_part(data)],
            context_id=context.context_id,
            task_id=None,
            role=a2a_pb2.ROLE_AGENT,
        )
        await event_queue.enqueue_event(reply)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError("skills run to completion; there is nothing to cancel")
