"""The MLX engine's scheduling: concurrent embeddings share bounded batches and each caller gets
its own vectors; repeated texts come from the cache; a long generation never holds up an
embedding (each has its own worker thread)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from cortex.kernel.sdk.models import Generation
from cortex.plugins.mlx.blas import use_fast_blas
from cortex.plugins.mlx.engine import Engine
from cortex.plugins.mlx.plugin import packaged_minilm
from cortex.plugins.mlx.tiny_model import build_tiny_model

TEXTS = [f"note {i} about topic {i % 3}, written on day {i * 7}" for i in range(12)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def engine(tiny_model, **kwargs) -> Engine:
    use_fast_blas()
    return Engine(tiny_model, packaged_minilm(), **kwargs)


def test_concurrent_embeds_share_bounded_batches_and_get_their_own_vectors(tiny_model):
    async def scenario():
        e = engine(tiny_model, embed_batch=4, embed_cache=0)
        try:
            alone = {t: (await e.embed([t]))[0] for t in TEXTS}
            e.batches = e.batched_texts = 0
            together = await asyncio.gather(*(e.embed([t]) for t in TEXTS))
            return alone, together, e.batches, e.batched_texts
        finally:
            e.close()

    alone, together, batches, texts = asyncio.run(scenario())
    assert texts == len(TEXTS) and batches < len(TEXTS)  # coalesced...
    assert batches >= len(TEXTS) / 4  # ...never more than embed_batch texts at a time
    for text, vectors in zip(TEXTS, together, strict=True):
        assert vectors.shape == (1, 384)
        assert np.allclose(vectors[0], alone[text], atol=1e-5), text


def test_repeated_texts_come_from_the_cache_least_recently_used_out(tiny_model):
    async def scenario():
        e = engine(tiny_model, embed_cache=2)
        try:
            first = await e.embed(["a", "b"])
            again = await e.embed(["b", "a", "b"])  # all hits, in the order asked
            await e.embed(["c"])  # evicts the least recently used ("b" was used after "a"... then "a", "b")
            await e.embed(["a"])
            return first, again, e
        finally:
            e.close()

    first, again, e = asyncio.run(scenario())
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[1], first[0]) and again.shape == (3, 384)
    assert e.batches == 3 and e.cache.hits == 3  # ["a","b"], ["c"], then "a" again: "b" and "c" were newer


def test_a_long_generation_does_not_hold_up_embeddings(tiny_model):
    async def scenario():
        e = engine(tiny_model, embed_cache=0)
        try:
            await e.embed(["warm the encoder"])
            long = Generation(model="", prompt="plan", messages=[], max_tokens=4000, temperature=0.0, top_p=1.0, seed=0, stop=[])
            chunks = e.stream(long)
            await anext(chunks)  # the generation is under way on its own thread
            started = time.monotonic()
            await e.embed(["an embedding while the generation runs"])
            embedded = time.monotonic() - started
            rest = 0
            async for _ in chunks:
                rest += 1
            generated = time.monotonic() - started
            return embedded, generated, rest
        finally:
            e.close()

    embedded, generated, rest = asyncio.run(scenario())
    assert rest > 10 and embedded < generated / 2, (embedded, generated)
