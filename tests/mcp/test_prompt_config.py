"""The prompts an admin writes in config ([[plugins.mcp.prompts]]) and the arguments a client sends:
each mistake is refused with a message that names the prompt and what to fix."""

from __future__ import annotations

import grpc
import pytest

from cortex.kernel import RouterError
from cortex.plugins.mcp.prompts import BUILTIN, MAX_ARGUMENT, Argument, PromptSpec, arguments_of, from_config

GOOD = {"name": "weekly_review", "text": "Review {focus}", "arguments": [{"name": "focus", "required": True}]}


def test_a_good_table_becomes_a_prompt():
    (spec,) = from_config([GOOD])
    assert spec == PromptSpec("weekly_review", "weekly_review", (Argument("focus", "", True),), text="Review {focus}")
    assert from_config(None) == ()


@pytest.mark.parametrize(("entries", "message"), [
    ({"name": "x"}, "must be a list of tables"),
    ([GOOD, "weekly"], "must be a list of tables"),
    ([{**GOOD, "txt": "typo"}], r"#1: unknown keys \['txt'\]"),
    ([{**GOOD, "name": "two words"}], "name must be a word"),
    ([{**GOOD, "name": 7}], "name must be a word"),
    ([{"name": "empty", "text": ""}], r"\(empty\): text is required"),
    ([{**GOOD, "arguments": [{"description": "no name"}]}], "each argument is a table with a name"),
    ([{**GOOD, "arguments": ["focus"]}], "each argument is a table with a name"),
    ([{**GOOD, "arguments": [{"name": "focus", "values": "work"}]}], "values must be a list of strings"),
    ([GOOD, GOOD], r"names \['weekly_review'\] are used twice"),
    ([{**GOOD, "name": "recall_context"}], r"names \['recall_context'\] are used twice \(or by a built-in"),
])
def test_a_wrong_table_is_refused_naming_it(entries, message):
    with pytest.raises(ValueError, match=message):
        from_config(entries)


@pytest.mark.parametrize(("given", "message"), [
    ({"focus": "home", "extra": "x"}, r"has no arguments \['extra'\]; it takes \['focus'\]"),
    ({}, "needs 'focus'"),
    ({"focus": "   "}, "needs 'focus'"),
    ({"focus": "x" * (MAX_ARGUMENT + 1)}, f"longer than {MAX_ARGUMENT}"),
])
def test_a_wrong_argument_is_invalid_argument(given, message):
    (spec,) = from_config([GOOD])
    with pytest.raises(RouterError, match=message) as caught:
        arguments_of(spec, given)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_a_prompt_without_arguments_says_it_takes_none():
    (spec,) = from_config([{"name": "hello", "text": "Hello"}])
    assert arguments_of(spec, None) == {}
    with pytest.raises(RouterError, match="it takes none"):
        arguments_of(spec, {"who": "me"})
    assert {s.name for s in BUILTIN} == {"recall_context", "plan_goal", "what_changed"}
