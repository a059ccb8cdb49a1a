"""Adding and removing policy files, in one place: what AddPolicy and RemovePolicy do, and what a
kernel does when a peer of its cluster made the same change (cluster_policies.py).

A change is all or nothing: a file that would not load is removed again and the rules in force stay
as they were; every rule added or removed is an entry of the audit chain, with who did it.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import tomlkit

from cortex.contracts.governance.v1 import governance_pb2 as pb

from .rules import PolicyError, parse_policy

if TYPE_CHECKING:
    from .plugin import Governance

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_POLICY_BYTES = 256 * 1024


class Refused(Exception):
    """Why a change was not made; `code` names the gRPC status it is."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def add_policy(gov: Governance, toml: str, name: str, principal: str) -> tuple[list[pb.Rule], str]:
    """Put the document's rules in force as the file `name`.toml: (the rules, the file's path)."""
    if not toml.strip():
        raise Refused("INVALID_ARGUMENT", "toml is empty: send a document of [[rule]] tables")
    if len(toml.encode()) > MAX_POLICY_BYTES:
        raise Refused("INVALID_ARGUMENT", f"the policy document is over {MAX_POLICY_BYTES // 1024} KiB; split it")
    try:
        rules = parse_policy(toml, "request")
    except PolicyError as exc:
        raise Refused("INVALID_ARGUMENT", str(exc)) from None
    if not rules:
        raise Refused("INVALID_ARGUMENT", "the document holds no [[rule]] table")
    name = name or rules[0].id.replace("/", "_").replace(":", "_")
    if not NAME.match(name):
        raise Refused("INVALID_ARGUMENT", f"name {name!r}: use letters, digits, '_', '.', '-'")
    path = gov.policy_dir / f"{name.removesuffix('.toml')}.toml"
    existing = {r.id: r.source for r in gov.rules.rules}
    clash = [r.id for r in rules if r.id in existing]
    if clash:
        raise Refused("ALREADY_EXISTS",
                      f"rule id(s) {', '.join(clash)} already in force (from {existing[clash[0]]}); remove them first")
    if path.exists():
        raise Refused("ALREADY_EXISTS", f"{path} exists; choose another name")
    _write_atomically(path, toml)
    try:
        gov.reload()
    except PolicyError as exc:
        path.unlink()  # the rules in force were left as they were
        raise Refused("FAILED_PRECONDITION", f"not added: {exc}") from None
    added = [r for r in gov.rules.rules if r.source == str(path)]
    gov.writer.record([pb.AuditEntry(policy_change=pb.PolicyChange(action="add", rule=r, principal=principal)) for r in added])
    return added, str(path)


def remove_rule(gov: Governance, rule_id: str, principal: str) -> pb.Rule:
    """Take the rule `rule_id` out of its policy file (the file goes when it was the last)."""
    rule = next((r for r in gov.rules.rules if r.id == rule_id), None)
    if rule is None:
        raise Refused("NOT_FOUND", f"no rule {rule_id!r} is in force; `cortex policy list` shows them")
    folder = str(gov.policy_dir)
    if not rule.source.startswith(folder + os.sep):
        raise Refused("FAILED_PRECONDITION", f"rule {rule.id!r} comes from {rule.source}, not a policy file: change it there")
    path = gov.policy_dir / os.path.basename(rule.source)
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    kept = [t for t in doc.get("rule", []) if t.get("id") != rule.id]
    if kept:
        doc["rule"] = tomlkit.aot()
        for table in kept:
            doc["rule"].append(table)
        _write_atomically(path, tomlkit.dumps(doc))
    else:
        path.unlink()
    gov.reload()
    gov.writer.record([pb.AuditEntry(policy_change=pb.PolicyChange(action="remove", rule=rule, principal=principal))])
    return rule


def _write_atomically(path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
