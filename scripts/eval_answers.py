#!/usr/bin/env python3
"""Answers over personal notes, measured: are they right, current, short, and do they say "I don't
know" when no note says.

    python scripts/eval_answers.py [--split dev|test|all] [--floor eval/answers/floor.json] [--json out.json]
    python scripts/eval_answers.py --calibrate      # search the scorer's settings on the dev split

The set (eval/answers/, see its README): 60 notes stored in order through MemoryService/Store (12
restate an older note's fact after it changed), a folder of 8 Markdown notes added as a watched
source, and 100 questions: "fact" (one sentence of a note answers), "section" (a section of a
Markdown note), "changed" (the current fact is required, the stale one must not appear) and
"none" (no note answers). Each question is a `cortex run` as a user types it: CerebrumService/
Execute with the goal, through the kernel, with the embedded defaults (no language model: the
extractive answer).

    correct            an answerable question answered (not declined), holding one alternative of
                       every `must` group and none of `must_not`
    declined           the share of "none" questions answered with answer_kind "none"
    wrongly declined   the share of answerable questions answered "none"
    sentences          the mean number of sentences (citations) of the answers given
    stale quoted       the share of "changed" questions whose answer holds the stale fact
    p50 / p99          a question's whole run (plan, recall, answer), and the answer step alone

With --floor, exits 1 when a figure misses its floor (the CI gate: tests/cerebrum/test_answer_eval.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

SET = Path(__file__).resolve().parent.parent / "eval" / "answers"
KINDS = ("fact", "section", "changed", "none")


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (SET / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def holds(answer: str, question: dict) -> bool:
    text = answer.lower()
    return all(any(alt.lower() in text for alt in group) for group in question["must"]) and not any(
        bad.lower() in text for bad in question.get("must_not", []))


def run(notes: list[dict], questions: list[dict], progress=print) -> list[dict]:
    """Each question's run: the summary, the memories recalled, and its times."""
    from google.protobuf import json_format

    from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as cb
    from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
    from cortex.contracts.memories.v1 import memories_pb2 as pb
    from cortex.contracts.memories.v1 import memories_pb2_grpc, sources_pb2, sources_pb2_grpc
    from cortex.kernel.sdk import configure_logging
    from cortex.kernel.sdk.testing import RunningKernel, kernel_config

    configure_logging("warning")
    config_text = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "http", "mcp", "marketplace"]\n'
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "notes"
        shutil.copytree(SET / "notes", folder)
        config = kernel_config(Path(tmp) / "cortex.toml", config_text, Path(tmp) / "data", governance=False)
        kernel = RunningKernel(config)
        kernel.start()
        try:
            memories = kernel.stub(memories_pb2_grpc.MemoryServiceStub)
            for i, note in enumerate(notes):
                memories.Store(pb.StoreRequest(text=note["text"], tags=note.get("tags", []), metadata={"note": note["id"]}),
                               timeout=120)
                if (i + 1) % 20 == 0 or i + 1 == len(notes):
                    progress(f"stored {i + 1}/{len(notes)} notes")
            sources = kernel.stub(sources_pb2_grpc.SourceServiceStub)
            added = sources.AddSource(sources_pb2.AddSourceRequest(source=sources_pb2.Source(name="notes", path=str(folder))),
                                      timeout=300)
            progress(f"synced the folder: {added.source.files_indexed} files, {added.source.chunks} passages")
            cerebrum = kernel.stub(cerebrum_pb2_grpc.CerebrumServiceStub)
            for _ in range(3):  # warm the path (models loaded, caches filled) before timing it
                list(cerebrum.Execute(cb.ExecuteRequest(goal="What is the warm-up question?"), timeout=120))
            for i, q in enumerate(questions):
                started = time.perf_counter()
                events = list(cerebrum.Execute(cb.ExecuteRequest(goal=q["q"]), timeout=120))
                seconds = time.perf_counter() - started
                summary = events[-1].summary
                trace = cerebrum.GetTrace(cb.GetTraceRequest(id=summary.trace_id), timeout=30).trace
                recall = next(s for s in trace.steps if s.step_id == "recall")
                answer = next(s for s in trace.steps if s.step_id == "answer")
                rows.append({
                    "q": q, "answer": summary.answer, "answer_kind": summary.answer_kind,
                    "citations": [c.text for c in summary.citations], "seconds": seconds, "answer_ms": answer.latency_ms,
                    "recalled": [r["memory"] for r in json.loads(recall.response_json or "{}").get("results", [])],
                })
                if (i + 1) % 25 == 0 or i + 1 == len(questions):
                    progress(f"asked {i + 1}/{len(questions)} questions")
            if OPTIONS.get("calibrate"):
                models = kernel.stub(__import__("cortex.contracts.models.v1.models_pb2_grpc",
                                                fromlist=["x"]).ModelServiceStub)
                features(rows, models, json_format)
        finally:
            kernel.stop()
    return rows


