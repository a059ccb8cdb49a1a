#!/usr/bin/env python3
"""Retrieval over personal notes, measured: recall@1/5/10 and MRR per search mode and per kind of
question, search latency, and how often an outdated note outranks the one that replaced it.

    python scripts/eval_retrieval.py [--floor eval/retrieval/floor.json] [--json out.json]

The set (eval/retrieval/): 70 notes a person keeps (health, home, car, money, work, family,
friends, travel, hobbies), ten of which restate an earlier note's fact after it changed (stored
later, as a person would write them), and 100 questions of five kinds:

    paraphrase  the question shares few words with the note ("extra key" for "spare house key")
    name        a person, place or product named in one note ("Dr. Yilmaz", "Bitwarden")
    exact       a code or number copied from a note ("B-KT 4471", "QX7PLM")
    multi       the answer spans two or three notes (recall@k counts the share found)
    changed     a fact that changed: the newer note is the answer, the older one is "stale"

Each note is stored through the kernel (MemoryService/Store, the default embedding model, as
`cortex serve` runs it), in file order; each question is searched in each mode with top_k 10.
recall@k = |expected in the top k| / min(k, |expected|); MRR = 1 / rank of the first expected.
"stale above" is the share of changed questions where the outdated note ranks above the current
one (or the current one is missing and the outdated one is there).

With --floor, exits 1 when a figure is below its floor (the CI gate: tests/memories/test_retrieval_eval.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SET = Path(__file__).resolve().parent.parent / "eval" / "retrieval"
MODES = ("semantic", "keyword", "hybrid")
KINDS = ("paraphrase", "name", "exact", "multi", "changed")
TOP_K = 10


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (SET / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def recall(ranked: list[str], expected: list[str], k: int) -> float:
    return len(set(ranked[:k]) & set(expected)) / min(k, len(expected))


def reciprocal_rank(ranked: list[str], expected: list[str]) -> float:
    return next((1.0 / (i + 1) for i, n in enumerate(ranked) if n in expected), 0.0)


def stale_above(ranked: list[str], expected: list[str], stale: list[str]) -> bool:
    def rank(ids):
        return min((ranked.index(n) for n in ids if n in ranked), default=len(ranked) + 1)

    return rank(stale) < rank(expected)


def run(notes: list[dict], questions: list[dict], progress=print) -> dict:
    from cortex.contracts.memories.v1 import memories_pb2 as pb
    from cortex.contracts.memories.v1 import memories_pb2_grpc
    from cortex.kernel.sdk import configure_logging
    from cortex.kernel.sdk.testing import RunningKernel, kernel_config

    configure_logging("warning")
    # No vector cache: each mode pays for embedding its query, as a first search does.
    config_text = ('[plugins]\ndisabled = ["ollama", "openai", "a2a", "http", "mcp", "marketplace"]\n'
                   '[plugins.mlx]\nembed_cache = 0\n')
    with tempfile.TemporaryDirectory() as tmp:
        config = kernel_config(Path(tmp) / "cortex.toml", config_text, Path(tmp) / "data", governance=False)
        kernel = RunningKernel(config)
        kernel.start()
        stub = kernel.stub(memories_pb2_grpc.MemoryServiceStub)
        try:
            for i, note in enumerate(notes):
                stub.Store(pb.StoreRequest(text=note["text"], tags=note.get("tags", []), metadata={"note": note["id"]}),
                           timeout=120)
                if (i + 1) % 20 == 0 or i + 1 == len(notes):
                    progress(f"stored {i + 1}/{len(notes)} notes")
            modes = {"semantic": pb.SEARCH_MODE_SEMANTIC, "keyword": pb.SEARCH_MODE_KEYWORD, "hybrid": pb.SEARCH_MODE_HYBRID}
            rows: dict[str, list[dict]] = {m: [] for m in MODES}
            latency: dict[str, list[float]] = {m: [] for m in MODES}
            for name, mode in modes.items():
                for _ in range(3):  # warm this mode's path before timing it
                    stub.Search(pb.SearchRequest(query="warm up", top_k=TOP_K, mode=mode), timeout=60)
                for q in questions:
                    t0 = time.perf_counter()
                    reply = stub.Search(pb.SearchRequest(query=q["q"], top_k=TOP_K, mode=mode), timeout=60)
                    latency[name].append(time.perf_counter() - t0)
                    ranked = [r.memory.metadata["note"] for r in reply.results]
                    rows[name].append({"kind": q["kind"], "ranked": ranked, "q": q})
                progress(f"searched {len(questions)} questions, {name}")
        finally:
            kernel.stop()
    return score(rows, latency)


def score(rows: dict[str, list[dict]], latency: dict[str, list[float]]) -> dict:
    report: dict = {}
    for mode, mode_rows in rows.items():
        by_kind: dict = {}
        for kind in (*KINDS, "all"):
            chosen = [r for r in mode_rows if kind in ("all", r["kind"])]
            if not chosen:
                continue
            figures = {
                f"r@{k}": statistics.fmean(recall(r["ranked"], r["q"]["expect"], k) for r in chosen) for k in (1, 5, 10)
            }
            figures["mrr"] = statistics.fmean(reciprocal_rank(r["ranked"], r["q"]["expect"]) for r in chosen)
            figures["n"] = len(chosen)
            changed = [r for r in chosen if r["q"].get("stale")]
            if changed:
                figures["stale_above"] = statistics.fmean(
                    stale_above(r["ranked"], r["q"]["expect"], r["q"]["stale"]) for r in changed)
            by_kind[kind] = figures
        ms = sorted(s * 1000 for s in latency[mode])
        by_kind["latency_ms"] = {"p50": statistics.median(ms), "p99": ms[max(0, int(len(ms) * 0.99) - 1)]}
        report[mode] = by_kind
    report["misses"] = {mode: [{"q": r["q"]["q"], "expect": r["q"]["expect"], "got": r["ranked"][:3]}
                               for r in mode_rows if reciprocal_rank(r["ranked"], r["q"]["expect"]) < 1]
                        for mode, mode_rows in rows.items()}
    return report


def table(report: dict) -> str:
    lines = [f"{'mode':9s} {'kind':11s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'MRR':>6s} {'stale>':>7s} {'n':>4s}"]
    for mode in MODES:
        for kind in (*KINDS, "all"):
            f = report[mode].get(kind)
            if f is None:
                continue
            stale = f"{f['stale_above']:7.2f}" if "stale_above" in f else " " * 7
            lines.append(f"{mode:9s} {kind:11s} {f['r@1']:6.2f} {f['r@5']:6.2f} {f['r@10']:6.2f} {f['mrr']:6.2f} {stale} {f['n']:4d}")
        lat = report[mode]["latency_ms"]
        lines.append(f"{mode:9s} {'latency':11s} p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms")
    return "\n".join(lines)


def below_floor(report: dict, floor: dict) -> list[str]:
    """What falls short: hybrid's overall floors, hybrid against the better single mode on every
    kind (within `tolerance`), and the share of outdated notes ranked first."""
    problems = []
    hybrid = report["hybrid"]
    for figure, minimum in floor.get("hybrid_all", {}).items():
        if hybrid["all"][figure] < minimum:
            problems.append(f"hybrid {figure} {hybrid['all'][figure]:.3f} is below its floor {minimum}")
    tolerance = floor.get("tolerance", 0.0)
    for kind in KINDS:
        for figure in ("r@1", "r@5", "r@10"):
            best = max(report[m][kind][figure] for m in ("semantic", "keyword"))
            if hybrid[kind][figure] < best - tolerance:
                problems.append(f"hybrid {figure} on {kind} questions is {hybrid[kind][figure]:.3f}, "
                                f"below the better single mode ({best:.3f})")
    most = floor.get("hybrid_stale_above_max")
    if most is not None and hybrid["changed"]["stale_above"] > most:
        problems.append(f"an outdated note outranks the current one in {hybrid['changed']['stale_above']:.0%} of changed "
                        f"questions (at most {most:.0%})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", type=Path, help="a JSON file of floors; exit 1 when one is not met")
    parser.add_argument("--json", dest="json_out", type=Path)
    parser.add_argument("--misses", action="store_true", help="print the questions each mode did not answer first")
    opts = parser.parse_args()
    report = run(load("notes.jsonl"), load("questions.jsonl"), progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(table(report))
    if opts.misses:
        for mode, misses in report["misses"].items():
            print(f"\n{mode} misses:")
            for m in misses:
                print(f"  {m['q']!r}: expected {m['expect']}, got {m['got']}")
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
    # The report is out. Skip interpreter finalization: with the kernel's asyncio server and a
    # blocking gRPC client in one process, grpc's polling thread may collect objects while the
    # interpreter tears down and abort the process (C++ terminate), 1 run in 3 here.
    os._exit(code)
