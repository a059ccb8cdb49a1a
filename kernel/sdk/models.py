"""What every ModelService provider checks the same way: request limits and their messages.

A library shared by the mlx, ollama and openai plugins (not a plugin: plugins never import each
other).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn
from urllib.parse import urlparse

import grpc

from cortex.contracts.models.v1 import models_pb2 as pb

from ..security.remote import is_loopback_host

MAX_TOKENS_LIMIT = 8192
DEFAULT_MAX_TOKENS = 256
MAX_PROMPT_CHARS = 200_000
MAX_TEXTS = 1024
MAX_TEXT_CHARS = 100_000
ROLES = {"system", "user", "assistant"}


def lazy_import(name: str) -> ModuleType:
    """`name`, imported on its first attribute access (importlib's LazyLoader): a provider's SDK
    costs the kernel's start-up nothing until a call needs it (the OpenAI SDK alone took 0.7 s)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


class BadRequest(ValueError):
    """The request cannot be served as sent; the message says what to send instead."""


@dataclass
class Generation:
    """A validated generation request, as plain values."""

    model: str
    prompt: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: list[str]


def generation(request: pb.GenerateRequest) -> Generation:
    if not request.messages and not request.prompt:
        raise BadRequest("send a prompt or at least one message")
    if request.messages and request.prompt:
        raise BadRequest("send either a prompt or messages, not both")
    size = len(request.prompt) + sum(len(m.content) for m in request.messages)
    if size > MAX_PROMPT_CHARS:
        raise BadRequest(f"the prompt is {size} characters; the limit is {MAX_PROMPT_CHARS}")
    for i, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise BadRequest(f"messages[{i}].role is {message.role!r}; use one of {', '.join(sorted(ROLES))}")
    if request.max_tokens > MAX_TOKENS_LIMIT:
        raise BadRequest(f"max_tokens is {request.max_tokens}; the limit is {MAX_TOKENS_LIMIT}")
    temperature = request.temperature if request.HasField("temperature") else 0.0
    if not 0.0 <= temperature <= 5.0 or temperature != temperature:
        raise BadRequest(f"temperature must be between 0 and 5, got {temperature}")
    top_p = request.top_p if request.HasField("top_p") else 0.0
    if not 0.0 <= top_p <= 1.0 or top_p != top_p:
        raise BadRequest(f"top_p must be between 0 and 1, got {top_p}")
    if len(request.stop) > 16 or any(not s for s in request.stop):
        raise BadRequest("stop takes at most 16 non-empty sequences")
    return Generation(
        model=request.model,
        prompt=request.prompt,
        messages=[{"role": m.role, "content": m.content} for m in request.messages],
        max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=temperature,
        top_p=top_p,
        seed=request.seed if request.HasField("seed") else 0,
        stop=list(request.stop),
    )


def texts(request: pb.EmbedRequest) -> list[str]:
    if not request.texts:
        raise BadRequest("send at least one text in texts")
    if len(request.texts) > MAX_TEXTS:
        raise BadRequest(f"{len(request.texts)} texts in one call; the limit is {MAX_TEXTS}: split the batch")
    for i, text in enumerate(request.texts):
        if len(text) > MAX_TEXT_CHARS:
            raise BadRequest(f"texts[{i}] is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    return list(request.texts)


async def refuse(context: grpc.aio.ServicerContext[Any, Any], error: BadRequest) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))


async def valid_generation(request: pb.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Generation:
    """The request's Generation, or the call ends with INVALID_ARGUMENT saying why."""
    try:
        return generation(request)
    except BadRequest as exc:
        await refuse(context, exc)


async def valid_texts(request: pb.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]) -> list[str]:
    """The request's texts, or the call ends with INVALID_ARGUMENT saying why."""
    try:
        return texts(request)
    except BadRequest as exc:
        await refuse(context, exc)


def unknown_model(context: grpc.aio.ServicerContext[Any, Any], model: str, known: list[str]) -> Awaitable[NoReturn]:
    return context.abort(
        grpc.StatusCode.NOT_FOUND, f"model {model!r} is not served here; models: {', '.join(known)} (or leave model empty)"
    )


def is_loopback_url(url: str) -> bool:
    """True when `url` points at this machine: a provider there is local."""
    return is_loopback_host(urlparse(url).hostname or "")
