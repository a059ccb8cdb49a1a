"""Which data labels a memory carries ("private"), decided when it is read, so that a changed rule
holds for every memory at once, with nothing to migrate.

A memory carries a label when
- one of its tags is the label's name (`cortex remember --tag private ...`);
- it is a passage of a watched source whose config names the label
  (`[[plugins.memories.source]] labels = ["private"]`);
- a rule of `[plugins.memories.labels]` gives it: any of its tags, its source's name, its kind
  or its namespace listed under the label:

      [plugins.memories.labels.private]
      tags = ["health", "finance"]
      sources = ["journal"]
      kinds = ["diary"]
      namespaces = ["key:alice"]

Every response holding the memory says its labels (Memory.labels); the kernel carries them on to
whatever the caller does next with it (kernel/security/labels.py), and policy decides where data
so labelled may go (builtin/private-stays-local).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .store import Record

DEFAULT_LABELS = ("private",)  # a tag with this name is the label, with or without a rule
MATCHES = ("tags", "sources", "kinds", "namespaces")


@dataclass(frozen=True)
class LabelRule:
    label: str
    tags: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    namespaces: frozenset[str] = frozenset()

    def matches(self, tags: Iterable[str], kind: str, source: str, namespace: str) -> bool:
        return bool(
            self.tags.intersection(tags) or (source and source in self.sources)
            or kind in self.kinds or namespace in self.namespaces
        )


@dataclass(frozen=True)
class Labeller:
    rules: tuple[LabelRule, ...] = ()
    names: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_LABELS))

    @classmethod
    def from_config(cls, table: Any, sources: Mapping[str, Iterable[str]] = {}) -> Labeller:
        """From `[plugins.memories.labels]` and the configured sources' `labels`; ValueError saying
        what to write on a mistake."""
        if not isinstance(table, dict):
            raise ValueError("[plugins.memories.labels] is a table of labels: [plugins.memories.labels.private] tags = [...]")
        rules = []
        for label, matches in table.items():
            if not isinstance(matches, dict) or set(matches) - set(MATCHES):
                raise ValueError(f"[plugins.memories.labels.{label}] lists memories by {', '.join(MATCHES)} (lists of names)")
            values = {k: matches.get(k, []) for k in MATCHES}
            if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in values.values()):
                raise ValueError(f"[plugins.memories.labels.{label}]: {', '.join(MATCHES)} are lists of names")
            rules.append(LabelRule(label, **{k: frozenset(v) for k, v in values.items()}))
        for source, labels in sources.items():
            rules += [LabelRule(label, sources=frozenset({source})) for label in labels]
        return cls(tuple(rules), frozenset(DEFAULT_LABELS) | {r.label for r in rules})

    def labels_of(self, record: Record) -> list[str]:
        """The memory's labels, sorted."""
        return self.labels_for(record.tags, record.kind, source_name(record), record.namespace)

    def labels_for(self, tags: Iterable[str], kind: str, source: str = "", namespace: str = "default") -> list[str]:
        """The labels of a memory with these tags, kind, watched source (its name, "" for none) and
        namespace, sorted: for a passage about to be embedded, before it is a memory."""
        tags = list(tags)
        found = {tag for tag in tags if tag in self.names}
        found.update(rule.label for rule in self.rules if rule.label not in found and rule.matches(tags, kind, source, namespace))
        return sorted(found)

    def of_source(self, name: str) -> list[str]:
        """The labels every passage of source `name` carries."""
        return sorted({rule.label for rule in self.rules if name in rule.sources})


def source_name(record: Record) -> str:
    """The watched source a passage comes from (cited "name:path#L1-L9"), "" for other memories."""
    return record.source.partition(":")[0] if "file" in record.metadata and ":" in record.source else ""
