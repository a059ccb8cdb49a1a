"""Bounds declared in the contracts, checked before any provider sees a request (protovalidate).

A contract declares its bounds in its .proto with buf.validate rules (`import
"buf/validate/validate.proto"`; docs/plugins/README.md shows how): string lengths, list sizes,
numeric ranges. The router calls `check_request` at the start of every call, from outside or
between plugins, and a request that breaks a rule ends there with INVALID_ARGUMENT naming the
field, its value and the rule; no provider is asked, so nothing counts against a circuit.

On the hot path: whether a message type has any rules at all (its fields, its nested messages',
its map values') is worked out once per type; a type without rules (any contract that declares
none, a third party's included) costs one dict lookup. The validator is built once, on the first
request that has rules.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import unknown_fields
from google.protobuf.descriptor import Descriptor

from ..call import RouterError

if TYPE_CHECKING:
    import protovalidate

    from ..method import MethodInfo

# buf/validate/validate.proto: (buf.validate.message), (buf.validate.oneof), (buf.validate.field)
# all have this number, on MessageOptions, OneofOptions and FieldOptions
RULES_EXTENSION = 1159
RULES_PACKAGE = "buf.validate."
MAX_LISTED = 3  # violations named in one error; the rest are counted
MAX_SHOWN = 60  # characters of a string value shown back

_has_rules: dict[type, bool] = {}  # message class -> whether validating it can find anything
_validator: protovalidate.Validator | None = None
_protovalidate: Any = None  # the module, once imported


def check_request(method: MethodInfo, request: Any) -> None:
    """Raise RouterError(INVALID_ARGUMENT) when `request` breaks a buf.validate rule of its contract."""
    if request is None:  # a client-streaming call: no single request to check
        return
    cls = type(request)
    has = _has_rules.get(cls)
    if has is None:
        has = _has_rules[cls] = has_rules(cls.DESCRIPTOR)
    if not has:
        return
    violations = _violations(request)
    if violations:
        raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, explain(violations, request.DESCRIPTOR.full_name))


def has_rules(descriptor: Descriptor) -> bool:
    """Whether a message type, or any message it holds, declares buf.validate rules."""
    seen: set[str] = set()
    stack = [descriptor]
    while stack:
        message = stack.pop()
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        if _declares(message.GetOptions()) or any(_declares(o.GetOptions()) for o in message.oneofs if o.has_options):
            return True
        for field in message.fields:
            if field.has_options and _declares(field.GetOptions()):
                return True
            if field.message_type is not None:
                stack.append(field.message_type)  # map entries too: their value field's message
    return False


def _declares(options: Any) -> bool:
    if any(f.is_extension and f.full_name.startswith(RULES_PACKAGE) for f, _ in options.ListFields()):
        return True
    # (an options message parsed before buf/validate/validate.proto was in the pool keeps them unknown)
    # (iterable by __getitem__ and __len__, which typeshed's stub declares, but not __iter__)
    return any(u.field_number == RULES_EXTENSION for u in unknown_fields.UnknownFieldSet(options))  # type: ignore[attr-defined]


def validator() -> protovalidate.Validator:
    """The one protovalidate validator (it caches each message type's compiled rules)."""
    global _validator, _protovalidate
    if _validator is None:
        import protovalidate  # takes a while (its own protobuf runtime): only once a request has rules

        _protovalidate, _validator = protovalidate, protovalidate.Validator()
    return _validator


def _violations(request: Any) -> list[Any]:
    check = validator()
    try:
        return check.collect_violations(request)
    except _protovalidate.CompilationError as exc:  # the contract's rules are wrong, not the request
        raise RouterError(
            grpc.StatusCode.INTERNAL,
            f"the buf.validate rules of {request.DESCRIPTOR.full_name} do not compile ({exc}); fix the contract",
        ) from None
    except _protovalidate.EvaluationError as exc:  # a rule could not be judged on this value
        raise RouterError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{request.DESCRIPTOR.full_name} cannot be checked: {exc}"
        ) from None


# -- the error's words ------------------------------------------------------------------------------
def explain(violations: list[Any], message_type: str) -> str:
    """One line a person can act on: each broken rule, with the field's path and value."""
    parts = [_sentence(v) + f" ({v.proto.rule_id or 'rule'}) in {message_type}" for v in violations[:MAX_LISTED]]
    more = len(violations) - MAX_LISTED
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def field_path(violation: Any) -> str:
    """`filter.tags_all[2]`, `metadata["k"]`: where in the request the rule broke."""
    out = ""
    for element in violation.proto.field.elements:
        out += ("." if out else "") + element.field_name
        subscript = element.subscript
        if subscript is not None:
            out += f"[{subscript.value!r}]" if isinstance(subscript.value, str) else f"[{subscript.value}]"
    return out


_RANGE = re.compile(r"than (?:or equal to )?(\S+) (?:and|or) (?:less|greater) than (?:or equal to )?(\S+)$")


def _sentence(violation: Any) -> str:
    proto = violation.proto
    rule, value, bound = proto.rule_id, violation.field_value, violation.rule_value
    path = field_path(violation) or "the request"
    if violation.proto.for_key:
        path += " (a key)"
    words = proto.message or "breaks a rule"
    kind = rule.rpartition(".")[2]
    if kind in ("max_len", "min_len", "len") and isinstance(value, str):
        limit = {"max_len": "the limit is", "min_len": "it must be at least", "len": "it must be exactly"}[kind]
        return f"{path} is {len(value)} characters; {limit} {bound}"
    if kind in ("max_bytes", "min_bytes") and isinstance(value, (str, bytes)):
        size = len(value.encode() if isinstance(value, str) else value)
        return f"{path} is {size} bytes; {'the limit is' if kind == 'max_bytes' else 'it must be at least'} {bound}"
    if kind in ("max_items", "min_items", "max_pairs", "min_pairs") and hasattr(value, "__len__"):
        what = "items" if kind.endswith("items") else "entries"
        if kind.startswith("max"):
            return f"{path} has {len(value)} {what}, at most {bound} are allowed"
        return f"{path} has {len(value)} {what}, at least {bound} are needed"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        bound_shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
        if kind == "lte":
            return f"{path} is {shown}; the limit is {bound_shown}"
        if kind in ("lt", "gte", "gt"):
            side = {"lt": "less than", "gte": "at least", "gt": "more than"}[kind]
            return f"{path} is {shown}; it must be {side} {bound_shown}"
        if kind in ("gte_lte", "gt_lt", "gte_lt", "gt_lte") and (span := _RANGE.search(words)):
            return f"{path} must be between {span.group(1)} and {span.group(2)}, got {shown}"
        if kind == "finite":
            return f"{path} is {shown}; it must be a finite number"
        return f"{path} is {shown}; it {words}"
    if kind == "pattern" and isinstance(value, str):
        return f"{path} {_shown(value)} does not match {bound}"
    if isinstance(value, str):
        return f"{path} {_shown(value)} {words}"
    return f"{path} {words}"


def _shown(value: str) -> str:
    return repr(value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "...")


__all__ = ["check_request", "explain", "field_path", "has_rules", "validator"]
