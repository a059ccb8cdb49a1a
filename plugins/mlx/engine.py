"""The MLX engine: loads models once, lazily, off the event loop. Embeddings and generation each
have a worker thread of their own, so a long generation never holds up an embedding (since
0.31.2 MLX gives each thread its own default stream; each model's arrays are made and evaluated
on its own thread only). Generation is greedy at temperature 0, and seeded otherwise (seed 0
when the request gives none), so the same request gives the same bytes, across calls and restarts.

Embeddings are batched dynamically, as text-embeddings-inference does: requests that arrive while
a batch is being encoded wait for the next one, which takes every text queued then, `batch`
texts at a time (a request never waits for company when the worker is free: at low load each
is encoded at once). Vectors of recent texts are kept (`cache` of them, least recently used
first out): the model is deterministic, so a repeated query costs nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from cortex.kernel.sdk.models import Generation

log = structlog.get_logger("cortex.mlx")


@dataclass
class Chunk:
    text: str
    done: bool = False
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class VectorCache:
    """Vectors of recently embedded texts, least recently used first out."""

    def __init__(self, size: int):
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, text: str) -> np.ndarray | None:
        vector = self._vectors.get(text)
        if vector is None:
            self.misses += 1
            return None
        self._vectors.move_to_end(text)
        self.hits += 1
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        if self.size <= 0:
            return
        self._vectors[text] = vector
        self._vectors.move_to_end(text)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)


class Engine:
    def __init__(self, generation_model: Path | str, embedding_model: Path, embed_batch: int = 32, embed_cache: int = 4096):
        self.generation_path = generation_model
        self.embedding_path = embedding_model
        self.embed_batch = embed_batch
        self._generation = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cortex-mlx-generate")
        self._embedding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cortex-mlx-embed")
        self._generator: tuple[Any, Any] | None = None
        self._encoder: Any = None
        self._load_locks = {"generation": threading.Lock(), "embedding": threading.Lock()}
        self._queue: list[tuple[list[str], asyncio.Future]] = []
        self._batch_task: asyncio.Task | None = None
        self.cache = VectorCache(embed_cache)
        self.batches = self.batched_texts = 0  # their ratio is the mean batch size

    def close(self) -> None:
        for executor in (self._generation, self._embedding):
            executor.shutdown(wait=True, cancel_futures=True)

    # -- loading (each on its model's worker thread) -------------------------------------------------
    def encoder(self):
        with self._load_locks["embedding"]:
            if self._encoder is None:
                from .bert import SentenceEncoder

                started = time.monotonic()
                log.info("model.loading", kind="embedding", path=str(self.embedding_path), stage="weights")
                self._encoder = SentenceEncoder(self.embedding_path)
                log.info("model.loaded", kind="embedding", seconds=round(time.monotonic() - started, 2))
            return self._encoder

    def generator(self):
        with self._load_locks["generation"]:
            if self._generator is None:
                from mlx_lm import load

                started = time.monotonic()
                log.info("model.loading", kind="generation", path=str(self.generation_path), stage="weights+tokenizer")
                self._generator = load(str(self.generation_path))
                log.info("model.loaded", kind="generation", seconds=round(time.monotonic() - started, 2))
            return self._generator

    @property
    def loaded(self) -> dict[str, bool]:
        return {"generation": self._generator is not None, "embedding": self._encoder is not None}

    # -- embeddings -----------------------------------------------------------------------------------
    def _encode(self, texts: list[str]) -> np.ndarray:
        encoder = self.encoder()
        # similar lengths together: less padding per batch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), encoder.dimension), dtype=np.float32)
        for start in range(0, len(order), self.embed_batch):
            chunk = order[start : start + self.embed_batch]
            out[chunk] = encoder.encode([texts[i] for i in chunk])
        return out

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors for `texts`: from the cache, or encoded in the next batch with whatever else
        is waiting then."""
        cached = [self.cache.get(t) for t in texts]
        missing = list(dict.fromkeys(t for t, v in zip(texts, cached, strict=True) if v is None))
        if missing:
            future = asyncio.get_running_loop().create_future()
            self._queue.append((missing, future))
            if self._batch_task is None or self._batch_task.done():
                self._batch_task = asyncio.create_task(self._drain())
            fresh = dict(zip(missing, await future, strict=True))
            cached = [v if v is not None else fresh[t] for t, v in zip(texts, cached, strict=True)]
        return np.stack(cached) if cached else np.zeros((0, 0), dtype=np.float32)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            count = taken = 0  # a batch: requests in arrival order, up to `embed_batch` texts (at least one request)
            for item, _ in self._queue:
                if taken and count + len(item) > self.embed_batch:
                    break
                count, taken = count + len(item), taken + 1
            pending, self._queue = self._queue[:taken], self._queue[taken:]
            texts = list(dict.fromkeys(t for item, _ in pending for t in item))
            try:
                encoded = await loop.run_in_executor(self._embedding, self._encode, texts)
            except Exception as exc:  # noqa: BLE001 - every waiting caller learns why
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches, self.batched_texts = self.batches + 1, self.batched_texts + len(texts)
            vectors = dict(zip(texts, encoded, strict=True))
            for text, vector in vectors.items():
                self.cache.put(text, vector.copy())  # (a row alone: a view would keep its whole batch alive)
            for item, future in pending:
                if not future.done():
                    future.set_result([vectors[t] for t in item])

    # -- generation ------------------------------------------------------------------------------------
    def _prompt(self, tokenizer: Any, params: Generation) -> list[int]:
        if params.messages:
            if getattr(tokenizer, "chat_template", None):
                return tokenizer.apply_chat_template(params.messages, add_generation_prompt=True)
            text = "".join(f"{m['role']}: {m['content']}\n" for m in params.messages) + "assistant: "
            return tokenizer.encode(text)
        return tokenizer.encode(params.prompt or "")

    def _generate(self, params: Generation, cancelled: threading.Event) -> Iterator[Chunk]:
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        model, tokenizer = self.generator()
        prompt = self._prompt(tokenizer, params)
        mx.random.seed(params.seed)
        sampler = make_sampler(params.temperature, top_p=params.top_p)
        text, emitted = "", 0
        hold = max((len(s) for s in params.stop), default=1) - 1
        finish, generated = "length", 0
        for response in stream_generate(model, tokenizer, prompt, max_tokens=params.max_tokens, sampler=sampler):
            if cancelled.is_set():
                return
            generated = response.generation_tokens
            text += response.text
            cut = min((text.find(s) for s in params.stop if s in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                break
            if response.finish_reason:
                finish = response.finish_reason
            safe = len(text) - hold  # a stop sequence may still be forming in the tail
            if safe > emitted:
                yield Chunk(text[emitted:safe])
                emitted = safe
        if len(text) > emitted:
            yield Chunk(text[emitted:])
        yield Chunk("", True, finish, len(prompt), generated)

    async def stream(self, params: Generation) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()
        cancelled = threading.Event()

        def work() -> None:
            try:
                for chunk in self._generate(params, cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        done = loop.run_in_executor(self._generation, work)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()
            await asyncio.shield(done)
