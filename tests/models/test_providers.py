"""The ollama and openai providers through their official clients, and the hybrid routing of
ModelService: MLX first, failover, circuits, privacy."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.models.v1 import models_pb2 as pb
from cortex.contracts.models.v1 import models_pb2_grpc

from ..conftest import FakeClock
from .fake_servers import fake_vector


def stub_for(start_kernel, channel_to, config: str):
    target, kt = start_kernel(config)
    return models_pb2_grpc.ModelServiceStub(channel_to(target)), kt


def test_openai_compatible_endpoint_through_the_official_client(start_kernel, channel_to, openai_server):
    config = f"""
        [plugins]
        disabled = ["mlx", "ollama"]
        [plugins.openai]
        base_url = "{openai_server.base_url}"
        model = "fake-gpt"
        embedding_model = "fake-embed"
    """
    stub, _ = stub_for(start_kernel, channel_to, config)
    reply = stub.Generate(pb.GenerateRequest(prompt="hello there", max_tokens=5, seed=3, temperature=0.5), timeout=10)
    assert (reply.text, reply.provider, reply.model, reply.finish_reason) == ("echo: hello there", "openai", "fake-gpt", "stop")
    assert reply.usage.completion_tokens == 3
    _, _, sent = openai_server.requests[-1]
    assert (sent["seed"], sent["temperature"], sent["max_tokens"], sent["model"]) == (3, 0.5, 5, "fake-gpt")
    chunks = list(stub.GenerateStream(pb.GenerateStreamRequest(messages=[pb.ChatMessage(role="user", content="a b c")]), timeout=10))
    assert "".join(c.delta for c in chunks) == "echo: a b c"
    assert chunks[-1].done and chunks[-1].usage.completion_tokens == 4 and chunks[-1].provider == "openai"
    embedded = stub.Embed(pb.EmbedRequest(texts=["x", "yz"]), timeout=10)
    assert embedded.dimension == 8 and embedded.model == "fake-embed"
    for got, text in zip(embedded.vectors, ["x", "yz"], strict=True):
        assert list(got.values) == pytest.approx(fake_vector(text), abs=1e-6)
    listed = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert {(m.id, m.kind, m.default) for m in listed.models} == {
        ("fake-gpt", pb.ModelInfo.KIND_GENERATION, True),
        ("fake-embed", pb.ModelInfo.KIND_EMBEDDING, True),
    }


def test_ollama_through_the_official_client(start_kernel, channel_to, ollama_server):
    config = f"""
        [plugins]
        disabled = ["mlx", "openai"]
        [plugins.ollama]
        host = "{ollama_server.host}"
    """
    stub, kt = stub_for(start_kernel, channel_to, config)
    reply = stub.Generate(pb.GenerateRequest(prompt="plan the day", seed=11), timeout=10)
    assert (reply.text, reply.provider, reply.model) == ("echo: plan the day", "ollama", "llama3.2")
    _, path, sent = ollama_server.requests[-1]
    assert path == "/api/chat" and sent["options"]["seed"] == 11 and sent["options"]["temperature"] == 0.0
    chunks = list(stub.GenerateStream(pb.GenerateStreamRequest(prompt="one two"), timeout=10))
    assert "".join(c.delta for c in chunks) == "echo: one two" and chunks[-1].usage.completion_tokens == 3
    embedded = stub.Embed(pb.EmbedRequest(texts=["q"]), timeout=10)
    assert (embedded.model, embedded.dimension) == ("all-minilm", 8)
    listed = {m.id for m in stub.ListModels(pb.ListModelsRequest(), timeout=10).models}
    assert listed == {"llama3.2:latest", "all-minilm:latest"}
    ollama_provider = next(p for p in kt.kernel.registry.all_providers() if p.name == "ollama")
    assert ollama_provider.health.serving and ollama_provider.local  # from its /api/tags probe


def test_endpoint_errors_keep_their_meaning(start_kernel, channel_to, openai_server):
    config = f"""
        [plugins]
        disabled = ["mlx", "ollama"]
        [plugins.openai]
        base_url = "{openai_server.base_url}"
    """
    stub, _ = stub_for(start_kernel, channel_to, config)
    openai_server.fail_with = 400
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(prompt="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "rejected the request" in err.value.details()
    openai_server.fail_with = 503
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(prompt="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def broken_mlx_config(tmp_path, openai_server, extra: str = "") -> str:
    (tmp_path / "not-a-model").mkdir(exist_ok=True)
    return f"""
        [plugins]
        disabled = ["ollama"]
        [plugins.mlx]
        generation_model = "{tmp_path / 'not-a-model'}"
        [plugins.openai]
        base_url = "{openai_server.base_url}"
        local = false  # stands in for a cloud endpoint
        {extra}
    """


def test_failover_from_a_broken_mlx_and_its_circuit(start_kernel, channel_to, openai_server, tmp_path):
    extra = "[circuit]\nfailure_threshold = 2\nreset_timeout_seconds = 0.5\nretries = 0"
    stub, kt = stub_for(start_kernel, channel_to, broken_mlx_config(tmp_path, openai_server, extra))
    for _ in range(2):
        reply, call = stub.Generate.with_call(pb.GenerateRequest(prompt="still answered"), timeout=20)
        assert reply.provider == "openai" and reply.text == "echo: still answered"
        assert dict(call.trailing_metadata())["x-cortex-route"] == "mlx:UNAVAILABLE,openai:ok"
    breaker = kt.kernel.registry.breaker("mlx")
    assert breaker.state.value == "open"
    clock = breaker.clock = FakeClock()  # opened on the real clock a moment ago; time moves by hand now
    _, call = stub.Generate.with_call(pb.GenerateRequest(prompt="x"), timeout=20)
    assert dict(call.trailing_metadata())["x-cortex-route"] == "mlx:skipped,openai:ok"
    # MLX gets its model back; after the cool-down one probe goes to it and closes the circuit
    from cortex.plugins.mlx.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "not-a-model")
    clock.advance(0.6)
    assert breaker.state.value == "half_open"
    reply, call = stub.Generate.with_call(pb.GenerateRequest(prompt="x", max_tokens=4), timeout=20)
    assert reply.provider == "mlx" and breaker.state.value == "closed"
    # streams fail over too, before their first message
    (tmp_path / "not-a-model" / "model.safetensors").unlink()
    kt.run(_reset_engine())
    chunks = list(stub.GenerateStream(pb.GenerateStreamRequest(prompt="streamed"), timeout=20))
    assert chunks[-1].provider == "openai"


async def _reset_engine():
    from cortex.plugins.mlx.plugin import plugin

    if plugin.engine is not None:
        plugin.engine.close()
    plugin.engine = None


def test_privacy_mode_never_reaches_the_remote_endpoint(start_kernel, channel_to, openai_server, tmp_path):
    stub, _ = stub_for(start_kernel, channel_to, broken_mlx_config(tmp_path, openai_server) + "\n[kernel]\nprivacy_mode = true\n")
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(prompt="my diary"), timeout=20)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # MLX cannot load its model: nothing else may serve
    with pytest.raises(grpc.RpcError) as err:
        stub.Embed(pb.EmbedRequest(texts=["my diary"], model="text-embedding-3-small"), timeout=20)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert openai_server.requests == []  # not a call, not even a health probe


def test_privacy_with_no_local_provider_is_failed_precondition(start_kernel, channel_to, openai_server, tmp_path):
    config = broken_mlx_config(tmp_path, openai_server).replace('disabled = ["ollama"]', 'disabled = ["ollama", "mlx"]')
    stub, _ = stub_for(start_kernel, channel_to, config + '\n[hybrid]\nmode = "privacy"\n')
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(prompt="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "hybrid mode is privacy" in err.value.details()
    assert openai_server.requests == []


def test_local_only_requests_and_conjunction_off(start_kernel, channel_to, openai_server, tmp_path):
    stub, _ = stub_for(start_kernel, channel_to, broken_mlx_config(tmp_path, openai_server))
    with pytest.raises(grpc.RpcError):
        stub.Generate(pb.GenerateRequest(prompt="x", local_only=True), timeout=20)
    assert [r for r in openai_server.requests if r[0] == "POST"] == []
    assert stub.Generate(pb.GenerateRequest(prompt="x"), timeout=20).provider == "openai"


def test_conjunction_off_means_no_remote_fallback(start_kernel, channel_to, openai_server, tmp_path):
    config = broken_mlx_config(tmp_path, openai_server) + "\n[hybrid]\nconjunction = false\n"
    stub, _ = stub_for(start_kernel, channel_to, config)
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(prompt="x"), timeout=20)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "conjunction is off" in err.value.details()
    assert [r for r in openai_server.requests if r[0] == "POST"] == []


def test_a_pinned_provider_and_performance_mode(start_kernel, channel_to, openai_server, ollama_server):
    config = f"""
        [plugins]
        disabled = ["mlx"]
        [plugins.openai]
        base_url = "{openai_server.base_url}"
        [plugins.ollama]
        host = "{ollama_server.host}"
    """
    stub, kt = stub_for(start_kernel, channel_to, config)
    assert stub.Generate(pb.GenerateRequest(prompt="x"), timeout=10).provider == "ollama"  # configured order
    pinned = stub.Generate(pb.GenerateRequest(prompt="x"), timeout=10, metadata=(("x-cortex-provider", "openai"),))
    assert pinned.provider == "openai"
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(prompt="x"), timeout=10, metadata=(("x-cortex-provider", "nope"),))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "its providers: ollama, openai" in err.value.details()
    providers = {p.name: p for p in kt.kernel.registry.all_providers() if p.service.full_name.endswith("ModelService")}
    providers["ollama"].latency_ewma, providers["openai"].latency_ewma = 0.5, 0.01
    kt.kernel.config.override({"hybrid.mode": "performance"}, origin="the test")
    assert stub.Generate(pb.GenerateRequest(prompt="x"), timeout=10).provider == "openai"  # the faster one


def test_the_default_model_order_is_the_ranks_the_plugins_declare(tmp_path, monkeypatch):
    """The kernel names no model: with no [routing] table, mlx, ollama, openai is the order of the
    ranks their plugins give their providers (registered here last one first), not of registration
    nor of hybrid.mlx_first; a configured order comes first, the ranks order what it leaves out."""
    from cortex.kernel.config import load_config
    from cortex.kernel.registry import ContractRegistry, Registrar
    from cortex.plugins.mlx.plugin import MlxPlugin
    from cortex.plugins.ollama.plugin import OllamaPlugin
    from cortex.plugins.openai.plugin import OpenAIPlugin

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, env={"CORTEX_MLX_FIRST_PRIORITY": "false"})
    service = pb.DESCRIPTOR.services_by_name["ModelService"].full_name
    assert cfg.routing_order(service) == []
    registry = ContractRegistry()
    for plugin in (OpenAIPlugin(), OllamaPlugin(), MlxPlugin()):
        plugin.cortex_register(Registrar(registry, plugin.name, {}))
    assert [p.name for p in registry.ordered(service, cfg.routing_order(service))] == ["mlx", "ollama", "openai"]
    assert [p.name for p in registry.ordered(service, ["openai"])] == ["openai", "mlx", "ollama"]


def test_contracts_list_shows_the_plugins_model_order(start_kernel, channel_to, openai_server, ollama_server):
    """What `cortex contracts list` shows for ModelService with no [routing] table (and
    hybrid.mlx_first off, so that the preferred provider does not decide it): mlx, ollama, openai."""
    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

    config = f"""
        [hybrid]
        mlx_first = false
        [plugins.openai]
        base_url = "{openai_server.base_url}"
        [plugins.ollama]
        host = "{ollama_server.host}"
    """
    target, _ = start_kernel(config)
    reply = kernel_pb2_grpc.KernelServiceStub(channel_to(target)).ListContracts(kernel_pb2.ListContractsRequest(), timeout=5)
    listed = [p.name for c in reply.contracts if c.service == "cortex.models.v1.ModelService" for p in c.providers]
    assert listed == ["mlx", "ollama", "openai"]


def test_generate_escapes_control_bytes_on_a_terminal(start_kernel, openai_server, tmp_path):
    """A model's raw ESC bytes could drive the user's terminal: `cortex generate` shows them
    escaped on a TTY."""
    import os
    import pty
    import subprocess
    import sys

    from ..conftest import cortex_env

    config = f'[plugins]\ndisabled = ["mlx", "ollama"]\n[plugins.openai]\nbase_url = "{openai_server.base_url}"\n'
    target, _ = start_kernel(config)
    env = cortex_env(tmp_path / "cli", CORTEX_TARGET=target, OPENAI_API_KEY="sk-test")
    prompt = "\x1b[2Jcleared"
    leader, follower = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "cortex.kernel", "generate", prompt], env=env, stdout=follower,
        stderr=subprocess.PIPE, timeout=60,
    )
    os.close(follower)
    shown = os.read(leader, 4096).decode()
    os.close(leader)
    assert proc.returncode == 0, proc.stderr
    assert "echo: \\x1b[2Jcleared" in shown and "\x1b" not in shown


EXPECTED = {
    "openai": {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "UNAVAILABLE"},
    "ollama": {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "UNAVAILABLE"},
}


@pytest.mark.parametrize("name", ["openai", "ollama"])
def test_every_method_keeps_an_endpoints_error_meaning(start_kernel, channel_to, openai_server, ollama_server, name):
    """What the endpoint says becomes the gRPC status a client can act on, for every method; only
    the endpoint's own trouble (5xx) counts against its circuit, never a refused request."""
    server = openai_server if name == "openai" else ollama_server
    setting = f'base_url = "{server.base_url}"' if name == "openai" else f'host = "{server.host}"'
    other = "ollama" if name == "openai" else "openai"
    stub, kt = stub_for(start_kernel, channel_to, f'[plugins]\ndisabled = ["mlx", "{other}"]\n[plugins.{name}]\n{setting}\n')
    provider = next(p for p in kt.kernel.registry.all_providers() if p.name == name)
    calls = {
        "Generate": lambda: stub.Generate(pb.GenerateRequest(prompt="x"), timeout=10),
        "GenerateStream": lambda: list(stub.GenerateStream(pb.GenerateStreamRequest(prompt="x"), timeout=10)),
        "Embed": lambda: stub.Embed(pb.EmbedRequest(texts=["x"]), timeout=10),
    }
    for status, code in EXPECTED[name].items():
        server.fail_with = status
        for method, call in calls.items():
            before = provider.failures
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code().name == code, (status, method, err.value.details())
            assert (provider.failures > before) == (code == "UNAVAILABLE"), (status, method)  # (retried once)
            kt.kernel.registry.breaker(name).record_success()  # keep the circuit closed between cases
