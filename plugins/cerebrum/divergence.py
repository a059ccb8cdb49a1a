"""What a replay compares, and how it says what changed.

A replayed step's response is compared with the recorded one as what the plan *read*, not as how
it was found. A search that returns the same memories, with the same content, in the same order
read the same thing, although its scores moved: keyword (BM25) scores are corpus statistics, so
editing any other memory or watched file shifts them. So the fields in NOT_READ (scores, how a
memory matched, how it is indexed, timestamps) are dropped from both responses before they are
compared, wherever their messages occur; every other field of every step's response (a Generate's
text, an ExtractAnswer's citations, a memory's text, tags, source...) still counts.

When a step that returns memories (READS) does diverge, `differences` says how, memory by memory,
in words a person can act on: a memory whose content changed (and what), one no longer returned, a
new one, a changed order. `worded` keeps the first few and counts the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cortex.contracts.memories.v1 import memories_pb2 as mem

# Fields that do not say what a step read, by message (full name). Dropped before a comparison.
NOT_READ: dict[str, frozenset[str]] = {
    # How well a memory matched, and by which modes: they move with corpus-wide keyword statistics
    # (another memory edited, a file added to a watched folder) and with the embedding model.
    "cortex.memories.v1.SearchResult": frozenset({"score", "semantic_score", "keyword_score", "matched"}),
    # How the search ran (hybrid falls back to keyword while no embedding model answers).
    "cortex.memories.v1.SearchResponse": frozenset({"mode", "embedding_model"}),
    # How a memory is indexed (its vector's model and size: a reindex changes them), and when it
    # was made, last written (a rewrite of the same text moves it) and expires.
    "cortex.memories.v1.Memory": frozenset({"embedding_model", "dimension", "created_at", "updated_at", "expires_at"}),
}

# The steps that read memories, and the memories each response holds, in the order returned.
READS: dict[str, Callable[[Any], list[mem.Memory]]] = {
    "/cortex.memories.v1.MemoryService/Search": lambda r: [result.memory for result in r.results],
    "/cortex.memories.v1.MemoryService/Get": lambda r: [r.memory] if r.HasField("memory") else [],
    "/cortex.memories.v1.MemoryService/List": lambda r: list(r.memories),
}

SHOWN = 3  # differences a reason spells out; the rest are counted
EXCERPT = 30  # characters of a memory's text that name it ("'Garden project budget is…'")
CHANGE = 60  # characters of each side of a changed text shown


def without_unread(message: Message) -> Message:
    """A copy of `message` without the NOT_READ fields, at any depth."""
    copy = type(message)()
    copy.CopyFrom(message)
    _strip(copy)
    return copy


def _strip(message: Message) -> None:
    for name in NOT_READ.get(message.DESCRIPTOR.full_name, ()):
        message.ClearField(name)
    for described, value in message.ListFields():
        if described.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if described.message_type.GetOptions().map_entry:
            if described.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for item in value.values():
                    _strip(item)
        elif described.is_repeated:
            for item in value:
                _strip(item)
        else:
            _strip(value)


def parsed(response_json: str, output: type[Message]) -> Message:
    return json_format.Parse(response_json or "{}", output(), ignore_unknown_fields=True)


def read_digest(response_json: str, output: type[Message]) -> bytes:
    """SHA-256 of what a response says was read: its NOT_READ fields dropped."""
    return hashlib.sha256(without_unread(parsed(response_json, output)).SerializeToString(deterministic=True)).digest()


@dataclass
class Difference:
    """One way a step's memories differ from those recorded."""

    kind: str  # "changed", "gone", "new", "order"
    words: str  # what changed, for a person
    memory: mem.Memory | None = None  # as recorded ("changed", "gone")
    details: list[str] = field(default_factory=list)  # said after, in brackets: where it was, its versions

    def __str__(self) -> str:
        return f"{self.words} ({'; '.join(self.details)})" if self.details else self.words


def differences(before: list[mem.Memory], after: list[mem.Memory]) -> list[Difference]:
    """How the memories a step returned now differ from those it returned when recorded: changed
    content first, then memories no longer returned, new ones, and a changed order."""
    before = [without_unread(m) for m in before]
    after = [without_unread(m) for m in after]
    now = {m.id: m for m in after}
    then = {m.id: m for m in before}
    found: list[Difference] = []
    for memory in before:
        current = now.get(memory.id)
        if current is not None and current != memory:
            found.append(Difference("changed", f"memory {named(memory)} now has {_changes(memory, current)}", memory))
    for position, memory in enumerate(before, start=1):
        if memory.id not in now:
            found.append(Difference("gone", f"memory {named(memory)} is no longer returned", memory,
                                    [f"it was at position {position}"]))
    for position, memory in enumerate(after, start=1):
        if memory.id not in then:
            found.append(Difference("new", f"new memory {named(memory)} returned at position {position}"))
    kept_before = [m.id for m in before if m.id in now]
    kept_after = [m.id for m in after if m.id in then]
    if kept_before != kept_after:
        found.append(Difference("order", _order(kept_before, kept_after)))
    return found


