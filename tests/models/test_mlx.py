"""The mlx provider through the kernel's gRPC API: generation, streaming, determinism, embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from cortex.contracts.models.v1 import models_pb2 as pb
from cortex.contracts.models.v1 import models_pb2_grpc

from ..conftest import cortex_env, run_cli

ONLY_MLX = '[plugins]\ndisabled = ["ollama", "openai"]\n'
REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture
def models(start_kernel, channel_to):
    def start(config: str = ONLY_MLX):
        target, kt = start_kernel(config)
        return models_pb2_grpc.ModelServiceStub(channel_to(target)), kt

    return start


def test_generation_is_served_by_mlx_and_greedy_by_default(models):
    stub, _ = models()
    request = pb.GenerateRequest(prompt="Remember the plan", max_tokens=16)
    first, call = stub.Generate.with_call(request, timeout=60)
    assert (first.provider, first.model) == ("mlx", "cortex-tiny-llama")
    assert first.usage.completion_tokens == 16 and first.finish_reason == "length"
    assert first.usage.prompt_tokens > 0 and first.text
    assert dict(call.trailing_metadata())["x-cortex-provider"] == "mlx"
    assert stub.Generate(request, timeout=60).text == first.text


def test_the_same_seed_gives_the_same_bytes_even_after_a_restart(start_kernel, channel_to, tmp_path):
    request = pb.GenerateRequest(
        messages=[pb.ChatMessage(role="user", content="plan my week")], max_tokens=24, temperature=0.9, top_p=0.95, seed=7
    )
    texts = []
    for run in range(2):  # two kernels, two data dirs: the tiny model is rebuilt identically too
        target, kt = start_kernel(ONLY_MLX, env={"CORTEX_DATA_DIR": str(tmp_path / f"run{run}")})
        stub = models_pb2_grpc.ModelServiceStub(channel_to(target))
        texts += [stub.Generate(request, timeout=60).text, stub.Generate(request, timeout=60).text]
        kt.stop()
    assert len(set(texts)) == 1


def test_different_seeds_sample_differently(models):
    stub, _ = models()
    base = {'prompt': "memory", 'max_tokens': 24, 'temperature': 1.0}
    outputs = {stub.Generate(pb.GenerateRequest(**base, seed=s), timeout=60).text for s in range(4)}
    assert len(outputs) > 1


def test_streaming_gives_the_same_text_in_chunks_then_a_final_message(models):
    stub, _ = models()
    request = pb.GenerateRequest(prompt="note", max_tokens=20)
    whole = stub.Generate(request, timeout=60)
    messages = list(stub.GenerateStream(pb.GenerateStreamRequest.FromString(request.SerializeToString()), timeout=60))
    assert len(messages) > 2
    assert "".join(m.delta for m in messages) == whole.text
    final = messages[-1]
    assert final.done and (final.provider, final.model) == ("mlx", "cortex-tiny-llama")
    assert (final.finish_reason, final.usage) == (whole.finish_reason, whole.usage)
    assert not any(m.done for m in messages[:-1])


def test_stop_sequences_end_generation_before_them(models):
    stub, _ = models()
    whole = stub.Generate(pb.GenerateRequest(prompt="note", max_tokens=40), timeout=60).text
    stop = whole[10:13]
    cut = stub.Generate(pb.GenerateRequest(prompt="note", max_tokens=40, stop=[stop]), timeout=60)
    assert cut.text == whole[: whole.index(stop)] and cut.finish_reason == "stop"
    streamed = list(stub.GenerateStream(pb.GenerateStreamRequest(prompt="note", max_tokens=40, stop=[stop]), timeout=60))
    assert "".join(m.delta for m in streamed) == cut.text


def test_embeddings_match_sentence_transformers(models):
    stub, _ = models()
    reply = stub.Embed(pb.EmbedRequest(texts=REFERENCE["texts"]), timeout=120)
    assert (reply.provider, reply.model, reply.dimension) == ("mlx", "all-MiniLM-L6-v2", 384)
    ours = np.array([v.values for v in reply.vectors])
    reference = np.array(REFERENCE["vectors"])
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)
    cosines = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.99, cosines


@pytest.mark.slow
def test_embeddings_match_a_live_sentence_transformers_run(models):
    st = pytest.importorskip("sentence_transformers")
    from cortex.plugins.mlx.plugin import packaged_minilm

    texts = ["a fresh sentence for the live check", "another one, longer than the first, about gRPC kernels"]
    expected = st.SentenceTransformer(str(packaged_minilm()), device="cpu").encode(texts, normalize_embeddings=True)
    stub, _ = models()
    ours = np.array([v.values for v in stub.Embed(pb.EmbedRequest(texts=texts), timeout=120).vectors])
    assert ((ours * expected).sum(axis=1) >= 0.99).all()


def test_concurrent_embed_calls_are_batched_and_each_gets_its_own_vectors(models):
    import concurrent.futures

    stub, _ = models(ONLY_MLX + "[plugins.mlx]\nembed_cache = 0\n")  # every vector encoded, none remembered
    texts = [f"note {i} about topic {i % 3}" for i in range(12)]
    alone = {t: stub.Embed(pb.EmbedRequest(texts=[t]), timeout=60).vectors[0].values for t in texts[:3]}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda t: stub.Embed(pb.EmbedRequest(texts=[t]), timeout=60), texts))
    for text, reply in zip(texts[:3], replies[:3], strict=True):
        assert np.allclose(reply.vectors[0].values, alone[text], atol=1e-5)


def test_list_models(models):
    stub, _ = models()
    listed = {(m.id, m.kind, m.local, m.default) for m in stub.ListModels(pb.ListModelsRequest(), timeout=10).models}
    assert listed == {
        ("cortex-tiny-llama", pb.ModelInfo.KIND_GENERATION, True, True),
        ("all-MiniLM-L6-v2", pb.ModelInfo.KIND_EMBEDDING, True, True),
    }


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    [
        ("Generate", pb.GenerateRequest(), "INVALID_ARGUMENT", "send a prompt or at least one message"),
        ("Generate", pb.GenerateRequest(prompt="x", max_tokens=10**6), "INVALID_ARGUMENT", "max_tokens is 1000000; the limit is 8192"),
        ("Generate", pb.GenerateRequest(prompt="x", temperature=-1), "INVALID_ARGUMENT", "temperature must be between 0 and 5"),
        (
            "Generate", pb.GenerateRequest(messages=[pb.ChatMessage(role="robot", content="x")]),
            "INVALID_ARGUMENT", "messages[0].role is 'robot'",
        ),
        ("Generate", pb.GenerateRequest(prompt="x", model="gpt-9"), "NOT_FOUND", "model 'gpt-9' is not served here"),
        ("Embed", pb.EmbedRequest(), "INVALID_ARGUMENT", "send at least one text"),
        ("Embed", pb.EmbedRequest(texts=["x"] * 2000), "INVALID_ARGUMENT",
         "texts has 2000 items, at most 1024 are allowed (repeated.max_items)"),
        ("Embed", pb.EmbedRequest(texts=["x" * 200_001]), "INVALID_ARGUMENT", "texts[0] is 200001 characters"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(models, method, request_, code, message):
    stub, _ = models()
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, method)(request_, timeout=30)
    assert err.value.code().name == code
    assert message in err.value.details()


def test_tiny_model_builds_byte_identically(tmp_path):
    from cortex.plugins.mlx.tiny_model import build_tiny_model, fingerprint

    assert fingerprint(build_tiny_model(tmp_path / "a")) == fingerprint(build_tiny_model(tmp_path / "b"))
    assert fingerprint(build_tiny_model(tmp_path / "c", seed=1)) != fingerprint(tmp_path / "a")


def test_cli_generate_and_embed(tmp_path, serve_process):
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED='["ollama", "openai"]')
    kernel = serve_process(env=env)
    one = run_cli("generate", "hello", "--seed", "3", "--temperature", "0.7", "--max-tokens", "8", "--target", kernel.target, env=env)
    two = run_cli("generate", "hello", "--seed", "3", "--temperature", "0.7", "--max-tokens", "8", "--target", kernel.target, env=env)
    assert one.returncode == 0, one.stderr
    assert one.stdout == two.stdout and "[mlx cortex-tiny-llama: 8 tokens, length]" in one.stderr
    assert "is the built-in model for tests" in one.stderr and "built-in model" not in one.stdout
    streamed = run_cli("generate", "hello", "--stream", "--max-tokens", "8", "--target", kernel.target, env=env)
    plain = run_cli("generate", "hello", "--max-tokens", "8", "--target", kernel.target, env=env)
    assert streamed.stdout == plain.stdout
    embedded = json.loads(run_cli("embed", "a cat", "a dog", "--json", "--target", kernel.target, env=env).stdout)
    assert embedded["model"] == "all-MiniLM-L6-v2" and embedded["dimension"] == 384
    assert len(embedded["vectors"]) == 2 and len(embedded["vectors"][0]) == 384
    listed = run_cli("models", "list", "--target", kernel.target, env=env)
    assert "mlx       cortex-tiny-llama  generation  local  yes" in listed.stdout
