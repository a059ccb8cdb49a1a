"""Extractive answers: a question answered with sentences of the memories themselves, each cited.

What a run answers when no language model is configured (the built-in tiny model writes noise).
Deterministic: the same question and memories give the same answer. Each sentence is scored by
its meaning's closeness to the question (cosine of their embeddings, when an embedding model
answers) plus the share of the question's words it contains, and a little for its memory's rank
in the search, so that ties go to the better match. Nothing is paraphrased.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# a sentence ends at . ! ? and a space, but not after a title ("Dr. Hartmann" is one name)
SENTENCE_END = re.compile(r"(?<!\bDr\.)(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bSt\.)(?<!\bProf\.)(?<=[.!?])\s+|\n+")
WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be but by can do does did for from had has have how i if in is it its me my of on or "
    "our so that the their them then there these they this to was we were what when where which who why will "
    "with would you your about know noted note".split()
)
HEADING_LINE = re.compile(r"^#{1,6}\s")
MAX_SENTENCES_PER_MEMORY = 40
MAX_SENTENCE_CHARS = 400
RANK_WEIGHT = 0.02  # per place in the search's order: enough to break ties, never to outvote meaning
WORDS_WEIGHT = 0.5


@dataclass(frozen=True)
class Sentence:
    memory_index: int  # rank of its memory in the input
    position: int  # within the memory
    text: str


@dataclass(frozen=True)
class Chosen:
    sentence: Sentence
    score: float


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


def content_words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOPWORDS}


def choose(
    question: str,
    sentences: list[Sentence],
    limit: int,
    question_vector: np.ndarray | None = None,
    sentence_vectors: np.ndarray | None = None,
) -> list[Chosen]:
    """The `limit` best sentences, best first. Without vectors, only words and rank count; a
    sentence that shares nothing with the question is chosen only when no sentence does."""
    asked = content_words(question)
    scored = []
    for i, sentence in enumerate(sentences):
        words = len(asked & content_words(sentence.text)) / len(asked) if asked else 0.0
        meaning = 0.0
        if question_vector is not None and sentence_vectors is not None:
            meaning = float(np.dot(sentence_vectors[i], question_vector))
        score = meaning + WORDS_WEIGHT * words - RANK_WEIGHT * sentence.memory_index
        scored.append((score, words > 0 or meaning > 0.3, sentence))
    relevant = [item for item in scored if item[1]] or scored[:1]
    relevant.sort(key=lambda item: (-item[0], item[2].memory_index, item[2].position))
    return [Chosen(sentence, round(score, 6)) for score, _, sentence in relevant[:limit]]


def normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
