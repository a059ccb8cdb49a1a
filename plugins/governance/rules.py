"""Policy rules: parsed from TOML, compiled once, evaluated per call.

A policy file holds `[[rule]]` tables:

    [[rule]]
    id = "no-cloud-at-night"
    description = "Remote models are off limits outside office hours"
    effect = "deny"                       # allow | deny | ask
    services = ["cortex.models.v1.*"]     # globs; absent = any
    methods = ["Generate*"]
    principals = ["mcp:*"]
    provider = "remote"                   # local | remote | any
    fields = { local_only = "true" }      # request fields that must equal these (as text)
    labels = ["private"]                  # the call carries at least one of these labels
    privacy_mode = true                   # only when the kernel's privacy mode is on (or off)
    not_before = 2026-01-01T00:00:00Z     # active window (RFC 3339)
    not_after = 2027-01-01T00:00:00Z
    overridable = false                   # a deny that yields to a matching allow rule

Decision: any matching deny wins; else any matching ask asks (the call waits for a person's
approval: approvals.py, gate.py; an allow rule does not bypass it); else any matching allow allows;
else a matching overridable deny denies; else the configured default applies. A deny or an ask
naming whoever acted for the principal (a plan step's plugin:cerebrum) holds as if it named the
principal; an allow names the principal only.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cortex.contracts.governance.v1 import governance_pb2 as pb

ALLOW, DENY, ASK = pb.EFFECT_ALLOW, pb.EFFECT_DENY, pb.EFFECT_ASK
EFFECTS = {"allow": ALLOW, "deny": DENY, "ask": ASK}
LOCALITIES = {"any": pb.LOCALITY_UNSPECIFIED, "local": pb.LOCALITY_LOCAL, "remote": pb.LOCALITY_REMOTE}
FIELDS = {
    "id", "description", "effect", "services", "methods", "principals", "provider", "fields", "labels",
    "privacy_mode", "not_before", "not_after", "overridable",
}
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


class PolicyError(ValueError):
    """A policy document problem, naming the file and line."""

    def __init__(self, message: str, source: str = "", line: int | None = None):
        self.source, self.line = source, line
        where = f"{source}:{line}: " if source and line else f"{source}: " if source else ""
        super().__init__(where + message)


@dataclass(frozen=True)
class CallFacts:
    """What a rule can look at. `fields` is computed only if a candidate rule needs it."""

    service: str
    method: str
    principal: str
    provider: str
    provider_local: bool
    privacy_mode: bool
    labels: frozenset[str] = frozenset()
    actor: str = ""  # who acted for `principal` (gateways, bridges, plugins), outermost first, ", "-joined
    fields: Callable[[], dict[str, str]] | dict[str, str] = field(default_factory=dict)

    @property
    def actors(self) -> tuple[str, ...]:
        """Who acted for the principal, outermost first (kernel's Call.actors)."""
        return tuple(self.actor.split(", ")) if self.actor else ()

    def field_values(self) -> dict[str, str]:
        return self.fields() if callable(self.fields) else self.fields


def _line_of(text: str, key: str, start: int = 1) -> int | None:
    """The line where `key = ...` (or a [key] header) is written, from line `start` on."""
    pattern = re.compile(rf"^\s*(\[\[?\s*)?{re.escape(key)}\s*(=|\]|\.)")
    for number, line in enumerate(text.splitlines()[start - 1 :], start=start):
        if pattern.match(line):
            return number
    return None


Fail = Callable[..., PolicyError]  # fail(message, key) -> PolicyError pointing at key's line


def _as_list(value: Any, name: str, fail: Fail) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"'{name}' must be a list of strings", name)
    return value


def _as_time(value: Any, name: str, fail: Fail) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise fail(f"'{name}' needs a time zone, e.g. 2026-01-01T00:00:00Z", name)
        return value.isoformat()
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise fail(f"'{name}' must be an RFC 3339 time, got {value!r}", name) from None
        if parsed.tzinfo is None:
            raise fail(f"'{name}' needs a time zone, e.g. 2026-01-01T00:00:00Z", name)
        return parsed.isoformat()
    raise fail(f"'{name}' must be an RFC 3339 time", name)


