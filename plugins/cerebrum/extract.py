"""Extractive answers: a question answered with the sentences of the memories that answer it, each
cited, or "nothing in your memories answers this" when none does.

What a run answers when no language model is configured (the built-in tiny model writes noise).
Deterministic: the same question and memories give the same answer. Every sentence of the recalled
memories is scored by RerankService (0 to 1, 0.5 its "answers" boundary; the mlx provider scores
meaning plus the question's key terms, kernel/sdk/relevance.py). Then, in this order:

- only sentences at or above the boundary may be quoted; none: the answer abstains and names the
  nearest memories as related (a recipe's line is not an answer to "what is my blood type?");
- a memory answers only if it holds what the question names (names.py: "When is Mees's birthday?"
  is not answered by Mum's);
- the current fact wins: a sentence of a memory that a newer recalled one replaced (superseded_by)
  gives way to the newer memory's sentence that restates it, and is kept only as history beside
  the answer ("earlier: …"); of two answering sentences of unlinked memories that say nearly the
  same thing, the older memory's is dropped;
- the best sentence is the one that scores highest less RANK_PENALTY a place in the search's order
  (the search weighed the whole memory, and its keywords, which one sentence does not show); another
  is quoted only when it does nearly as well (within MARGIN): the answer is usually one sentence,
  not the top memories' first lines; they are ordered by that, not by their memory's rank.

Nothing is paraphrased.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.kernel.sdk.relevance import key_terms

from .names import mentions, names

# a sentence ends at . ! ? and a space, but not after a title ("Dr. Hartmann" is one name)
SENTENCE_END = re.compile(r"(?<!\bDr\.)(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bSt\.)(?<!\bProf\.)(?<=[.!?])\s+|\n+")
HEADING_LINE = re.compile(r"^#{1,6}\s")
MAX_SENTENCES_PER_MEMORY = 40
MAX_SENTENCE_CHARS = 400
BOUNDARY = 0.5  # RerankService's "answers" boundary
MARGIN = 0.05  # how close to the best a second sentence must score to be quoted too
RANK_PENALTY = 0.5  # of the 0..1 score, per place in the search's order (calibrated with the boundary)
RESTATES = 0.6  # share of key terms two sentences hold in common to say the same thing
RESTATES_PART = 0.3  # ... for a successor's sentence to restate a superseded one's (the rent, not the deposit)
# ... and it must answer the question at least a quarter as well (as memories' currency.py asks half
# of a whole memory in a search): "only Spotify is left" does not restate Spotify's price
ANSWERS_AS_WELL = 0.25


@dataclass(frozen=True)
class Sentence:
    memory_index: int  # rank of its memory in the input
    position: int  # within the memory
    text: str


@dataclass(frozen=True)
class Chosen:
    sentence: Sentence
    score: float
    place: int  # the search rank it is weighed at: its memory's, or the better one of a statement it replaced
    earlier: Sentence | None = None  # the stale statement it replaced (the latest one), shown as history


def sentences_of(texts: Sequence[str], headings: Sequence[str] = ()) -> list[Sentence]:
    """The sentences of each text; a note passage's heading lines (its "A > B" path, its own
    "## B") say where it is, not what it says, and are left out (the citation names them)."""
    found = []
    for index, text in enumerate(texts):
        heading = headings[index] if index < len(headings) else ""
        if heading:
            text = "\n".join(line for line in text.splitlines() if line.strip() != heading and not HEADING_LINE.match(line))
        parts = [p.strip() for p in SENTENCE_END.split(text) if p.strip()]
        for position, part in enumerate(parts[:MAX_SENTENCES_PER_MEMORY]):
            found.append(Sentence(index, position, part[:MAX_SENTENCE_CHARS]))
    return found


def passage(sentence: Sentence, heading: str) -> str:
    """What the reranker reads for a sentence: with its heading path, which says what it is about
    ("Project Atlas > Risks: the vendor may slip" answers "risks on Project Atlas")."""
    return f"{heading}: {sentence.text}" if heading else sentence.text


def choose(
    question: str, sentences: list[Sentence], scores: Sequence[float], memories: Sequence[mem.Memory], limit: int,
    boundary: float = BOUNDARY,
) -> list[Chosen]:
    """The sentences to quote, best first; [] when none reaches `boundary`. Of those that do, the
    best is the one whose score less RANK_PENALTY a place in the search's order is highest (the
    search weighed evidence the sentence alone does not show: the whole memory, its keywords)."""
    asked = names(question)
    named = {i for i, m in enumerate(memories) if mentions(m, asked)}
    index = {m.id: i for i, m in enumerate(memories)}
    named |= {j for i in named for j in successors(i, memories, index)}  # a restatement keeps its subject
    scored = [Chosen(s, round(float(x), 6), s.memory_index) for s, x in zip(sentences, scores, strict=True)
              if s.memory_index in named]
    answering = [c for c in current(scored, memories, boundary) if c.score >= boundary]
    if not answering:
        return []

    def merit(c: Chosen) -> float:
        return c.score - RANK_PENALTY * c.place

    answering.sort(key=lambda c: (-merit(c), c.place, c.sentence.memory_index, c.sentence.position))
    best = merit(answering[0])
    return [c for c in answering if merit(c) >= best - MARGIN][:limit]


def current(scored: list[Chosen], memories: Sequence[mem.Memory], boundary: float) -> list[Chosen]:
    """`scored` with each stale statement replaced by the current one. A sentence of a memory that
    recalled memories superseded (one after another: the dentist moved, then moved again) gives way
    to the newest successor's sentence that restates it (sharing a good part of its key terms and
    answering at least a quarter as well), which takes the better of their scores and places. Of
    two answering sentences of unlinked memories that say nearly the same thing, the older memory's
    goes. A stale sentence no successor restates (the insurer changed, the deductible did not) stays."""
    terms = [key_terms(c.sentence.text) for c in scored]
    by_memory: dict[int, list[int]] = {}
    for i, c in enumerate(scored):
        by_memory.setdefault(c.sentence.memory_index, []).append(i)
    index = {m.id: i for i, m in enumerate(memories)}
    chains = {m: successors(m, memories, index) for m in by_memory}
    target: dict[int, int] = {}  # a stale sentence -> the sentence that restates it
    for i, stale in enumerate(scored):
        for successor in reversed(chains[stale.sentence.memory_index]):  # the newest first
            overlap = [(len(terms[i] & terms[j]), -j) for j in by_memory.get(successor, [])
                       if _shared(terms[i], terms[j]) >= RESTATES_PART and scored[j].score >= ANSWERS_AS_WELL * stale.score]
            if overlap:
                target[i] = -max(overlap)[1]
                break
    out = list(scored)
    for i in target:
        j = i
        while j in target:  # successors are ever newer: this ends
            j = target[j]
        latest = out[j].earlier
        if latest is None or _created(memories[scored[i].sentence.memory_index]) > _created(memories[latest.memory_index]):
            latest = scored[i].sentence
        out[j] = Chosen(out[j].sentence, max(out[j].score, scored[i].score), min(out[j].place, scored[i].place), latest)
    kept = [(i, c) for i, c in enumerate(out) if i not in target]
    return [c for i, c in kept if not (c.score >= boundary and any(
        j != i and other.score >= boundary and other.sentence.memory_index != c.sentence.memory_index
        and _created(memories[other.sentence.memory_index]) > _created(memories[c.sentence.memory_index])
        and _alike(terms[i], terms[j]) >= RESTATES
        for j, other in kept))]


def successors(memory_index: int, memories: Sequence[mem.Memory], index: dict[str, int]) -> list[int]:
    """The recalled memories that replaced memory `memory_index`, one after another, oldest first
    (`index`: a memory's place by id). Only ever newer ones are followed: a link back in time (a
    cycle, a bad import) ends the chain."""
    chain: list[int] = []
    current_index = memory_index
    while len(chain) < 16:
        following = index.get(memories[current_index].superseded_by)
        if following is None or _created(memories[following]) <= _created(memories[current_index]):
            break
        chain.append(following)
        current_index = following
    return chain


def _created(memory: mem.Memory) -> tuple[int, int]:
    return (memory.created_at.seconds, memory.created_at.nanos)


def _shared(a: set[str], b: set[str]) -> float:
    """How much of the smaller statement the other holds."""
    return len(a & b) / min(len(a), len(b)) if a and b else 0.0


def _alike(a: set[str], b: set[str]) -> float:
    """How much of the larger statement the other holds: "Blood type checked." is not a restatement
    of "My blood type is O negative."."""
    return len(a & b) / max(len(a), len(b)) if a and b else 0.0

