"""docs/plugins/hooks.md, written from the hookspecs themselves (their signatures and docstrings),
so that the reference cannot drift from the code: `python -m cortex.plugins.devkit.hook_docs > FILE`, and a
test fails when the file is stale or a hook has no docstring (as datasette checks its own)."""

from __future__ import annotations

import inspect
import textwrap

from cortex.kernel import hookspecs

HEADER = """# Hook reference

Every hook a Cortex-OS plugin may implement, generated from `cortex.kernel.hookspecs`
(`python -m cortex.plugins.devkit.hook_docs > docs/plugins/hooks.md`). Implement a hook with
`@hookimpl` (`from cortex.kernel import hookimpl`) and take only the arguments you need, by name.
"""


def hooks() -> list[tuple[str, str, str]]:
    """(name, signature, docstring) of every hookspec, in the order they are declared."""
    found = []
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("cortex_"):
            continue
        found.append((inspect.getsourcelines(fn)[1], name, str(inspect.signature(fn)), inspect.getdoc(fn) or ""))
    return [(name, signature, doc) for _, name, signature, doc in sorted(found)]


def markdown() -> str:
    parts = [HEADER]
    for name, signature, doc in hooks():
        kind = "async " if inspect.iscoroutinefunction(getattr(hookspecs, name)) else ""
        parts.append(f"## `{name}`\n\n```python\n{kind}def {name}{signature}\n```\n\n{textwrap.fill(' '.join(doc.split()), 100)}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown(), end="")  # noqa: T201 - the generator writes to stdout
