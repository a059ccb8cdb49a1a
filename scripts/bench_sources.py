#!/usr/bin/env python3
"""Watched sources: how long a sync of a large notes folder takes when nothing, or one file,
changed, against reading every file again (`SyncSource full`) in the same run.

Needs: the base install and the default embedding model (`scripts/setup.sh`, or
`.venv/bin/cortex models install`); nothing more (the kernel runs in this process, temp folders).
Small: `python scripts/bench_sources.py --smoke` (20 notes, 1 run: checks that it runs and prints
its ratios, not figures to quote).

    python scripts/bench_sources.py [--files 5000] [--repeat 3]

Builds a vault of N Markdown notes (front matter, two or three headed sections each, ~1 KB),
adds it as a source of an in-process kernel (the first sync embeds every passage with the
default model, with progress), then times through gRPC:

- no change: SyncSource when nothing changed (each file stat'ed, none read);
- one changed: one file's section edited (that file read, one passage rewritten and embedded);
- full: SyncSource full=true (every file read and hashed, nothing re-embedded): the baseline.

Prints each p50 of --repeat runs and the ratios to the baseline. Target (issue #17): a 5,000-file
vault re-syncs in seconds when nothing changed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOPICS = ["garden", "boiler", "dentist", "car", "budget", "holiday", "recipe", "reading", "project", "meeting"]
WORDS = ("plan note call check water buy fix book ask send pay move clean write read visit repair order "
         "review share print cook walk").split()


def build(root: Path, files: int, rng: random.Random) -> None:
    for i in range(files):
        folder = root / f"area-{i % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        topic = TOPICS[i % len(TOPICS)]
        sections = []
        for s in range(2 + i % 2):
            body = " ".join(rng.choice(WORDS) for _ in range(40))
            sections.append(f"## {topic.title()} part {s}\n{body} (note {i}, {topic}).\n")
        text = f"---\ntags: [{topic}]\n---\n# Note {i}: {topic}\n\n" + "\n".join(sections)
        (folder / f"note-{i:05d}.md").write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 run: that it runs (overrides the sizes)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.files, opts.repeat = 20, 1
    if opts.files <= 7 + 50 * (opts.repeat - 1):  # the notes that runs edit (note 7, 57, ...)
        parser.error(f"--files must be over {7 + 50 * (opts.repeat - 1)} for --repeat {opts.repeat}")
    from cortex.plugins.mlx.plugin import packaged_minilm

    if packaged_minilm() is None:
        print(f"{Path(__file__).name} needs the default embedding model: .venv/bin/cortex models install", file=sys.stderr)
        return 2

    from cortex.contracts.memories.v1 import sources_pb2 as pb
    from cortex.contracts.memories.v1 import sources_pb2_grpc
    from cortex.kernel.sdk import configure_logging
    from cortex.kernel.sdk.testing import RunningKernel, kernel_config

    configure_logging("warning")
    rng = random.Random(17)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "vault"
        root.mkdir()
        config_text = ('[plugins]\ndisabled = ["ollama", "openai", "a2a", "http", "mcp", "marketplace"]\n'
                       "[plugins.memories]\nwatch = false\nrescan_seconds = 86400\n")
        config = kernel_config(Path(tmp) / "cortex.toml", config_text, Path(tmp) / "data", governance=False)
        kernel = RunningKernel(config)
        kernel.start()
        try:
            stub = kernel.stub(sources_pb2_grpc.SourceServiceStub)

            def sync(full: bool = False, show: bool = False) -> tuple[float, pb.SyncReport]:
                started = time.perf_counter()
                for event in stub.SyncSource(pb.SyncSourceRequest(name="vault", full=full), timeout=7200):
                    if show and event.phase == "reading" and (event.done // 64) % 10 == 0:
                        print(f"  first sync: {event.done}/{event.total} files", file=sys.stderr, flush=True)
                    report = event.report
                return time.perf_counter() - started, report

            # added while empty, so that the first sync is timed by SyncSource, with progress
            stub.AddSource(pb.AddSourceRequest(source=pb.Source(name="vault", path=str(root))), timeout=60)
            t0 = time.perf_counter()
            build(root, opts.files, rng)
            print(f"vault: {opts.files} notes written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            first, report = sync(show=True)
            print(f"first sync: {report.files_read} files, {report.chunks_added} passages embedded in {first:.1f} s",
                  file=sys.stderr)
            none, one, full = [], [], []
            for r in range(opts.repeat):
                none.append(sync()[0])
                victim = root / "area-07" / f"note-{7 + 50 * r:05d}.md"
                victim.write_text(victim.read_text().replace("part 0\n", f"part 0\nedited in run {r}: "))
                os.utime(victim)
                seconds, report = sync()
                assert (report.files_read, report.chunks_updated) == (1, 1), report
                one.append(seconds)
                full.append(sync(full=True)[0])
        finally:
            kernel.stop()
    base = statistics.median(full)
    print(f"{'sync of ' + str(opts.files) + ' files':34s} {'p50 s':>8s} {'vs full':>8s}")
    for name, runs in (("nothing changed", none), ("one file changed", one), ("full (every file read)", full)):
        p50 = statistics.median(runs)
        print(f"{name:34s} {p50:8.3f} {f'x{p50 / base:.2f}':>8s}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # as eval_retrieval.py: skip interpreter finalization with the in-process kernel
