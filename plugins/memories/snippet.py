"""What `cortex recall` shows of a memory: the sentence(s) or line(s) of its text that best match the
query, on one line, about WIDTH characters, cut with an ellipsis around the matched part (not at a
fixed start), with where the query's words are so that a terminal can emphasise them.

Pure (no kernel, no terminal): snippet(text, query) -> Snippet(text, spans)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

WIDTH = 160
ELLIPSIS = "…"
WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
ABBREVIATION = re.compile(r"(?:^|\s)(?:[A-Z][a-z]{0,2}|\w\.\w)\.$")  # "Dr.", "Mrs.", "e.g.": no sentence ends there

# as the keyword search (store.py) ignores them: words that say nothing about what matched
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from had has have how i if in is it its me my of on or our "
    "should so that the their them then there these they this to was we were what when where which who why "
    "will with would you your".split()
)


@dataclass(frozen=True)
class Snippet:
    text: str
    spans: tuple[tuple[int, int], ...] = ()  # (start, end) of each query word in `text`

    def styled(self, style: Callable[[str], str]) -> str:
        """The text with each query word passed through `style` (e.g. click.style(..., bold=True))."""
        parts, at = [], 0
        for start, end in self.spans:
            parts += [self.text[at:start], style(self.text[start:end])]
            at = end
        parts.append(self.text[at:])
        return "".join(parts)


def _norm(word: str) -> str:
    """A word as matched: lower case, a plural's "s" dropped ("tyres" finds "tyre")."""
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def query_terms(query: str) -> frozenset[str]:
    """The query's words worth matching: its stopwords dropped (all kept when it has nothing else)."""
    words = [w.lower() for w in WORD.findall(query)]
    meaningful = [w for w in words if w not in STOPWORDS] or words
    return frozenset(_norm(w) for w in meaningful)


def one_line(text: str) -> str:
    """One line for a terminal: whitespace runs as one space, control characters escaped (\\x1b)."""
    text = " ".join(text.split())
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def units(text: str) -> list[str]:
    """The text's lines, each cut into its sentences; each on one line, empty ones left out."""
    found: list[str] = []
    for line in text.splitlines():
        pieces: list[str] = []
        for piece in SENTENCE_BREAK.split(line.strip()):
            if pieces and ABBREVIATION.search(pieces[-1]):
                pieces[-1] += " " + piece
            else:
                pieces.append(piece)
        found += [p for p in map(one_line, pieces) if p]
    return found


def _matches(text: str, terms: frozenset[str]) -> list[re.Match[str]]:
    return [m for m in WORD.finditer(text) if _norm(m.group()) in terms]


def _window(text: str, terms: frozenset[str], width: int) -> tuple[int, int]:
    """[start, end) of `text`, at most `width` long, holding as many query words as it can, with
    some context before the first of them; on word boundaries where it can be."""
    hits = [(m.start(), m.end()) for m in _matches(text, terms)]
    lead = width // 4
    best, best_count = 0, -1
    for start, _ in hits or [(0, 0)]:
        begin = max(0, min(start - lead, len(text) - width))
        count = sum(1 for s, e in hits if s >= begin and e <= begin + width)
        if count > best_count:
            best, best_count = begin, count
    begin = best
    first_hit = min((s for s, _ in hits if s >= begin), default=min(len(text), begin + width))
    if begin > 0 and not text[begin - 1].isspace():  # mid-word: start at the next word, if before the match
        space = text.find(" ", begin, first_hit)
        begin = space + 1 if space != -1 else begin
    end = min(len(text), begin + width)
    if end < len(text) and not text[end].isspace():  # mid-word: end at the last whole word
        last_hit = max((e for s, e in hits if e <= end), default=begin)
        space = text.rfind(" ", max(begin, last_hit), end)
        end = space if space != -1 else end
    return begin, end


def snippet(text: str, query: str, width: int = WIDTH) -> Snippet:
    """The sentence(s)/line(s) of `text` that best match `query` (most of its words, case does not
    matter, stopwords ignored; the first when none match), grown with their neighbours while they
    fit in `width`, newlines shown as spaces; a longer one is cut around its matched part. An
    ellipsis marks text left out before or after."""
    parts = units(text)
    if not parts:
        return Snippet("")
    terms = query_terms(query)
    scores = [len({_norm(m.group()) for m in _matches(p, terms)}) for p in parts]
    first = last = max(range(len(parts)), key=lambda i: (scores[i], -i))
    length = len(parts[first])
    while True:  # the following sentence first (what comes after reads on), else the one before
        if last + 1 < len(parts) and length + 1 + len(parts[last + 1]) <= width:
            last += 1
            length += 1 + len(parts[last])
        elif first > 0 and length + 1 + len(parts[first - 1]) <= width:
            first -= 1
            length += 1 + len(parts[first])
        else:
            break
    shown = " ".join(parts[first:last + 1])
    before, after = first > 0, last < len(parts) - 1
    if len(shown) > width:  # one sentence longer than the width: a window on its matched part
        begin, end = _window(shown, terms, width - 2)
        before, after = before or begin > 0, after or end < len(shown)
        shown = shown[begin:end].strip()
    shown = (ELLIPSIS if before else "") + shown + (ELLIPSIS if after else "")
    return Snippet(shown, tuple((m.start(), m.end()) for m in _matches(shown, terms)))
