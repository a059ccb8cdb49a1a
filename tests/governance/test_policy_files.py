"""An admin's mistakes in a policy file: each is refused with the file, the line of the mistake and
what to write instead, and a good file gives exactly the rules it says."""

from __future__ import annotations

import pytest

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.plugins.governance.rules import PolicyError, parse_policy

RULE = '[[rule]]\nid = "r1"\neffect = "deny"\n'


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("rules = 3\n", 1, "unknown top-level key 'rules'; a policy file holds [[rule]] tables"),
        ("rule = 3\n", 1, "'rule' must be an array of tables: write [[rule]]"),
        ('[[rule]]\neffect = "deny"\n', 1, "every rule needs an 'id'"),
        ('[[rule]]\nid = "has space"\neffect = "deny"\n', 2, "every rule needs an 'id'"),
        (RULE + 'provider = "cloud"\n', 4, "'provider' must be local, remote or any"),
        (RULE + 'fields = "local_only"\n', 4, "'fields' must be a table of field = value"),
        (RULE + "fields = { a = [1] }\n", 4, "'fields' must be a table of field = value"),
        (RULE + 'privacy_mode = "yes"\n', 4, "'privacy_mode' must be true or false"),
        (RULE + "overridable = 1\n", 4, "'overridable' must be true or false"),
        (RULE + "services = [1, 2]\n", 4, "'services' must be a list of strings"),
        (RULE + "not_before = 2026-01-01T00:00:00\n", 4, "'not_before' needs a time zone"),
        (RULE + 'not_after = "2026-01-01T00:00:00"\n', 4, "'not_after' needs a time zone"),
        (RULE + 'not_after = "next tuesday"\n', 4, "'not_after' must be an RFC 3339 time"),
        (RULE + "not_after = 5\n", 4, "'not_after' must be an RFC 3339 time"),
        (RULE + RULE, 5, "duplicate rule id 'r1'"),  # the second rule's id
    ],
)
def test_each_mistake_names_its_line(text, line, message):
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "household.toml")
    assert message in str(err.value) and str(err.value).startswith(f"household.toml:{line}: "), str(err.value)


def test_a_good_file_gives_its_rules():
    text = """
[[rule]]
id = "evenings-local"
description = "after 18:00 UTC, models stay on this machine"
effect = "deny"
services = "cortex.models.v1.ModelService"
methods = ["Generate", "Embed"]
principals = ["mcp:*"]
provider = "remote"
fields = { local_only = false, max_tokens = 64 }
labels = ["work"]
privacy_mode = false
not_before = 2026-01-01T18:00:00Z
not_after = "2027-01-01T00:00:00+01:00"
overridable = true
"""
    (rule,) = parse_policy(text, "evenings.toml")
    assert (rule.id, rule.effect, rule.provider, rule.overridable, rule.source) == (
        "evenings-local", pb.EFFECT_DENY, pb.LOCALITY_REMOTE, True, "evenings.toml")
    assert list(rule.services) == ["cortex.models.v1.ModelService"] and list(rule.methods) == ["Generate", "Embed"]
    assert dict(rule.fields) == {"local_only": "false", "max_tokens": "64"} and rule.privacy_mode == "false"
    assert rule.not_before.startswith("2026-01-01T18:00:00") and rule.not_after.endswith("+01:00")
