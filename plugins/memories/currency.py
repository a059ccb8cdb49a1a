"""The current statement of a fact before the outdated one it replaced.

A memory that supersedes another (StoreRequest.supersedes, or the restatement rule) goes right
above it in a search's ranking when it answers the query at least ANSWERS_AS_WELL as well: asked
"when do we fly to Porto?", the rebooked trip outranks the first booking although the first one
shares more words with the question. Asked for the old booking code itself ("QX7PLM"), the old
note keeps its place: the new one does not hold that code and scores a fraction of it (measured on
eval/retrieval: a superseder that answers the question scores 0.62-1.1 of the note it replaced, one
that does not 0.19-0.31).
"""

from __future__ import annotations

ANSWERS_AS_WELL = 0.5


def current_first(ranked: list[tuple[str, dict]], newer: dict[str, str]) -> list[tuple[str, dict]]:
    """`ranked` ((id, {"hybrid": score, ...}) best first) with each superseder that answers the query
    moved up right above the memory it superseded; `newer` maps an old id to its superseder's."""
    if not newer:
        return ranked
    entries = dict(ranked)
    out: list[tuple[str, dict]] = []
    placed: set[str] = set()
    for memory_id, entry in ranked:
        if memory_id in placed:
            continue
        chain, current = [], memory_id  # the successors that answer, oldest first
        while current in newer and len(chain) < 16:
            current = newer[current]
            if current in placed or current not in entries or not _answers(entries[current], entry):
                break
            chain.append(current)
        for successor in reversed(chain):  # the newest first
            out.append((successor, entries[successor]))
            placed.add(successor)
        out.append((memory_id, entry))
        placed.add(memory_id)
    return out


def _answers(successor: dict, outdated: dict) -> bool:
    old = outdated["hybrid"]
    return old <= 0 or successor["hybrid"] >= ANSWERS_AS_WELL * old


def newer_of(store, ids: list[str]) -> dict[str, str]:
    """old id -> the id of the memory that supersedes it, for those of `ids` that are superseded
    (a MemoryStore's links; on the caller's thread)."""
    wanted = set(ids)
    return {link.old_id: link.new_id for link in store.links(ids) if link.old_id in wanted}