def rule_from_table(table: dict[str, Any], source: str, fail: Fail) -> pb.Rule:
    unknown = sorted(set(table) - FIELDS)
    if unknown:
        raise fail(f"unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(FIELDS))}", unknown[0])
    rule_id = table.get("id")
    if not isinstance(rule_id, str) or not ID_PATTERN.match(rule_id):
        raise fail("every rule needs an 'id' (letters, digits, and _ . : / -)", "id")
    effect = table.get("effect")
    if effect not in EFFECTS:
        raise fail(f"rule {rule_id}: 'effect' must be \"allow\", \"deny\" or \"ask\", got {effect!r}", "effect")
    provider = table.get("provider", "any")
    if provider not in LOCALITIES:
        raise fail(f"rule {rule_id}: 'provider' must be local, remote or any", "provider")
    fields = table.get("fields", {})
    if not isinstance(fields, dict) or not all(isinstance(v, (str, bool, int, float)) for v in fields.values()):
        raise fail(f"rule {rule_id}: 'fields' must be a table of field = value", "fields")
    privacy = table.get("privacy_mode")
    if privacy is not None and not isinstance(privacy, bool):
        raise fail(f"rule {rule_id}: 'privacy_mode' must be true or false", "privacy_mode")
    overridable = table.get("overridable", False)
    if not isinstance(overridable, bool):
        raise fail(f"rule {rule_id}: 'overridable' must be true or false", "overridable")
    return pb.Rule(
        id=rule_id,
        description=str(table.get("description", "")),
        effect=EFFECTS[effect],
        services=_as_list(table.get("services", []), "services", fail),
        methods=_as_list(table.get("methods", []), "methods", fail),
        principals=_as_list(table.get("principals", []), "principals", fail),
        provider=LOCALITIES[provider],
        fields={k: _text(v) for k, v in fields.items()},
        labels=_as_list(table.get("labels", []), "labels", fail),
        privacy_mode="" if privacy is None else _text(privacy),
        not_before=_as_time(table["not_before"], "not_before", fail) if "not_before" in table else "",
        not_after=_as_time(table["not_after"], "not_after", fail) if "not_after" in table else "",
        overridable=overridable,
        source=source,
    )


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def parse_policy(text: str, source: str) -> list[pb.Rule]:
    """Rules from a policy document; PolicyError (with the line) on any mistake."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        if line is None:
            match = re.search(r"line (\d+)", str(exc))
            line = int(match.group(1)) if match else None
        raise PolicyError(f"invalid TOML: {exc}", source, line) from None
    extra = set(doc) - {"rule"}
    if extra:
        name = sorted(extra)[0]
        raise PolicyError(
            f"unknown top-level key '{name}'; a policy file holds [[rule]] tables", source, _line_of(text, name)
        )
    tables = doc.get("rule", [])
    if not isinstance(tables, list):
        raise PolicyError("'rule' must be an array of tables: write [[rule]]", source, _line_of(text, "rule"))
    return rules_from_tables(tables, source, text)


def rules_from_tables(tables: list[Any], source: str, text: str = "") -> list[pb.Rule]:
    rules, seen = [], set()
    starts = [i for i, line in enumerate(text.splitlines(), start=1) if line.strip() == "[[rule]]"]
    for index, table in enumerate(tables):
        start = starts[index] if index < len(starts) else None

        def fail(message: str, key: str | None = None, _start=start) -> PolicyError:
            # point at the offending key when we can, else at the rule's header
            line = _line_of(text, key, _start or 1) if key and text else None
            return PolicyError(message, source, line or _start)

        if not isinstance(table, dict):
            raise PolicyError("each [[rule]] must be a table", source, start)
        rule = rule_from_table(table, source, fail)
        if rule.id in seen:
            raise fail(f"duplicate rule id '{rule.id}'", "id")
        seen.add(rule.id)
        rules.append(rule)
    return rules


def _glob(patterns: Iterable[str]) -> re.Pattern[str] | None:
    patterns = list(patterns)
    if not patterns or "*" in patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _timestamp(value: str) -> float | None:
    return dt.datetime.fromisoformat(value).timestamp() if value else None


class CompiledRule:
    __slots__ = ("fields", "labels", "locality", "methods", "not_after", "not_before", "principals", "privacy", "rule", "services")

    def __init__(self, rule: pb.Rule):
        self.rule = rule
        self.services, self.methods, self.principals = _glob(rule.services), _glob(rule.methods), _glob(rule.principals)
        self.locality = rule.provider
        self.fields = dict(rule.fields)
        self.labels = frozenset(rule.labels)
        self.privacy = None if not rule.privacy_mode else rule.privacy_mode == "true"
        self.not_before, self.not_after = _timestamp(rule.not_before), _timestamp(rule.not_after)

    def matches_service(self, service: str) -> bool:
        return self.services is None or self.services.fullmatch(service) is not None

    def statically_matches(self, method: str, principal: str, local: bool) -> bool:
        return (
            (self.methods is None or self.methods.fullmatch(method) is not None)
            and (self.principals is None or self.principals.fullmatch(principal) is not None)
            and (
                self.locality == pb.LOCALITY_UNSPECIFIED
                or (self.locality == pb.LOCALITY_LOCAL) == local
            )
        )

    def dynamically_matches(self, facts: CallFacts, now: float) -> bool:
        if self.privacy is not None and self.privacy != facts.privacy_mode:
            return False
        if self.labels and not (self.labels & facts.labels):
            return False
        if self.not_before is not None and now < self.not_before:
            return False
        if self.not_after is not None and now > self.not_after:
            return False
        if self.fields:
            values = facts.field_values()
            if any(values.get(k) != v for k, v in self.fields.items()):
                return False
        return True


class RuleSet:
    """Rules in force, compiled, with the static part of matching cached per call shape."""

    def __init__(
        self,
        rules: list[pb.Rule],
        default: int = ALLOW,
        extra_check: Callable[[CallFacts], pb.Rule | None] | None = None,
        never_asked: frozenset[tuple[str, str]] = frozenset(),
    ):
        """`extra_check` is a rule computed rather than written (the plugin-manifest check): it
        returns the matching rule, or None. `never_asked` are the (service, method) an ask rule
        does not hold for: deciding and waiting for approvals, which an ask would deadlock."""
        self.rules = list(rules)
        self.never_asked = never_asked
        self.default = default
        self._compiled = [CompiledRule(r) for r in rules]
        self._extra = extra_check
        # Two cached levels: rules by service (few services, many rules), then by the rest of the
        # call's shape within that small set; a miss costs a scan of one service's rules.
        self._by_service = lru_cache(maxsize=4096)(self._rules_for_service)
        self.candidates = lru_cache(maxsize=65536)(self._candidates)

    def _rules_for_service(self, service: str) -> tuple[CompiledRule, ...]:
        return tuple(c for c in self._compiled if c.matches_service(service))

    def _candidates(self, service: str, method: str, principal: str, local: bool) -> tuple[CompiledRule, ...]:
        return tuple(c for c in self._by_service(service) if c.statically_matches(method, principal, local))

    def locality(self, rule_id: str) -> int:
        """Where the rule applies (pb.LOCALITY_*); unspecified for an id not in force."""
        return next((c.locality for c in self._compiled if c.rule.id == rule_id), pb.LOCALITY_UNSPECIFIED)

    def evaluate(self, facts: CallFacts, now: float | None = None) -> pb.Decision:
        now = time.time() if now is None else now
        matched = [
            c.rule
            for c in self.candidates(facts.service, facts.method, facts.principal, facts.provider_local)
            if c.dynamically_matches(facts, now)
        ]
        for actor in facts.actors:
            # a call made for someone (a plan step, a plugin's nested call, a gateway's) is also
            # refused by a deny naming whoever acted ("agents may not delete": principals =
            # ["plugin:*"]); an allow naming an actor never widens what its caller may do
            matched += [
                c.rule
                for c in self.candidates(facts.service, facts.method, actor, facts.provider_local)
                if c.principals is not None and c.rule.effect in (DENY, ASK) and c.rule not in matched
                and c.dynamically_matches(facts, now)
            ]
        if self._extra is not None and (verdict := self._extra(facts)) is not None:
            matched.append(verdict)
        denies = [r for r in matched if r.effect == DENY and not r.overridable]
        asks = [r for r in matched if r.effect == ASK] if (facts.service, facts.method) not in self.never_asked else []
        allows = [r for r in matched if r.effect == ALLOW]
        soft = [r for r in matched if r.effect == DENY and r.overridable]
        chosen, effect = (
            (denies, DENY) if denies else (asks, ASK) if asks else (allows, ALLOW) if allows
            else (soft, DENY) if soft else ([], self.default)
        )
        return _decision(effect, tuple((r.id, r.effect, r.description) for r in chosen))


VERB = {ALLOW: "allowed", DENY: "denied", ASK: "waits for a person's approval"}


@lru_cache(maxsize=4096)
def _decision(effect: int, chosen: tuple[tuple[str, int, str], ...]) -> pb.Decision:
    """The decision for the rules chosen, built once per combination (a call's decision is
    copied into its audit entry, never changed in place)."""
    if not chosen:
        return pb.Decision(effect=effect, by_default=True, reasons=["no rule matched; the default applies"])
    return pb.Decision(
        effect=effect,
        rule_ids=[rule_id for rule_id, _, _ in chosen],
        reasons=[f"{rule_id}: {text or VERB[kind]}" for rule_id, kind, text in chosen],
    )


def load_policy_dir(folder: Path) -> tuple[list[pb.Rule], list[PolicyError]]:
    """Rules of every policy file in `folder`, and the files rejected (each with its line)."""
    rules: list[pb.Rule] = []
    errors: list[PolicyError] = []
    for path in sorted(folder.glob("*.toml")):
        try:
            rules += parse_policy(path.read_text(encoding="utf-8"), str(path))
        except PolicyError as exc:
            errors.append(exc)
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(PolicyError(f"cannot read: {exc}", str(path)))
    return rules, errors