def score(rows: list[dict]) -> dict:
    report: dict = {}
    for kind in (*KINDS, "answerable", "all"):
        chosen = [r for r in rows if kind == "all" or r["q"]["kind"] == kind
                  or (kind == "answerable" and r["q"]["kind"] != "none")]
        if not chosen:
            continue
        answerable = [r for r in chosen if r["q"]["kind"] != "none"]
        unanswerable = [r for r in chosen if r["q"]["kind"] == "none"]
        given = [r for r in chosen if r["answer_kind"] != "none"]
        figures: dict = {"n": len(chosen)}
        if answerable:
            figures["correct"] = statistics.fmean(r["answer_kind"] != "none" and holds(r["answer"], r["q"]) for r in answerable)
            figures["wrongly_declined"] = statistics.fmean(r["answer_kind"] == "none" for r in answerable)
        if unanswerable:
            figures["declined"] = statistics.fmean(r["answer_kind"] == "none" for r in unanswerable)
        if given:
            figures["sentences"] = statistics.fmean(len(r["citations"]) for r in given)
        changed = [r for r in chosen if r["q"]["kind"] == "changed"]
        if changed:
            figures["stale_quoted"] = statistics.fmean(
                any(bad.lower() in r["answer"].lower() for bad in r["q"]["must_not"]) for r in changed)
        report[kind] = figures
    run_ms = sorted(r["seconds"] * 1000 for r in rows)
    answer_ms = sorted(r["answer_ms"] for r in rows)
    report["latency_ms"] = {"run_p50": statistics.median(run_ms), "run_p99": run_ms[max(0, int(len(run_ms) * 0.99) - 1)],
                            "answer_p50": statistics.median(answer_ms),
                            "answer_p99": answer_ms[max(0, int(len(answer_ms) * 0.99) - 1)]}
    report["misses"] = [{"id": r["q"]["id"], "kind": r["q"]["kind"], "q": r["q"]["q"], "answer_kind": r["answer_kind"],
                         "answer": r["answer"][:300]}
                        for r in rows if (r["q"]["kind"] == "none") != (r["answer_kind"] == "none")
                        or (r["q"]["kind"] != "none" and not holds(r["answer"], r["q"]))]
    return report


def table(report: dict) -> str:
    lines = [f"{'kind':11s} {'correct':>8s} {'declined':>9s} {'wrongly':>8s} {'sentences':>10s} {'stale':>6s} {'n':>4s}"]

    def cell(figures: dict, name: str, width: int) -> str:
        return f"{figures[name]:{width}.2f}" if name in figures else " " * width

    for kind in (*KINDS, "answerable", "all"):
        f = report.get(kind)
        if f is None:
            continue
        lines.append(f"{kind:11s} {cell(f, 'correct', 8)} {cell(f, 'declined', 9)} {cell(f, 'wrongly_declined', 8)} "
                     f"{cell(f, 'sentences', 10)} {cell(f, 'stale_quoted', 6)} {f['n']:4d}")
    lat = report["latency_ms"]
    lines.append(f"latency: a run p50 {lat['run_p50']:.1f} ms, p99 {lat['run_p99']:.1f} ms; "
                 f"the answer step p50 {lat['answer_p50']:.1f} ms, p99 {lat['answer_p99']:.1f} ms")
    return "\n".join(lines)


def below_floor(report: dict, floor: dict) -> list[str]:
    problems = []
    for figure, minimum in floor.get("at_least", {}).items():
        kind, name = figure.split(".")
        if report[kind][name] < minimum:
            problems.append(f"{figure} {report[kind][name]:.3f} is below its floor {minimum}")
    for figure, maximum in floor.get("at_most", {}).items():
        kind, name = figure.split(".")
        if report[kind][name] > maximum:
            problems.append(f"{figure} {report[kind][name]:.3f} is above its ceiling {maximum}")
    return problems


# -- calibration: the scorer's settings searched on recorded runs --------------------------------------------

