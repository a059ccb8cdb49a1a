"""Keyword ranking of a query whose every word is common: only the newest matches within the
caller's filters are ranked (COMMON_CANDIDATES), so its cost stays flat as the store grows, and
another namespace's newer memories never crowd the caller's out."""

from __future__ import annotations

from cortex.plugins.memories.service import content_hash, now_ms
from cortex.plugins.memories.store import COMMON_CANDIDATES, Query, Record, SqliteStore


def record(i: int, text: str, namespace: str, now: int) -> Record:
    return Record(f"m{i:05d}", "note", text, [], {}, "test", now + i, now + i, None,
                  content_hash("note", text, [], namespace), "", None, namespace)


def test_a_common_query_ranks_the_newest_matches_of_the_callers_namespace(tmp_path):
    store = SqliteStore(tmp_path / "memories" / "memories.db", "OFF")
    now = now_ms()
    mine = 3 * COMMON_CANDIDATES
    for i in range(mine):  # "garden" in every one of them: a common word
        store.insert(record(i, f"garden note {i}" + (" garden garden" if i < 10 else ""), "alice", now))
    for i in range(mine, mine + 2 * COMMON_CANDIDATES):  # newer, another namespace
        store.insert(record(i, f"garden note {i}", "bob", now))
    store._writes_since_common = 1000  # recount the common words now
    assert "garden" in store.common_terms()

    found = store.keyword("the garden", Query(namespaces=["alice"]), now + 10**6, 10)
    assert len(found) == 10
    ids = [int(memory_id[1:]) for memory_id, _ in found]
    assert all(mine - COMMON_CANDIDATES <= i < mine for i in ids)  # alice's newest, none of bob's
    # the older notes that say it three times are not ranked: the bound, not the best BM25 of all
    assert not any(i < 10 for i in ids)

    rare = store.keyword("note 3", Query(namespaces=["alice"]), now + 10**6, 5)  # a selective word: all ranked
    assert rare and int(rare[0][0][1:]) == 3
    store.close()
