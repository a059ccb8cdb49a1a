"""A remote model provider under governance: an OpenAI-compatible server on loopback, marked
`local = false` as a openai_server endpoint would be, with the governance plugin on and rules that read
request fields in force. (Reading fields once crashed on a protobuf release, and every remote call
was denied: nothing routed a remote call with governance on.)"""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.models.v1 import models_pb2 as pb
from cortex.contracts.models.v1 import models_pb2_grpc

from ..models.fake_servers import fake_vector


def config_for(server) -> str:
    return f"""
        [plugins]
        disabled = ["mlx", "ollama"]
        [plugins.openai]
        base_url = "{server.base_url}"
        model = "openai_server-gpt"
        embedding_model = "openai_server-embed"
        local = false
        [[plugins.governance.rule]]
        id = "no-big-model"
        description = "the expensive model is not for this household"
        effect = "deny"
        services = ["cortex.models.v1.ModelService"]
        fields = {{ model = "openai_server-gpt-large" }}
    """


def test_remote_provider_serves_governed_calls(start_kernel, channel_to, openai_server):
    target, _ = start_kernel(config_for(openai_server), governance=True)
    stub = models_pb2_grpc.ModelServiceStub(channel_to(target))
    reply, call = stub.Generate.with_call(pb.GenerateRequest(prompt="hello openai_server", max_tokens=8), timeout=10)
    assert (reply.text, reply.provider) == ("echo: hello openai_server", "openai")
    assert dict(call.trailing_metadata())["x-cortex-route"] == "openai:ok"
    embedded = stub.Embed(pb.EmbedRequest(texts=["tea"]), timeout=10)
    assert embedded.model == "openai_server-embed" and list(embedded.vectors[0].values) == pytest.approx(fake_vector("tea"), abs=1e-6)
    served = len(openai_server.requests)

    # a rule on a request field denies, naming itself, and the endpoint hears nothing
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(prompt="x", model="openai_server-gpt-large"), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "no-big-model" in err.value.details()
    # the built-in field rule: a request that asks to stay local never reaches a remote provider
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(prompt="x", local_only=True), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(openai_server.requests) == served


def test_privacy_mode_sends_the_remote_provider_nothing(start_kernel, channel_to, openai_server):
    target, _ = start_kernel(config_for(openai_server), env={"CORTEX_PRIVACY_MODE": "true"}, governance=True)
    stub = models_pb2_grpc.ModelServiceStub(channel_to(target))
    for call in (
        lambda: stub.Generate(pb.GenerateRequest(prompt="my diary"), timeout=10),
        lambda: stub.Embed(pb.EmbedRequest(texts=["my diary"]), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "privacy mode is on" in err.value.details()
    assert openai_server.requests == []