def features(rows: list[dict], models, json_format) -> None:
    """Per recalled sentence: its cosine to the question and the key-term coverage (what
    kernel/sdk/relevance.py sums), so that settings can be tried without the kernel."""
    from cortex.contracts.memories.v1 import memories_pb2 as pb
    from cortex.contracts.models.v1 import models_pb2 as mpb
    from cortex.kernel.sdk import relevance
    from cortex.plugins.cerebrum import extract

    for row in rows:
        memories = [json_format.ParseDict(m, pb.Memory(), ignore_unknown_fields=True) for m in row["recalled"]]
        headings = [m.metadata.get("heading", "") for m in memories]
        sentences = extract.sentences_of([m.text for m in memories], headings)
        passages = [extract.passage(s, headings[s.memory_index]) for s in sentences]
        row["memories"], row["sentences"] = memories, sentences
        if not passages:
            row["cosines"], row["coverage"], row["wrong"] = [], [], []
            continue
        vectors = models.Embed(mpb.EmbedRequest(texts=[row["q"]["q"], *passages]), timeout=60).vectors
        query = vectors[0].values
        row["cosines"] = [sum(a * b for a, b in zip(query, v.values, strict=True)) for v in vectors[1:]]
        terms = relevance.key_terms(row["q"]["q"])
        row["coverage"] = [relevance.coverage(terms, p) for p in passages]
        row["wrong"] = [not ok for ok in relevance.typed(row["q"]["q"], passages)]


def replay(rows: list[dict], weight: float, threshold: float, penalty: float) -> list[dict]:
    """`rows` answered again with these settings (the extractive step's choice, as extract.py makes it)."""
    import numpy as np

    from cortex.kernel.sdk import relevance
    from cortex.plugins.cerebrum import extract

    out = []
    for row in rows:
        raw = relevance.combined(np.array(row["cosines"]), row["coverage"], row["wrong"], weight)
        scores = relevance.calibrated(raw, threshold) if len(raw) else []
        saved = extract.RANK_PENALTY
        extract.RANK_PENALTY = penalty
        try:
            chosen = extract.choose(row["q"]["q"], row["sentences"], scores, row["memories"], 3) if len(raw) else []
        finally:
            extract.RANK_PENALTY = saved
        out.append({**row, "answer_kind": "extractive" if chosen else "none",
                    "answer": " ".join(c.sentence.text for c in chosen), "citations": [c.sentence.text for c in chosen]})
    return out


def calibrate(rows: list[dict]) -> None:
    """Grid-search on the dev split: the settings (key-term weight, threshold, rank penalty) that
    maximise correct + declined (each a share) with at most 0.1 of the answerable declined and 1.5
    sentences an answer; then the same settings on the test split."""
    dev = [r for r in rows if r["q"]["split"] == "dev"]
    test = [r for r in rows if r["q"]["split"] == "test"]
    results = []
    for weight, threshold, margin in itertools.product(
            [0.3, 0.5, 0.75], [x / 100 for x in range(50, 121, 5)], [0.0, 0.1, 0.2, 0.3, 0.5]):
        report = score(replay(dev, weight, threshold, margin))
        if report["all"].get("sentences", 0) > 1.5 or report["answerable"]["wrongly_declined"] > 0.1:
            continue
        objective = report["answerable"]["correct"] + report["none"]["declined"]
        results.append((objective, weight, threshold, margin, report))
    results.sort(key=lambda item: -item[0])
    print("best settings on dev (correct + declined):")
    for objective, weight, threshold, margin, report in results[:10]:
        print(f"  weight {weight:.2f} threshold {threshold:.2f} rank penalty {margin:.2f}: {objective:.3f} "
              f"(correct {report['answerable']['correct']:.2f}, declined {report['none']['declined']:.2f}, "
              f"wrongly {report['answerable']['wrongly_declined']:.2f}, sentences {report['all']['sentences']:.2f})")
    if results:
        _, weight, threshold, margin, _ = results[0]
        print(f"\nthe best on test: weight {weight} threshold {threshold} rank penalty {margin}")
        print(table(score(replay(test, weight, threshold, margin))))


OPTIONS: dict = {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "test", "all"), default="all")
    parser.add_argument("--floor", type=Path, help="a JSON file of floors; exit 1 when one is not met")
    parser.add_argument("--json", dest="json_out", type=Path)
    parser.add_argument("--misses", action="store_true", help="print the questions answered wrongly")
    parser.add_argument("--calibrate", action="store_true", help="search the scorer's settings on the dev split")
    opts = parser.parse_args()
    OPTIONS["calibrate"] = opts.calibrate
    questions = [q for q in load("questions.jsonl") if opts.split == "all" or opts.calibrate or q["split"] == opts.split]
    rows = run(load("notes.jsonl"), questions, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if opts.calibrate:
        calibrate(rows)
        return 0
    report = score(rows)
    print(table(report))
    if opts.misses:
        for miss in report["misses"]:
            print(f"  {miss['id']} {miss['kind']:8s} {miss['q']!r}\n      -> {miss['answer_kind']}: {miss['answer']!r}")
    if opts.json_out:
        opts.json_out.write_text(json.dumps(report, indent=2))
    if opts.floor:
        problems = below_floor(report, json.loads(opts.floor.read_text()))
        for p in problems:
            print(f"BELOW FLOOR: {p}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # As in eval_retrieval.py: skip interpreter finalization (grpc's polling thread may abort it).
    os._exit(code)
