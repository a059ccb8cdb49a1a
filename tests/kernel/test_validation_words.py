"""The words of a broken bound: each kind of buf.validate rule said as a person would act on it
(kernel/validation.py `explain`), from violations shaped as protovalidate reports them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cortex.kernel.security.validation import explain


def violation(rule: str, value, bound=None, path: tuple = ("field",), message: str = "", for_key: bool = False):
    elements = [SimpleNamespace(field_name=name, subscript=None) for name in path]
    proto = SimpleNamespace(rule_id=rule, message=message, for_key=for_key, field=SimpleNamespace(elements=elements))
    return SimpleNamespace(proto=proto, field_value=value, rule_value=bound)


@pytest.mark.parametrize(("given", "said"), [
    (violation("string.max_len", "x" * 9, 8), "field is 9 characters; the limit is 8"),
    (violation("string.min_len", "", 1), "field is 0 characters; it must be at least 1"),
    (violation("string.len", "abc", 2), "field is 3 characters; it must be exactly 2"),
    (violation("bytes.max_bytes", b"\x00" * 5, 4), "field is 5 bytes; the limit is 4"),
    (violation("string.min_bytes", "", 2), "field is 0 bytes; it must be at least 2"),
    (violation("repeated.min_items", [], 1), "field has 0 items, at least 1 are needed"),
    (violation("map.max_pairs", {"a": 1, "b": 2}, 1), "field has 2 entries, at most 1 are allowed"),
    (violation("int32.gt", 0, 0), "field is 0; it must be more than 0"),
    (violation("double.lt", 2.5, 2.0), "field is 2.5; it must be less than 2"),
    (violation("int64.gte", -1, 0), "field is -1; it must be at least 0"),
    (violation("float.gte_lte", 7.0, None, message="must be greater than or equal to 0 and less than or equal to 5"),
     "field must be between 0 and 5, got 7"),
    (violation("double.finite", float("inf")), "field is inf; it must be a finite number"),
    (violation("int32.const", 3, 4, message="must equal 4"), "field is 3; it must equal 4"),
    (violation("string.pattern", "a b", "^[a-z]+$"), "field 'a b' does not match ^[a-z]+$"),
    (violation("string.email", "nope", message="must be a valid email address"), "field 'nope' must be a valid email address"),
    (violation("message.required", None, message="value is required"), "field value is required"),
    (violation("string.max_len", "k" * 3, 2, for_key=True), "field (a key) is 3 characters; the limit is 2"),
])
def test_each_kind_of_rule_is_said_plainly(given, said):
    assert explain([given], "pkg.v1.Request") == f"{said} ({given.proto.rule_id}) in pkg.v1.Request"


def test_long_values_are_cut_and_many_violations_counted():
    long = violation("string.pattern", "y" * 500, "^x$", path=("outer", "inner"))
    text = explain([long] * 5, "pkg.v1.Request")
    assert text.startswith("outer.inner 'yyyy") and "...' does not match ^x$" in text
    assert text.endswith("; and 2 more") and text.count("outer.inner") == 3
