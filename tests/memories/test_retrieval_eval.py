"""The retrieval gate: eval/retrieval scored by scripts/eval_retrieval.py must meet its floors."""

from __future__ import annotations

import copy

import pytest

from ..eval_gates import EvalScript

GATE = EvalScript("eval_retrieval", "retrieval")


def test_the_set_is_what_the_script_says():
    ev = GATE.module()
    notes, questions = ev.load("notes.jsonl"), ev.load("questions.jsonl")
    ids = {n["id"] for n in notes}
    assert len(notes) == 70 and len(questions) == 100
    assert {q["kind"] for q in questions} == set(ev.KINDS)
    for q in questions:  # every answer is a note of the set; a changed fact names the note it replaced
        assert set(q["expect"]) <= ids, q
        assert set(q.get("stale", [])) <= ids, q
        assert (q["kind"] == "changed") == bool(q.get("stale")), q
    changes = {n["changes"] for n in notes if "changes" in n}
    assert changes <= ids and len(changes) == 10


def _report(hybrid_overrides=None):
    figures = {"r@1": 0.96, "r@5": 1.0, "r@10": 1.0, "mrr": 0.98, "n": 10}
    report = {m: {k: dict(figures) for k in ("paraphrase", "name", "exact", "multi", "changed", "all")}
              for m in ("semantic", "keyword", "hybrid")}
    report["hybrid"]["changed"]["stale_above"] = 0.0
    for (kind, figure), value in (hybrid_overrides or {}).items():
        report["hybrid"][kind][figure] = value
    return report


def test_the_floor_fails_a_worse_retrieval():
    ev = GATE.module()
    floor = GATE.floor()
    assert ev.below_floor(_report(), floor) == []
    assert any("below its floor" in p for p in ev.below_floor(_report({("all", "r@1"): 0.5}), floor))
    # hybrid worse than the better single mode on one kind, at any k
    assert any("on exact questions" in p for p in ev.below_floor(_report({("exact", "r@10"): 0.9}), floor))
    stale = copy.deepcopy(_report())
    stale["hybrid"]["changed"]["stale_above"] = 0.5
    assert any("outdated note" in p for p in ev.below_floor(stale, floor))


@pytest.mark.slow
def test_retrieval_meets_its_floor(tmp_path):
    """The whole evaluation through a real kernel (the default embedding model), as CI gates it."""
    out = tmp_path / "report.json"
    report = GATE.meets_floor(out, timeout=600)
    assert report["hybrid"]["all"]["r@1"] >= 0.85 and report["hybrid"]["all"]["r@5"] >= 0.97
    assert report["hybrid"]["changed"]["stale_above"] == 0.0
