"""ModelService over Ollama (local or Ollama Cloud), through the official `ollama` client.

Errors keep their meaning: a server that is down is UNAVAILABLE (the router may fail over), an
unknown model NOT_FOUND. Settings: see plugin.py.
"""

from __future__ import annotations

from typing import Any

import grpc

from cortex.contracts.models.v1 import models_pb2 as pb
from cortex.contracts.models.v1 import models_pb2_grpc
from cortex.kernel import Health
from cortex.kernel.sdk import models as common

httpx = common.lazy_import("httpx")  # loaded at the first call that needs it
ollama = common.lazy_import("ollama")  # loaded at the first call that needs it

PROBE_TIMEOUT = 2.0


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, ollama.ResponseError):
        if exc.status_code == 404:
            return grpc.StatusCode.NOT_FOUND, f"ollama: {exc.error} (pull the model with `ollama pull`)"
        if exc.status_code == 400:
            return grpc.StatusCode.INVALID_ARGUMENT, f"ollama rejected the request: {exc.error}"
        if exc.status_code == 403:  # this request, not ollama: counted against no circuit
            return grpc.StatusCode.PERMISSION_DENIED, f"ollama refused the request: {exc.error}"
        if exc.status_code == 429:
            return grpc.StatusCode.RESOURCE_EXHAUSTED, f"ollama: {exc.error}"
        return grpc.StatusCode.UNAVAILABLE, f"ollama answered {exc.status_code}: {exc.error}"
    if isinstance(exc, (httpx.TransportError, ConnectionError)):
        return grpc.StatusCode.UNAVAILABLE, f"cannot reach ollama: {exc}"
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"




def errors() -> tuple[type[BaseException], ...]:
    """What a provider call may raise (read when one fails: the SDK loads no sooner)."""
    return (ollama.ResponseError, httpx.HTTPError, ConnectionError)


class OllamaServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, plugin):
        self.p = plugin

    def _options(self, params: common.Generation) -> dict[str, Any]:
        options: dict[str, Any] = {"temperature": params.temperature, "seed": params.seed, "num_predict": params.max_tokens}
        if params.top_p:
            options["top_p"] = params.top_p
        if params.stop:
            options["stop"] = params.stop
        return options

    async def _params(self, request, context) -> common.Generation:
        params = await common.valid_generation(request, context)
        params.model = params.model or self.p.settings.get("model", "llama3.2")
        params.messages = params.messages or [{"role": "user", "content": params.prompt}]
        return params

    async def Generate(self, request, context):
        params = await self._params(request, context)
        try:
            reply = await self.p.client().chat(
                model=params.model, messages=params.messages, options=self._options(params), stream=False
            )
        except errors() as exc:
            await context.abort(*status_for(exc))
        return pb.GenerateResponse(
            text=reply.message.content or "",
            finish_reason=reply.done_reason or "stop",
            usage=pb.Usage(prompt_tokens=reply.prompt_eval_count or 0, completion_tokens=reply.eval_count or 0),
            model=reply.model or params.model,
            provider=self.p.name,
        )

    async def GenerateStream(self, request, context):
        params = await self._params(request, context)
        final = None
        try:
            stream = await self.p.client().chat(
                model=params.model, messages=params.messages, options=self._options(params), stream=True
            )
            async for part in stream:
                if part.message and part.message.content:
                    yield pb.GenerateStreamResponse(delta=part.message.content)
                if part.done:
                    final = part
        except errors() as exc:
            await context.abort(*status_for(exc))
        yield pb.GenerateStreamResponse(
            done=True,
            finish_reason=(final.done_reason if final else "") or "stop",
            usage=pb.Usage(
                prompt_tokens=(final.prompt_eval_count or 0) if final else 0,
                completion_tokens=(final.eval_count or 0) if final else 0,
            ),
            model=(final.model if final else "") or params.model,
            provider=self.p.name,
        )

    async def Embed(self, request, context):
        texts = await common.valid_texts(request, context)
        model = request.model or self.p.settings.get("embedding_model", "all-minilm")
        try:
            reply = await self.p.client().embed(model=model, input=texts)
        except errors() as exc:
            await context.abort(*status_for(exc))
        vectors = [list(v) for v in reply.embeddings]
        return pb.EmbedResponse(
            model=reply.model or model,
            dimension=len(vectors[0]) if vectors else 0,
            vectors=[pb.Vector(values=v) for v in vectors],
            provider=self.p.name,
        )

    async def ListModels(self, request, context):
        try:
            listed = await self.p.client().list()
        except errors() as exc:
            await context.abort(*status_for(exc))
        embedding = self.p.settings.get("embedding_model", "all-minilm")
        generation = self.p.settings.get("model", "llama3.2")
        models = []
        for m in listed.models:
            name = m.model or ""
            base = name.split(":")[0]
            models.append(
                pb.ModelInfo(
                    id=name,
                    kind=pb.ModelInfo.KIND_EMBEDDING if "embed" in name or base == embedding else pb.ModelInfo.KIND_GENERATION,
                    local=self.p.local,
                    provider=self.p.name,
                    default=base in (embedding, generation) or name in (embedding, generation),
                )
            )
        return pb.ListModelsResponse(models=models)


async def probe(plugin) -> Health:
    """GET /api/tags, bounded in time: the cheapest real answer an Ollama server gives."""
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, headers=plugin.headers()) as http:
            reply = await http.get(f"{plugin.host.rstrip('/')}/api/tags")
            reply.raise_for_status()
    except httpx.HTTPError as exc:
        return Health(False, f"{plugin.host}: {type(exc).__name__}: {exc}")
    return Health(True, plugin.host)
