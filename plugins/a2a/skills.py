"""What the A2A agent can do, each skill one or two contract calls through the kernel: remember
(MemoryService.Store), recall (MemoryService.Search), plan (CerebrumService.Plan) and execute
(CerebrumService.Plan, then Execute). The calling agent is the principal, so policy applies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cortex.contracts.cerebrum.v1 import cerebrum_pb2
from cortex.contracts.memories.v1 import memories_pb2
from cortex.kernel.sdk import to_json

MEMORIES = "/cortex.memories.v1.MemoryService"
CEREBRUM = "/cortex.cerebrum.v1.CerebrumService"


@dataclass(frozen=True)
class Skill:
    id: str
    name: str
    description: str
    examples: tuple[str, ...]


SKILLS = [
    Skill("remember", "Remember", "Store a note in Cortex-OS's long-term memory; the text is the note.",
          ("remember: the staging database moved to host db-2",)),
    Skill("recall", "Recall", "Search the memories by meaning and words; the text is the query. "
          "The reply lists the best matches with scores.", ("recall: where is the staging database?",)),
    Skill("plan", "Plan", "Turn a goal into a governed plan over Cortex-OS's contracts, without running it.",
          ("plan: summarise what I know about the staging database",)),
    Skill("execute", "Execute", "Plan a goal and run the plan under policy, with a full, replayable trace.",
          ("execute: remember that the release is on Friday",)),
]
SKILL_IDS = {s.id for s in SKILLS}
DEFAULT_SKILL = "recall"


def choose(text: str, metadata: dict[str, Any]) -> tuple[str, str]:
    """(skill, argument): from metadata {"skill": ...}, else a "skill: text" prefix, else recall."""
    skill = str(metadata.get("skill", "")).strip().lower()
    if not skill:
        head, sep, rest = text.partition(":")
        if sep and head.strip().lower() in SKILL_IDS:
            skill, text = head.strip().lower(), rest
    return (skill or DEFAULT_SKILL), text.strip()


class SkillError(Exception):
    pass


async def run(skill: str, text: str, gateway: Any, principal: Any) -> tuple[str, dict[str, Any]]:
    """`principal`: the caller, a name or an Identity (see cortex.kernel.sdk.bridge.bridge_caller)."""
    """Run one skill; returns (a sentence for people, the structured result). Raises
    SkillError for bad input and grpc.RpcError when a call fails (denied, unavailable, ...)."""
    if skill not in SKILL_IDS:
        raise SkillError(f"unknown skill {skill!r}; this agent offers {', '.join(sorted(SKILL_IDS))}")
    if not text:
        raise SkillError(f"the {skill} skill needs text: send 'skill: text' or the text with metadata skill={skill}")
    async def call(path: str, request: Any) -> Any:
        method = gateway.method(path)
        if method is None:
            raise SkillError(f"{path} is not served by this kernel (is its plugin disabled?)")
        return await gateway.unary(method, request, principal, timeout=300)

    if skill == "remember":
        reply = await call(f"{MEMORIES}/Store", memories_pb2.StoreRequest(text=text, source=getattr(principal, "principal", principal)))
        said = "Remembered." if reply.created else "I already knew that."
        return f"{said} (memory {reply.id})", to_json(reply)
    if skill == "recall":
        reply = await call(f"{MEMORIES}/Search", memories_pb2.SearchRequest(query=text, top_k=5))
        if not reply.results:
            return "Nothing in memory matches that.", to_json(reply)
        lines = [f"- {r.memory.text} (score {r.score:.3f})" for r in reply.results]
        return "\n".join(lines), to_json(reply)
    plan = await call(f"{CEREBRUM}/Plan", cerebrum_pb2.PlanRequest(goal=text))
    if skill == "plan":
        steps = [f"{s.id}: {s.method}" for s in plan.plan.steps]
        return f"A plan of {len(steps)} step(s): " + "; ".join(steps), to_json(plan)
    execute = gateway.method(f"{CEREBRUM}/Execute")
    if execute is None:
        raise SkillError(f"{CEREBRUM}/Execute is not served by this kernel")
    events = [
        to_json(event)
        async for event in gateway.stream(execute, cerebrum_pb2.ExecuteRequest(plan=plan.plan), principal, timeout=600)
    ]
    summary = events[-1].get("summary", {}) if events else {}
    said = (f"Executed {len(plan.plan.steps)} step(s): {summary.get('status', 'no summary')}, "
            f"trace {summary.get('trace_id', '?')}.")
    return said, {"plan": to_json(plan), "events": events}
