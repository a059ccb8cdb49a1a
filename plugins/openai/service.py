"""ModelService over an OpenAI-compatible endpoint, through the official `openai` client.

Errors keep their meaning: endpoint trouble is UNAVAILABLE (the router may fail over), a request the
endpoint rejects is INVALID_ARGUMENT or NOT_FOUND. Settings: see plugin.py.
"""

from __future__ import annotations

from typing import Any

import grpc

from cortex.contracts.models.v1 import models_pb2 as pb
from cortex.contracts.models.v1 import models_pb2_grpc
from cortex.kernel import Health
from cortex.kernel.sdk import models as common

openai = common.lazy_import("openai")  # loaded at the first call that needs it

PROBE_TIMEOUT = 2.0


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """An openai client error as a gRPC status: provider trouble is UNAVAILABLE (so the router
    may fail over), a request the endpoint rejects keeps its meaning."""
    if isinstance(exc, openai.APITimeoutError):
        return grpc.StatusCode.UNAVAILABLE, f"the endpoint timed out: {exc}"
    if isinstance(exc, openai.APIConnectionError):
        return grpc.StatusCode.UNAVAILABLE, f"cannot reach the endpoint: {exc}"
    if isinstance(exc, openai.RateLimitError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"rate limited by the endpoint: {exc.message}"
    if isinstance(exc, openai.NotFoundError):
        return grpc.StatusCode.NOT_FOUND, f"the endpoint does not know it: {exc.message}"
    if isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError)):
        return grpc.StatusCode.INVALID_ARGUMENT, f"the endpoint rejected the request: {exc.message}"
    if isinstance(exc, openai.PermissionDeniedError):  # this request (a model the key may not use), not the endpoint
        return grpc.StatusCode.PERMISSION_DENIED, f"the endpoint refused the request: {exc.message}"
    if isinstance(exc, openai.APIStatusError):
        return grpc.StatusCode.UNAVAILABLE, f"the endpoint answered {exc.status_code}: {exc.message}"
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


class OpenAIServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, plugin):
        self.p = plugin

    async def _client(self, context) -> openai.AsyncOpenAI:
        client = self.p.client()
        if client is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"no API key: set {self.p.settings.get('api_key_env', 'OPENAI_API_KEY')} for {self.p.base_url}",
            )
        return client

    def _arguments(self, params: common.Generation) -> dict[str, Any]:
        messages = params.messages or [{"role": "user", "content": params.prompt}]
        arguments: dict[str, Any] = {
            "model": params.model or self.p.settings.get("model", "gpt-4o-mini"),
            "messages": messages,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "seed": params.seed,
        }
        if params.top_p:
            arguments["top_p"] = params.top_p
        if params.stop:
            arguments["stop"] = params.stop
        return arguments

    async def _params(self, request, context) -> common.Generation:
        return await common.valid_generation(request, context)

    async def Generate(self, request, context):
        params = await self._params(request, context)
        client = await self._client(context)
        try:
            reply = await client.chat.completions.create(**self._arguments(params))
        except openai.OpenAIError as exc:
            await context.abort(*status_for(exc))
        choice = reply.choices[0]
        usage = reply.usage
        return pb.GenerateResponse(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "",
            usage=pb.Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            ),
            model=reply.model,
            provider=self.p.name,
        )

    async def GenerateStream(self, request, context):
        params = await self._params(request, context)
        client = await self._client(context)
        finish, model, usage = "", params.model, None
        try:
            stream = await client.chat.completions.create(
                **self._arguments(params), stream=True, stream_options={"include_usage": True}
            )
            async for chunk in stream:
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield pb.GenerateStreamResponse(delta=choice.delta.content)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except openai.OpenAIError as exc:
            await context.abort(*status_for(exc))
        yield pb.GenerateStreamResponse(
            done=True,
            finish_reason=finish,
            usage=pb.Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            ),
            model=model,
            provider=self.p.name,
        )

    async def Embed(self, request, context):
        texts = await common.valid_texts(request, context)
        client = await self._client(context)
        model = request.model or self.p.settings.get("embedding_model", "text-embedding-3-small")
        try:
            reply = await client.embeddings.create(model=model, input=texts)
        except openai.OpenAIError as exc:
            await context.abort(*status_for(exc))
        vectors = [d.embedding for d in sorted(reply.data, key=lambda d: d.index)]
        return pb.EmbedResponse(
            model=reply.model,
            dimension=len(vectors[0]) if vectors else 0,
            vectors=[pb.Vector(values=v) for v in vectors],
            provider=self.p.name,
        )

    async def ListModels(self, request, context):
        client = await self._client(context)
        try:
            page = await client.models.list()
        except openai.OpenAIError as exc:
            await context.abort(*status_for(exc))
        embedding = self.p.settings.get("embedding_model", "text-embedding-3-small")
        generation = self.p.settings.get("model", "gpt-4o-mini")
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    id=m.id,
                    kind=pb.ModelInfo.KIND_EMBEDDING if "embed" in m.id else pb.ModelInfo.KIND_GENERATION,
                    local=self.p.local,
                    provider=self.p.name,
                    default=m.id in (embedding, generation),
                )
                async for m in page
            ]
        )


async def probe(plugin) -> Health:
    """GET /models, bounded in time."""
    client = plugin.client()
    if client is None:
        return Health(False, f"no API key in ${plugin.settings.get('api_key_env', 'OPENAI_API_KEY')}")
    try:
        await client.with_options(timeout=PROBE_TIMEOUT).models.list()
    except openai.OpenAIError as exc:
        return Health(False, f"{plugin.base_url}: {status_for(exc)[1]}")
    return Health(True, plugin.base_url)
