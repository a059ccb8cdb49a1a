#!/usr/bin/env python3
"""MLX model throughput, with its baseline in the same run:

- embeddings: all-MiniLM-L6-v2 in MLX (this project's encoder) vs sentence-transformers on
  PyTorch CPU, same model files, same texts, batch 32 -> texts/s each and the ratio;
- generation: tokens/s of the tiny Llama model through mlx-lm.

Needs: the base install (MLX and mlx-lm, on Linux or macOS) and the default embedding model
(`scripts/setup.sh`, or `.venv/bin/cortex models install`); for the baseline only,
sentence-transformers (it brings PyTorch): without it the ratio is skipped, with a note.
Small: `python scripts/bench_models.py --smoke` (one batch of 32 texts, 1 round, 32 tokens: checks
that it runs, not figures to quote).

    pip install sentence-transformers     # the baseline only (brings PyTorch)
    python scripts/bench_models.py [--texts 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def corpus(n: int) -> list[str]:
    topics = ["the quarterly plan", "a grocery list", "notes from the design review", "my running log",
              "the kernel's routing policy", "a recipe for bread", "questions for the dentist"]
    return [f"Note {i}: {topics[i % len(topics)]} — item {i % 13} moved to {('Monday', 'Thursday')[i % 2]} "
            f"after the {i % 5 + 1}th review, see attachment {i}." for i in range(n)]


def rate(fn, texts: list[str], batch: int, rounds: int) -> float:
    fn(texts[:batch])  # warm-up
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            fn(texts[i : i + batch])
        rates.append(len(texts) / (time.perf_counter() - started))
    return statistics.median(rates)


def needs() -> None:
    """Exit 2 with one line saying how to get what this benchmark needs, when it is missing."""
    from importlib.util import find_spec

    import needs as check

    if find_spec("mlx") is None or find_spec("mlx_lm") is None:
        check.missing(__file__, "needs MLX and mlx-lm (Linux or macOS)", ".venv/bin/pip install -e . (or scripts/setup.sh)")
    check.embedding_model(__file__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256, help="tokens generated a round")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: that it runs (overrides the sizes)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.texts, opts.batch, opts.rounds, opts.tokens = 32, 32, 1, 32
    needs()

    from cortex.plugins.mlx.blas import use_fast_blas

    blas = use_fast_blas()
    from cortex.plugins.mlx.bert import SentenceEncoder
    from cortex.plugins.mlx.plugin import packaged_minilm

    model_dir = packaged_minilm()
    texts = corpus(opts.texts)
    encoder = SentenceEncoder(model_dir)
    mlx_rate = rate(encoder.encode, texts, opts.batch, opts.rounds)
    print(f"MLX embeddings ({'OpenBLAS ' + blas if blas else 'reference BLAS'}): {mlx_rate:8.1f} texts/s")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers not installed: no baseline, no ratio (.venv/bin/pip install sentence-transformers)")
        st_rate = None
    else:
        st = SentenceTransformer(str(model_dir), device="cpu")
        st_rate = rate(lambda b: st.encode(b, batch_size=opts.batch), texts, opts.batch, opts.rounds)
        print(f"sentence-transformers (torch {torch.__version__}, {torch.get_num_threads()} threads): {st_rate:8.1f} texts/s")
        print(f"ratio MLX / sentence-transformers: x{mlx_rate / st_rate:.2f} (target >= 1.0)")

    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    from cortex.plugins.mlx.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="cortex-bench-models-") as tmp:
        model, tokenizer = load(str(build_tiny_model(Path(tmp) / "tiny")))
        prompt = tokenizer.encode("Remember the plan for the week")
        speeds = []
        for _ in range(opts.rounds):
            last = None
            for response in stream_generate(model, tokenizer, prompt, max_tokens=opts.tokens, sampler=make_sampler(0.0)):
                last = response  # the last one carries the run's rates
            speeds.append(last.generation_tps)
    print(f"MLX generation, tiny Llama (2 layers, 64 wide): {statistics.median(speeds):8.1f} tokens/s "
          f"({last.generation_tokens} tokens a run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
