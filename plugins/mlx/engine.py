"""The MLX engine: loads models once, lazily, off the event loop, and runs every MLX operation on
one worker thread (MLX's default stream and random state are per process: one thread keeps
seeded sampling reproducible).

Embedding calls that arrive together are batched together. Generation is greedy at temperature
0, and seeded otherwise (seed 0 when the request gives none), so the same request gives the same
bytes, across calls and restarts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from cortex.plugins.models_common import Generation

log = structlog.get_logger("cortex.mlx")


@dataclass
class Chunk:
    text: str
    done: bool = False
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine:
    def __init__(self, generation_model: Path | str, embedding_model: Path, embed_batch: int = 32):
        self.generation_path = generation_model
        self.embedding_path = embedding_model
        self.embed_batch = embed_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cortex-mlx")
        self._generator: tuple[Any, Any] | None = None
        self._encoder: Any = None
        self._load_lock = threading.Lock()
        self._queue: list[tuple[list[str], asyncio.Future]] = []
        self._batch_task: asyncio.Task | None = None

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- loading (on the worker thread) -------------------------------------------------------------
    def encoder(self):
        with self._load_lock:
            if self._encoder is None:
                from .bert import SentenceEncoder

                started = time.monotonic()
                log.info("model.loading", kind="embedding", path=str(self.embedding_path), stage="weights")
                self._encoder = SentenceEncoder(self.embedding_path)
                log.info("model.loaded", kind="embedding", seconds=round(time.monotonic() - started, 2))
            return self._encoder

    def generator(self):
        with self._load_lock:
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
        """Vectors for `texts`; calls arriving while a batch runs are encoded together next."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((texts, future))
        if self._batch_task is None or self._batch_task.done():
            self._batch_task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            pending, self._queue = self._queue, []
            texts = [t for item, _ in pending for t in item]
            try:
                vectors = await self.run(self._encode, texts)
            except Exception as exc:  # noqa: BLE001 - every waiting caller learns why
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            offset = 0
            for item, future in pending:
                if not future.done():
                    future.set_result(vectors[offset : offset + len(item)])
                offset += len(item)

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

        done = loop.run_in_executor(self._executor, work)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()
            await asyncio.shield(done)
