"""Plans: canonical hashing, validation against the registry, `${goal}` and `${steps...}` references.

`${goal}` stands for the plan's goal, so that a plan taught for one goal serves another (the
goal's words are never searched for and replaced inside a request: "top" is not `top_k`).

A reference is `${steps.<id>.<path>}` where path walks the step's response as protobuf JSON with
field names as in the .proto: `results[0].memory.text`, and `[*]` maps over a list
(`results[*].memory.text` is the list of texts). A string that is only a reference takes the
value whole; a reference inside a longer string is replaced by its text (lists one item a line).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from google.protobuf import json_format

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb

REFERENCE = re.compile(r"\$\{steps\.([A-Za-z0-9_-]+)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[(?:\d+|\*)\])*)\}")
GOAL = "${goal}"
TOKEN = re.compile(r"\$\{goal\}|" + REFERENCE.pattern)  # either kind, in one left-to-right pass
PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\*)\]")
STEP_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_STEPS = 32


class PlanError(ValueError):
    """What is wrong with a plan, naming the step."""


def path_of(step: pb.Step | pb.StepRecord) -> str:
    """A step's method as the router names it: "/package.Service/Method"."""
    return "/" + step.method.strip("/")


def canonical(plan: pb.Plan) -> bytes:
    """Deterministic JSON of the plan without its hash: what the hash is taken over."""
    value = json_format.MessageToDict(plan, preserving_proto_field_name=True)
    value.pop("hash", None)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sealed(plan: pb.Plan) -> pb.Plan:
    plan.hash = hashlib.sha256(canonical(plan)).hexdigest()
    return plan


def references(value: Any) -> list[tuple[str, str]]:
    """(step id, path) of every reference inside a JSON value."""
    found: list[tuple[str, str]] = []
    if isinstance(value, str):
        found += REFERENCE.findall(value)
    elif isinstance(value, dict):
        for item in value.values():
            found += references(item)
    elif isinstance(value, list):
        for item in value:
            found += references(item)
    return found


def walk(value: Any, path: str) -> Any:
    for name, index in PATH_PART.findall(path):
        if name:
            if not isinstance(value, dict) or name not in value:
                raise KeyError(f"no field {name!r}")
            value = value[name]
        elif index == "*":
            if not isinstance(value, list):
                raise KeyError("[*] on something that is not a list")
            rest = path[path.index("[*]") + 3 :]
            return [walk(item, rest) for item in value]
        else:
            if not isinstance(value, list) or int(index) >= len(value):
                raise KeyError(f"no item [{index}]")
            value = value[int(index)]
    return value


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(_text(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def resolve(value: Any, outputs: dict[str, Any], goal: str = "") -> Any:
    """`value` with `${goal}` replaced by `goal` and every step reference by the referenced output.
    One pass: text a substitution brings in (a goal that reads "${steps...}") is never resolved."""
    if isinstance(value, dict):
        return {k: resolve(v, outputs, goal) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, outputs, goal) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> Any:
        return goal if match.group(0) == GOAL else walk(outputs[match.group(1)], match.group(2))

    whole = TOKEN.fullmatch(value)
    if whole:
        return substitute(whole)
    return TOKEN.sub(lambda m: _text(substitute(m)), value)


def order(plan: pb.Plan) -> list[list[pb.Step]]:
    """Steps in dependency levels (each level may run concurrently); PlanError on a cycle."""
    deps = {s.id: set(s.depends_on) | {ref for ref, _ in references(json.loads(s.request_json or "{}"))} for s in plan.steps}
    done: set[str] = set()
    levels = []
    remaining = list(plan.steps)
    while remaining:
        ready = [s for s in remaining if deps[s.id] <= done]
        if not ready:
            raise PlanError(f"the steps {', '.join(s.id for s in remaining)} depend on each other in a cycle")
        levels.append(ready)
        done |= {s.id for s in ready}
        remaining = [s for s in remaining if s.id not in done]
    return levels


def validate(plan: pb.Plan, method_of) -> None:
    """Raise PlanError naming the first problem: ids, methods, request fields, references.
    `method_of(path)` gives the registered method (with .input) or None."""
    if not plan.steps:
        raise PlanError("the plan has no steps")
    if len(plan.steps) > MAX_STEPS:
        raise PlanError(f"the plan has {len(plan.steps)} steps; at most {MAX_STEPS}")
    ids = [s.id for s in plan.steps]
    for step in plan.steps:
        if not STEP_ID.match(step.id):
            raise PlanError(f"step id {step.id!r}: use 1 to 32 letters, digits, '_' or '-'")
        if ids.count(step.id) > 1:
            raise PlanError(f"step id {step.id!r} is used twice")
        method = method_of(path_of(step))
        if method is None:
            raise PlanError(f"step {step.id}: {step.method!r} is not a method served by this kernel")
        if method.server_streaming or method.client_streaming:
            raise PlanError(f"step {step.id}: {step.method} streams; plan steps must be unary methods")
        try:
            request = json.loads(step.request_json or "{}")
        except json.JSONDecodeError as exc:
            raise PlanError(f"step {step.id}: request_json is not JSON ({exc})") from None
        for ref, path in references(request):
            if ref not in ids or ref == step.id:
                raise PlanError(f"step {step.id}: refers to step {ref!r}, which is not another step of the plan")
            if not PATH_PART.sub("", path) == "":
                raise PlanError(f"step {step.id}: bad reference path {path!r}")
        for dep in step.depends_on:
            if dep not in ids:
                raise PlanError(f"step {step.id}: depends on unknown step {dep!r}")
        try:  # references stand in for values: check the fields with them blanked out
            json_format.ParseDict(_blank(request), method.input(), ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            raise PlanError(
                f"step {step.id}: request_json does not fit {method.input.DESCRIPTOR.full_name}: {exc}"
            ) from None
    order(plan)


def _blank(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in ((k, _blank(v)) for k, v in value.items()) if v is not _DROP}
    if isinstance(value, list):
        return [v for v in (_blank(v) for v in value) if v is not _DROP]
    if isinstance(value, str) and REFERENCE.fullmatch(value):
        return _DROP
    return value


_DROP = object()