def worded(found: list[Difference]) -> str:
    """The first SHOWN differences, then how many more."""
    shown = "; ".join(str(d) for d in found[:SHOWN])
    more = len(found) - SHOWN
    return shown + (f"; and {more} more difference{'s' if more > 1 else ''}" if more > 0 else "")


def named(memory: mem.Memory) -> str:
    """A memory as a reason names it: its id and the start of its text."""
    return f"{memory.id} {_quote(_start(memory.text, EXCERPT))}" if memory.text else memory.id


def _changes(before: mem.Memory, after: mem.Memory) -> str:
    """How a memory changed, e.g. "different text ('… 300 euros…' → '… 500 euros…') and other tags
    (garden → garden, money)"."""
    parts = []
    if before.text != after.text:
        old, new = text_change(before.text, after.text)
        parts.append(f"different text ({_quote(old)} → {_quote(new)})")
    if before.kind != after.kind:
        parts.append(f"another kind ({before.kind} → {after.kind})")
    if list(before.tags) != list(after.tags):
        parts.append(f"other tags ({_listed(before.tags)} → {_listed(after.tags)})")
    if before.source != after.source:
        parts.append(f"another source ({before.source or 'none'} → {after.source or 'none'})")
    if dict(before.metadata) != dict(after.metadata):
        keys = sorted(k for k in {*before.metadata, *after.metadata} if before.metadata.get(k) != after.metadata.get(k))
        parts.append("other metadata (" + ", ".join(
            f"{k}: {before.metadata.get(k, 'none')} → {after.metadata.get(k, 'none')}" for k in keys[:SHOWN])
            + (", …" if len(keys) > SHOWN else "") + ")")
    if before.superseded_by != after.superseded_by:
        parts.append(f"a newer memory replacing it ({after.superseded_by})" if after.superseded_by
                     else f"no newer memory replacing it (was {before.superseded_by})")
    if list(before.labels) != list(after.labels):
        parts.append(f"other labels ({_listed(before.labels)} → {_listed(after.labels)})")
    if not parts:  # what else a memory carries: its namespace, content hash, a field added since
        differing = [f.name for f in mem.Memory.DESCRIPTOR.fields if getattr(before, f.name) != getattr(after, f.name)]
        parts.append("a different " + ", ".join(differing or ["content"]))
    return " and ".join(parts) if len(parts) < 3 else ", ".join(parts[:-1]) + " and " + parts[-1]


def text_change(old: str, new: str, context: int = 20) -> tuple[str, str]:
    """The part of `old` and `new` that differs, in whole words, with a little of what precedes
    it; "…" where text is left out."""
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    start = max(0, prefix - context)
    while start > 0 and not old[start - 1].isspace():  # whole words
        start -= 1

    def part(text: str) -> str:
        end = len(text) - suffix
        while end < len(text) and not text[end].isspace():
            end += 1
        shown = text[start:end]
        cut = len(shown) > CHANGE
        shown = shown[:CHANGE].rstrip() if cut else shown
        return ("…" if start else "") + shown + ("…" if cut or end < len(text) else "")

    return part(old), part(new)


def _order(before: list[str], after: list[str]) -> str:
    """"order changed: m-1 and m-2 swapped", or the stretch that moved, as it was and is."""
    at = [i for i in range(max(len(before), len(after)))
          if i >= len(before) or i >= len(after) or before[i] != after[i]]
    if len(at) == 2 and before[at[0]] == after[at[1]] and before[at[1]] == after[at[0]]:
        return f"order changed: {before[at[0]]} and {before[at[1]]} swapped"
    first, last = at[0], at[-1] + 1
    return f"order changed: {_listed(before[first:last], 6)} → {_listed(after[first:last], 6)}"


def _start(text: str, width: int) -> str:
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[:width]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def _quote(text: str) -> str:
    return "'" + " ".join(text.split()) + "'"


def _listed(items, most: int = SHOWN * 2) -> str:
    items = list(items)
    return (", ".join(items[:most]) + (", …" if len(items) > most else "")) if items else "none"
