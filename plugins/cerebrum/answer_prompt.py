"""A written answer: the prompt a language model answers a question with, and how its reply is read.

The model sees the recalled memories and nothing else, numbered, each with its date and where it
comes from, and a memory a newer one replaced marked so ("replaced by [2]"). It is told to answer
from them only, to cite each fact as [n], to take the newer note where two disagree, and to say
exactly "I don't know." when they do not answer. Its reply is read back: "I don't know" (or no
text) is the run's "none" answer with the memories offered as related; otherwise the notes it
cites become the citations, renumbered in the order it cites them ([n] is citations[n-1]), and a
number it made up is dropped from the text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2 as mem

DONT_KNOW = "I don't know."
SAYS_DONT_KNOW = re.compile(r"^\W*i\s+(do\s+not|don['\u2019]?t)\s+know\b", re.IGNORECASE)
CITED = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")  # [2], [1, 3]

MAX_NOTE_CHARS = 2000  # of each memory's text in the prompt: enough for a passage, bounded for a small model
CITATION_CHARS = 200
RELATED = 3  # memories offered as related when nothing answers: the nearest, as recalled
SYSTEM = (
    "You answer a question from the person's own notes, and from nothing else.\n"
    "- Use only the numbered notes. After each fact, cite its note's number in brackets, like [2].\n"
    "- Where notes disagree, the newer one holds the current fact. A note marked \"replaced by [n]\" is "
    "outdated: never answer from it alone.\n"
    "- Answer in one or two short sentences; copy names, numbers, dates and codes exactly as written.\n"
    f"- If the notes do not answer the question, reply exactly: {DONT_KNOW}"
)


@dataclass
class Prompt:
    system: str
    user: str
    citations: list[pb.Citation]
    labels: list[str]


@dataclass
class Written:
    text: str
    kind: str  # "generated" or "none"
    citations: list[pb.Citation] = field(default_factory=list)
    related: list[pb.Citation] = field(default_factory=list)


def citation_of(memory: mem.Memory, text: str = "") -> pb.Citation:
    """A memory as an answer cites it: the sentence quoted, or the start of its text."""
    return pb.Citation(memory_id=memory.id, source=memory.source, text=text or memory.text[:CITATION_CHARS],
                       heading=memory.metadata.get("heading", ""))


def earlier(stale: mem.Memory, text: str, current: mem.Memory) -> pb.Citation:
    """A replaced statement, as history beside the answer that replaced it."""
    changed = _date(current)
    return citation_of(stale, f"earlier: {text}" + (f" (changed on {changed})" if changed else ""))


def nothing_answers(question: str) -> str:
    return f"Nothing in your memories answers “{question.strip()}”."


def compose(question: str, memories: Sequence[mem.Memory]) -> Prompt:
    number = {m.id: n for n, m in enumerate(memories, start=1)}
    lines = []
    for n, memory in enumerate(memories, start=1):
        about = [_date(memory)]
        if memory.metadata.get("heading"):
            about.append(memory.metadata["heading"])
        if memory.superseded_by:
            about.append(f"replaced by [{number[memory.superseded_by]}]" if memory.superseded_by in number
                         else "replaced by a newer note")
        text = " ".join(memory.text.split())[:MAX_NOTE_CHARS]
        lines.append(f"[{n}] ({'; '.join(a for a in about if a)}) {text}")
    notes = "\n".join(lines) if lines else "(no notes)"
    user = f"Notes:\n{notes}\n\nQuestion: {question.strip()}\nAnswer:"
    return Prompt(SYSTEM, user, [citation_of(m) for m in memories], labels_of(memories))


def labels_of(memories: Sequence[mem.Memory]) -> list[str]:
    """The labels of the data a call built from `memories` carries: their tags (a memory tagged
    `private` makes the call private: builtin/private-stays-local keeps it off remote providers)."""
    return sorted({tag for m in memories for tag in m.tags})


def read_answer(text: str, numbered: Sequence[pb.Citation], question: str) -> Written:
    """The model's reply as the run's answer: "none" when it cites no note and says it does not
    know (or says nothing); else its text, each [n] renumbered to the citations in the order first
    cited, a number no note has dropped, and a bracketed number written with a leading zero (a
    code: "[042]") left as written."""
    reply = text.strip()
    found = [(match, _numbers(match.group(1))) for match in CITED.finditer(reply)]
    order: list[int] = []
    for _, numbers in found:
        order += [n for n in numbers or () if 1 <= n <= len(numbered) and n not in order]
    if not order and (not reply or SAYS_DONT_KNOW.match(reply)):
        return Written(nothing_answers(question), "none", related=list(numbered[:RELATED]))
    renumber = {old: new for new, old in enumerate(order, start=1)}
    pieces, last, dropped = [], 0, False
    for match, numbers in found:
        if numbers is None:  # not a citation
            continue
        kept = [renumber[n] for n in numbers if n in renumber]
        dropped = dropped or len(kept) < len(numbers)
        pieces += [reply[last:match.start()], f"[{', '.join(map(str, kept))}]" if kept else ""]
        last = match.end()
    written = "".join(pieces) + reply[last:]
    if dropped:
        written = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", written))
    return Written(written.strip(), "generated", citations=[numbered[n - 1] for n in order])


def _numbers(group: str) -> list[int] | None:
    """The note numbers of a bracket, or None when it is content, not a citation ("[042]")."""
    parts = re.split(r"\s*,\s*", group)
    return None if any(len(p) > 1 and p.startswith("0") for p in parts) else [int(p) for p in parts]


def _date(memory: mem.Memory) -> str:
    """The day `memory` was made, or "" (unset, or a time no calendar holds: created_at is the
    caller's to send, unchecked)."""
    try:
        return datetime.fromtimestamp(memory.created_at.seconds, UTC).strftime("%Y-%m-%d") if memory.created_at.seconds else ""
    except (ValueError, OverflowError, OSError):
        return ""
