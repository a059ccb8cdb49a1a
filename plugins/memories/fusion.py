"""Hybrid ranking: the meaning of a memory first, its words as evidence weighted by confidence.

Reciprocal rank fusion gave a weak keyword ranking as much say as a strong semantic one: a question
put in other words ("where is the extra key?") matches a few of a note's words, and those few
pushed the right note down (hybrid put the right note first less often than semantic search alone,
eval/retrieval). Here every candidate of either ranking is scored by its cosine to the query (from
its stored vector when only the keyword search found it), plus the keyword evidence scaled by how
much of the query the memory contains: a name or a code that the memory holds whole counts fully,
one word of a paraphrase hardly at all.

    score = cosine + KEYWORD_WEIGHT * coverage**3 * bm25 / best_bm25

Measured on eval/retrieval (scripts/eval_retrieval.py): at least as good as the better single mode
on every kind of question and at every k, for weights 0.15 to 0.3 with the cube of the coverage
(with its square, a question sharing two common words with an unrelated note, "every week", pushed
a right note out of the top 10).
"""

from __future__ import annotations

import numpy as np

from .store import WORD, Record, query_words

KEYWORD_WEIGHT = 0.25


def query_terms(text: str, common: frozenset[str] = frozenset()) -> set[str]:
    """The words of a query that say something (those a keyword search looks for)."""
    return set(query_words(text, common)[0])


def coverage(terms: set[str], record: Record) -> float:
    """The share of the query's words the memory holds (in its text or tags)."""
    if not terms:
        return 0.0
    words = set(WORD.findall(record.text.lower())) | {t.lower() for t in record.tags}
    return len(terms & words) / len(terms)


def fuse(semantic: list[tuple[str, float]], keyword: list[tuple[str, float]], records: dict[str, Record],
         terms: set[str], vector: np.ndarray | None, model: str) -> list[tuple[str, dict[str, float]]]:
    """(id, {"semantic", "keyword", "hybrid"}) best first, for the candidates still in `records`."""
    cosines = dict(semantic)
    bm25 = dict(keyword)
    floor = min(cosines.values(), default=0.0)
    best = max(bm25.values(), default=0.0) or 1.0
    scored = []
    for memory_id in dict.fromkeys([*cosines, *bm25]):
        record = records.get(memory_id)
        if record is None:
            continue
        entry: dict[str, float] = {}
        if memory_id in cosines:
            entry["semantic"] = cosine = cosines[memory_id]
        elif vector is not None and record.embedding is not None and record.embedding_model == model:
            cosine = float(record.embedding @ vector)  # found by its words only: its meaning, measured
        else:
            cosine = floor
        if memory_id in bm25:
            entry["keyword"] = bm25[memory_id]
        evidence = coverage(terms, record) ** 3 * bm25.get(memory_id, 0.0) / best
        entry["hybrid"] = cosine + KEYWORD_WEIGHT * evidence
        scored.append((memory_id, entry))
    scored.sort(key=lambda item: -item[1]["hybrid"])
    return scored
