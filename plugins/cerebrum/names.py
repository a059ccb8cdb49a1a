"""What a question names, and whether a memory holds it: the answer step's check that a memory is
about the person, project or thing asked after, which an embedding model does not make ("When is
Mees's birthday?" and "Mum's birthday is 17 August" are close in meaning).

A name is a run of capitalised words of the question ("Project Meridian", "Grandma Fien"), less a
capitalised first word that is grammar ("By when…"), "I", months and weekdays; a question written
in Title Case or capitals names nothing this way (its capitals are style). Words compare as the
reranker's key terms do: lower case, accents folded, lightly stemmed.
"""

from __future__ import annotations

import re

from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.kernel.sdk import relevance
from cortex.kernel.sdk.relevance import STOPWORDS, stem, words

TOKEN = re.compile(r"[^\W_][\w'\u2019-]*")  # a word, with its apostrophes and hyphens: O'Brien, Wi-Fi
# a capitalised first word that is grammar, not a name ("By when…", "Until what time…")
LEADING = STOPWORDS | frozenset("what's whats until since before after during please show list give find tell remind".split())
CALENDAR = re.compile(rf"{relevance.MONTHS}|{relevance.WEEKDAYS}")


def names(question: str) -> list[list[set[str]]]:
    """What the question names: its runs of capitalised words ("Project Meridian", "Grandma Fien"),
    less a leading function word ("By when…"), "I", months and weekdays; none when capitals are the
    question's style (title_case). Per name, the ways a memory may hold it, any one will do: all its
    words, or its last one ("the Meridian deadline"); a hyphenated word joined or in parts
    ("Wi-Fi": "wifi", or "wi" and "fi")."""
    tokens = TOKEN.findall(question)
    if title_case(tokens):
        return []
    runs: list[list[str]] = [[]]
    for place, token in enumerate(tokens):
        word = re.sub(r"['\u2019]s$", "", token, flags=re.IGNORECASE).strip("'\u2019-")
        lower = word.lower()
        if not token[0].isupper() or (place == 0 and lower in LEADING) or lower == "i" \
                or lower.startswith(("i'", "i\u2019")) or CALENDAR.fullmatch(lower) or len(lower) < 2:
            runs.append([])
            continue
        runs[-1].append(word)
        if word != token:  # a possessive ends the name: in "Mees's Birthday" the name is Mees
            runs.append([])
    asked = []
    for run in (r for r in runs if r):
        ways = [set().union(*(_spellings(w)[0] for w in run)), *_spellings(run[-1])]
        asked.append([way for n, way in enumerate(ways) if way and way not in ways[:n]])
    return asked


def _spellings(word: str) -> list[set[str]]:
    """A word's terms: joined ("wifi"), then in its hyphenated parts ("wi", "fi")."""
    return [{stem(w) for w in words(word.replace("-", ""))}, {stem(w) for w in words(word) if len(w) > 1}]


def title_case(tokens: list[str]) -> bool:
    """Whether capitals are the question's style, not its names: most words after the first are
    capitalised, function words among them ("When Is Anna's Birthday?", "WHEN IS IT?")."""
    rest = tokens[1:]
    capitalised = [t for t in rest if t[0].isupper()]
    return len(capitalised) > len(rest) / 2 and any(t.lower() in STOPWORDS for t in capitalised)


def mentions(memory: mem.Memory, asked: list[list[set[str]]]) -> bool:
    """Whether `memory` (its text, heading path and tags) holds every name `asked`."""
    if not asked:
        return True
    context = " ".join((memory.text, memory.metadata.get("heading", ""), *memory.tags))
    joined = " ".join(t.replace("-", "") for t in context.split() if "-" in t)  # "Wi-Fi" also as "wifi"
    held = {stem(w) for w in words(context)} | {stem(w) for w in words(joined)}
    return all(any(way <= held for way in ways) for ways in asked)
