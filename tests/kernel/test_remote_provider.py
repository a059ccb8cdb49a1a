"""A provider in another process: the router calls it over gRPC, through the same path."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import cortex_env, run_cli, write_config


@pytest.fixture
def far_kernel(tmp_path, serve_process, monkeypatch):
    """A second kernel, in its own process, serving the example plugin as 'far away'; the near
    kernel calls it with an API key of the far one (in $FAR_KEY) that may act for its callers."""
    config = write_config(tmp_path / "far.toml", '[plugins.echo]\nserved_by = "far away"\n')
    env = cortex_env(tmp_path / "far-data", CORTEX_CONFIG=str(config))
    made = run_cli("keys", "create", "near", "--scope", "cortex_echo.v1.*/*", "--scope", "act_as", env=env)
    assert made.returncode == 0, made.stderr
    monkeypatch.setenv("FAR_KEY", made.stdout.strip())
    return serve_process(env=env)


def far_first(far_kernel, order: str = '["far", "echo"]') -> str:
    """A config routing EchoService to the far kernel first (with its key), then as `order` says."""
    return f"""
        [providers.far]
        endpoint = "{far_kernel.target}"
        services = ["cortex_echo.v1.EchoService"]
        token_env = "FAR_KEY"
        [routing."cortex_echo.v1.EchoService"]
        order = {order}
    """


def test_calls_reach_a_remote_provider_in_another_process(far_kernel, start_kernel, channel_to):
    config = f"""
        [plugins]
        disabled = ["echo"]
        [providers.far]
        endpoint = "{far_kernel.target}"
        services = ["cortex_echo.v1.EchoService"]
        token_env = "FAR_KEY"
    """
    target, _ = start_kernel(config)
    stub = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    reply, call = stub.Echo.with_call(echo_pb2.EchoRequest(message="over the wire"), timeout=5)
    assert (reply.message, reply.served_by) == ("over the wire", "far away")
    assert dict(call.trailing_metadata())["x-cortex-provider"] == "far"
    streamed = list(stub.EchoStream(echo_pb2.EchoStreamRequest(message="s", repeat=2), timeout=5))
    assert [m.served_by for m in streamed] == ["far away", "far away"]
    # provider errors keep their status across the hop
    with pytest.raises(grpc.RpcError) as err:
        list(stub.EchoStream(echo_pb2.EchoStreamRequest(repeat=5000), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    contracts = kernel_pb2_grpc.KernelServiceStub(channel_to(target)).ListContracts(
        kernel_pb2.ListContractsRequest(), timeout=5
    )
    echo = {c.service: c for c in contracts.contracts}["cortex_echo.v1.EchoService"]
    assert [(p.name, p.endpoint, p.local, p.health) for p in echo.providers] == [
        ("far", far_kernel.target, True, kernel_pb2.Provider.HEALTH_SERVING)
    ]


def test_a_remote_provider_that_dies_fails_over_to_the_local_one(far_kernel, start_kernel, channel_to):
    target, _ = start_kernel(far_first(far_kernel))
    stub = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    assert stub.Echo(echo_pb2.EchoRequest(), timeout=5).served_by == "far away"
    far_kernel.stop(sig=9)  # kill -9: the last health probe still says it serves
    reply, call = stub.Echo.with_call(echo_pb2.EchoRequest(message="local"), timeout=5)
    assert reply.served_by == "echo"
    assert dict(call.trailing_metadata())["x-cortex-route"] == "far:UNAVAILABLE,echo:ok"


def test_an_unreachable_remote_provider_is_unhealthy_and_tried_last(start_kernel, channel_to, unused_tcp_port):
    config = f"""
        [providers.gone]
        endpoint = "127.0.0.1:{unused_tcp_port}"
        services = ["cortex_echo.v1.EchoService"]
        [routing."cortex_echo.v1.EchoService"]
        order = ["gone", "echo"]
    """
    target, kt = start_kernel(config)
    gone = next(p for p in kt.kernel.registry.all_providers() if p.name == "gone")
    assert not gone.health.serving and "UNAVAILABLE" in gone.health.detail
    reply, call = echo_pb2_grpc.EchoServiceStub(channel_to(target)).Echo.with_call(
        echo_pb2.EchoRequest(message="local"), timeout=5
    )
    assert reply.served_by == "echo"
    assert dict(call.trailing_metadata())["x-cortex-route"] == "echo:ok"


def test_a_remote_provider_for_an_unknown_contract_is_a_config_error(start_kernel):
    from cortex.kernel.config import ConfigError

    with pytest.raises(ConfigError, match=r"cortex-0.toml:4: \[providers.x\]: unknown contract service 'no.such.v1.Svc'"):
        start_kernel('\n[providers.x]\nendpoint = "127.0.0.1:1"\nservices = ["no.such.v1.Svc"]\n')


def test_a_caller_only_this_kernel_knows_is_never_sent_there_as_the_owner(far_kernel, start_kernel, channel_to, data_dir):
    """key:alice is this kernel's key: on the far kernel it means nothing, and the call would run
    there as this kernel, the owner (the owner's namespace, the owner's memories). So her calls
    are served here, and where nothing here can serve them they are refused, saying why."""
    from cortex.kernel.security.credentials import KeyStore

    target, _ = start_kernel(far_first(far_kernel))
    alice = (("authorization", f"Bearer {KeyStore(data_dir).create('alice', [])}"),)
    stub = echo_pb2_grpc.EchoServiceStub(channel_to(target, as_admin=False))
    owner = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    assert owner.Echo(echo_pb2.EchoRequest(), timeout=5).served_by == "far away"
    reply, call = stub.Echo.with_call(echo_pb2.EchoRequest(), timeout=5, metadata=alice)
    assert reply.served_by == "echo" and dict(call.trailing_metadata())["x-cortex-route"].startswith("far:skipped")
    # a gateway's user (a name, not this kernel's credential) is carried there, and served there
    gateway_user = (*owner_token(target), ("x-cortex-principal", "alice"))
    assert stub.Echo(echo_pb2.EchoRequest(), timeout=5, metadata=gateway_user).served_by == "far away"

    only_far, _ = start_kernel(far_first(far_kernel, '["far"]') + '\n[plugins]\ndisabled = ["echo"]\n')
    with pytest.raises(grpc.RpcError) as err:
        echo_pb2_grpc.EchoServiceStub(channel_to(only_far, as_admin=False)).Echo(echo_pb2.EchoRequest(), timeout=5,
                                                                               metadata=alice)
    assert "cannot act for key:alice on far" in err.value.details()


def owner_token(target):
    from ..conftest import admin_token

    return (("authorization", f"Bearer {admin_token(target)}"),)
