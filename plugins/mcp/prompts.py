"""MCP prompts: a few that make a second brain useful in an editor, each filled in by governed
contract calls as the MCP client, and the prompts an admin writes in config.

    recall_context(task)     the memories that matter for a task, attached as resources
    plan_goal(goal)          Cerebrum's plan for a goal, to discuss or run (cortex_execute)
    what_changed(since)      memories stored since 1h / 24h / 7d ago

    [[plugins.mcp.prompts]]              # text with {argument} placeholders
    name = "weekly_review"
    description = "Review my week"
    text = "Help me review my week, focusing on {focus}."
    arguments = [{ name = "focus", required = true, values = ["work", "home"] }]
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc

from cortex.kernel import RouterError

from .resources import MEMORIES, SEARCH_TOP_K, TRACES, call, memory_uri

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
MAX_ARGUMENT = 2000


@dataclass(frozen=True)
class Argument:
    name: str
    description: str = ""
    required: bool = False
    values: tuple[str, ...] = ()  # what completion offers


@dataclass(frozen=True)
class PromptSpec:
    name: str
    description: str
    arguments: tuple[Argument, ...]
    service: str = ""  # the contract it needs, "" for none
    text: str = ""  # a config prompt's template


BUILTIN = (
    PromptSpec("recall_context", "Recall what I know that matters for a task: the best-matching memories, attached.",
               (Argument("task", "What you are about to do", True),), MEMORIES),
    PromptSpec("plan_goal", "Plan a goal with Cerebrum: the steps it would run, to discuss or run with cortex_execute.",
               (Argument("goal", "What you want done", True),), TRACES),
    PromptSpec("what_changed", "What I have stored lately: the memories since a time.",
               (Argument("since", "How far back: 1h, 24h (default) or 7d", False, tuple(SINCE)),), MEMORIES),
)


def from_config(entries: Any) -> tuple[PromptSpec, ...]:
    """The [[plugins.mcp.prompts]] tables, checked; ValueError saying which one is wrong."""
    if entries is None:
        return ()
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("[plugins.mcp] prompts must be a list of tables ([[plugins.mcp.prompts]])")
    specs = []
    for i, entry in enumerate(entries):
        where = f"[[plugins.mcp.prompts]] #{i + 1}"
        unknown = set(entry) - {"name", "description", "text", "arguments"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; use name, description, text, arguments")
        name, text = entry.get("name"), entry.get("text")
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"{where}: name must be a word of letters, digits, _ or - (got {name!r})")
        if not isinstance(text, str) or not text:
            raise ValueError(f"{where} ({name}): text is required")
        arguments = []
        for arg in entry.get("arguments", []):
            if not isinstance(arg, dict) or not isinstance(arg.get("name"), str) or not NAME.match(arg["name"]):
                raise ValueError(f"{where} ({name}): each argument is a table with a name")
            values = arg.get("values", [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{where} ({name}): argument {arg['name']!r}: values must be a list of strings")
            arguments.append(Argument(arg["name"], str(arg.get("description", "")), bool(arg.get("required", False)),
                                      tuple(values)))
        specs.append(PromptSpec(name, str(entry.get("description", name)), tuple(arguments), text=text))
    names = [s.name for s in specs]
    clash = {n for n in names if names.count(n) > 1} | (set(names) & {s.name for s in BUILTIN})
    if clash:
        raise ValueError(f"[[plugins.mcp.prompts]]: names {sorted(clash)} are used twice (or by a built-in prompt)")
    return tuple(specs)


def arguments_of(spec: PromptSpec, given: dict[str, str] | None) -> dict[str, str]:
    """The arguments, checked: INVALID_ARGUMENT naming a missing, unknown or oversized one."""
    given = dict(given or {})
    known = {a.name for a in spec.arguments}
    unknown = set(given) - known
    if unknown:
        raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"prompt {spec.name!r} has no arguments {sorted(unknown)}; "
                          f"it takes {sorted(known) or 'none'}")
    for arg in spec.arguments:
        value = given.get(arg.name, "")
        if arg.required and not value.strip():
            raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"prompt {spec.name!r} needs {arg.name!r}")
        if len(value) > MAX_ARGUMENT:
            raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"{arg.name!r} is longer than {MAX_ARGUMENT} characters")
    return given


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": {"type": "text", "text": text}}


def _memory_message(memory: dict[str, Any]) -> dict[str, Any]:
    resource = {"uri": memory_uri(memory["id"]), "mimeType": "text/plain", "text": memory.get("text", "")}
    return {"role": "user", "content": {"type": "resource", "resource": resource}}


async def render(gateway: Any, spec: PromptSpec, args: dict[str, str], who: Any, timeout: float | None) -> list[dict]:
    """The prompt's messages; raises grpc.RpcError from the calls it makes."""
    if spec.text:
        return [_user(re.sub(r"\{([A-Za-z][A-Za-z0-9_-]*)\}", lambda m: args.get(m.group(1), m.group(0)), spec.text))]
    if spec.name == "recall_context":
        task = args["task"]
        found = await call(gateway, f"{MEMORIES}/Search", {"query": task, "top_k": SEARCH_TOP_K}, who, timeout)
        memories = [r["memory"] for r in found.get("results", [])]
        head = (f"I am about to: {task}\n\nHere is what I remember that may matter ({len(memories)} memories, "
                "best match first). Use what is relevant, say which memory you relied on, and ask when something is missing.")
        return [_user(head), *(_memory_message(m) for m in memories)]
    if spec.name == "plan_goal":
        planned = await call(gateway, f"{TRACES}/Plan", {"goal": args["goal"]}, who, timeout)
        return [_user(f"Goal: {args['goal']}\n\nCortex-OS planned these steps (run them with the cortex_execute tool, "
                      f"passing this plan):\n\n{json.dumps(planned.get('plan', {}), indent=2)}\n\n"
                      "Check the plan with me before running it: what would you change?")]
    since = args.get("since") or "24h"
    if since not in SINCE:
        raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, f"since must be one of {', '.join(SINCE)} (got {since!r})")
    after = datetime.fromtimestamp(time.time() - SINCE[since], tz=UTC).isoformat().replace("+00:00", "Z")
    listed = await call(gateway, f"{MEMORIES}/List", {"filter": {"created_after": after}, "page_size": 100}, who, timeout)
    memories = listed.get("memories", [])
    return [_user(f"Here is what I stored in the last {since} ({len(memories)} memories). Summarize what changed "
                  "and what needs my attention."), *(_memory_message(m) for m in memories)]


@dataclass
class Prompts:
    """The prompts this bridge offers: built-in ones whose contract is served, then config ones."""

    configured: tuple[PromptSpec, ...] = field(default_factory=tuple)

    def specs(self, gateway: Any) -> dict[str, PromptSpec]:
        services = {m.service for m in gateway.methods()}
        return {s.name: s for s in (*BUILTIN, *self.configured) if not s.service or s.service in services}

    def complete(self, gateway: Any, name: str, argument: str, prefix: str) -> list[str]:
        spec = self.specs(gateway).get(name)
        if spec is None:
            raise KeyError(name)
        for arg in spec.arguments:
            if arg.name == argument:
                return [v for v in arg.values if v.startswith(prefix)]
        return []
