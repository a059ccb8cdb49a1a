"""The answer gate: eval/answers scored by scripts/eval_answers.py must meet its floors."""

from __future__ import annotations

import pytest

from ..eval_gates import EvalScript

GATE = EvalScript("eval_answers", "answers")


def test_the_set_is_what_the_script_says():
    ev = GATE.module()
    notes, questions = ev.load("notes.jsonl"), ev.load("questions.jsonl")
    ids = {n["id"] for n in notes}
    assert len(notes) == 60 and len(questions) == 100 and len(list((ev.SET / "notes").glob("*.md"))) == 8
    assert {q["kind"] for q in questions} == set(ev.KINDS) and {q["split"] for q in questions} == {"dev", "test"}
    order = [n["id"] for n in notes]
    for note in notes:  # a change comes after the note it restates
        if "changes" in note:
            assert note["changes"] in ids and order.index(note["changes"]) < order.index(note["id"])
    for q in questions:
        assert (q["kind"] == "none") == (not q["must"]), q
        assert (q["kind"] == "changed") <= bool(q["must_not"]), q


def _row(kind, answer, answer_kind="extractive", citations=1, must=(("300",),), must_not=()):
    return {"q": {"id": "q", "kind": kind, "q": "?", "split": "dev", "must": [list(g) for g in must], "must_not": list(must_not)},
            "answer": answer, "answer_kind": answer_kind, "citations": ["x"] * citations, "seconds": 0.01, "answer_ms": 1.0}


def test_the_scores_and_the_floor_fail_worse_answers():
    ev = GATE.module()
    floor = GATE.floor()
    good = [_row("fact", "It is 300 euros [1]"), _row("changed", "Thursday [1]", must=(("Thursday",),), must_not=("Monday",)),
            _row("none", "Nothing in your memories answers it.", "none", 0, must=())]
    report = ev.score(good)
    assert report["answerable"]["correct"] == 1 and report["none"]["declined"] == 1 and report["all"]["sentences"] == 1
    assert ev.below_floor(report, floor) == []
    stale = ev.score([_row("changed", "Monday, now Thursday", must=(("Thursday",),), must_not=("Monday",)), *good[2:]])
    assert stale["changed"]["correct"] == 0 and stale["changed"]["stale_quoted"] == 1
    assert any("stale_quoted" in p for p in ev.below_floor(stale, floor))
    padded = ev.score([_row("fact", "300 [1] and more [2] and more [3]", citations=3), *good[1:]])
    assert any("all.sentences" in p for p in ev.below_floor(padded, floor))
    answers_all = ev.score([*good[:2], _row("none", "a recipe line [1]")])
    assert any("none.declined" in p for p in ev.below_floor(answers_all, floor))


@pytest.mark.slow
def test_answers_meet_their_floor(tmp_path):
    """The whole evaluation through a real kernel (the embedded defaults, no language model)."""
    out = tmp_path / "report.json"
    report = GATE.meets_floor(out, timeout=900)
    assert report["latency_ms"]["run_p50"] < 1000  # generous: CI's 2 cores are shared; the README has the figure
