"""The agent card: who this agent is, where to reach it, and its skills."""

from __future__ import annotations

from a2a.types import a2a_pb2

from cortex.kernel.sdk import cortex_version

from .skills import SKILLS


def agent_card(name: str, url: str) -> a2a_pb2.AgentCard:
    return a2a_pb2.AgentCard(
        name=name,
        description="A local-first, governed second brain: remembers, recalls, plans and executes under policy, "
        "with signed, replayable traces.",
        version=cortex_version(),
        supported_interfaces=[a2a_pb2.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=a2a_pb2.AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            a2a_pb2.AgentSkill(id=s.id, name=s.name, description=s.description, tags=["cortex", s.id],
                               examples=list(s.examples))
            for s in SKILLS
        ],
    )
