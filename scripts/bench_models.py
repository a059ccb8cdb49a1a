#!/usr/bin/env python3
"""MLX model throughput, with its baseline in the same run:

- embeddings: all-MiniLM-L6-v2 in MLX (this project's encoder) vs sentence-transformers on
  PyTorch CPU, same model files, same texts, batch 32 -> texts/s each and the ratio;
- generation: tokens/s of the tiny Llama model through mlx-lm.

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()

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
        print("sentence-transformers not installed: no baseline (pip install sentence-transformers)")
        st_rate = None
    else:
        st = SentenceTransformer(str(model_dir), device="cpu")
        st_rate = rate(lambda b: st.encode(b, batch_size=opts.batch), texts, opts.batch, opts.rounds)
        print(f"sentence-transformers (torch {torch.__version__}, {torch.get_num_threads()} threads): {st_rate:8.1f} texts/s")
        print(f"ratio MLX / sentence-transformers: {mlx_rate / st_rate:.2f} (target >= 1.0)")

    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    from cortex.plugins.mlx.tiny_model import build_tiny_model

    folder = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    model, tokenizer = load(str(folder))
    prompt = tokenizer.encode("Remember the plan for the week")
    speeds = []
    for _ in range(opts.rounds):
        last = None
        for _ in stream_generate(model, tokenizer, prompt, max_tokens=256, sampler=make_sampler(0.0)):
            pass
        speeds.append(last.generation_tps)
    print(f"MLX generation, tiny Llama (2 layers, 64 wide): {statistics.median(speeds):8.1f} tokens/s "
          f"({last.generation_tokens} tokens a run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
