"""KernelService, health, reflection and the example plugin, over gRPC on loopback."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..counter_contract import CounterPlugin, CounterServicer, counter_stub


def test_get_info_reports_version_data_dir_and_privacy(start_kernel, channel_to, data_dir):
    target, _ = start_kernel("[kernel]\nprivacy_mode = true\n")
    info = kernel_pb2_grpc.KernelServiceStub(channel_to(target)).GetInfo(kernel_pb2.GetInfoRequest(), timeout=5)
    assert info.version == "0.1.0"
    assert info.data_dir == str(data_dir.resolve())
    assert info.privacy_mode is True
    assert info.listen == target
    assert data_dir.is_dir()
    assert list(info.governed_by) == []  # these tests run the kernel without governance, and it says so


def test_get_info_names_what_governs_the_kernel(start_kernel, channel_to):
    target, _ = start_kernel(governance=True)
    info = kernel_pb2_grpc.KernelServiceStub(channel_to(target)).GetInfo(kernel_pb2.GetInfoRequest(), timeout=5)
    assert list(info.governed_by) == ["governance"]


def test_list_plugins_shows_the_pip_installed_example(start_kernel, channel_to):
    target, _ = start_kernel()
    reply = kernel_pb2_grpc.KernelServiceStub(channel_to(target)).ListPlugins(kernel_pb2.ListPluginsRequest(), timeout=5)
    echo = {p.name: p for p in reply.plugins}["echo"]
    assert echo.source == "cortex-echo"
    assert echo.version == "0.1.3"
    assert echo.enabled and echo.state == kernel_pb2.Plugin.STATE_LOADED
    assert list(echo.contracts) == ["cortex_echo.v1.EchoService"]


def test_example_plugin_is_called_through_the_kernel(start_kernel, channel_to):
    target, _ = start_kernel('[plugins.echo]\nserved_by = "the example"\n')
    stub = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    reply, call = stub.Echo.with_call(echo_pb2.EchoRequest(message="hello", upper=True), timeout=5)
    assert (reply.message, reply.served_by) == ("HELLO", "the example")
    trailers = dict(call.trailing_metadata())
    assert trailers["x-cortex-provider"] == "echo"
    assert trailers["x-cortex-call-id"]
    streamed = list(stub.EchoStream(echo_pb2.EchoStreamRequest(message="x", repeat=3), timeout=5))
    assert [m.index for m in streamed] == [0, 1, 2]


def test_list_contracts_gives_methods_and_providers_in_routing_order(start_kernel, channel_to, counter_pb2):
    config = '[routing."cortex_test.v1.CounterService"]\norder = ["second", "first"]\n'
    plugins = [
        ("first", CounterPlugin(counter_pb2, CounterServicer(counter_pb2, "first"))),
        ("second", CounterPlugin(counter_pb2, CounterServicer(counter_pb2, "second"), local=False)),
    ]
    target, _ = start_kernel(config, plugins)
    reply = kernel_pb2_grpc.KernelServiceStub(channel_to(target)).ListContracts(
        kernel_pb2.ListContractsRequest(), timeout=5
    )
    contracts = {c.service: c for c in reply.contracts}
    assert {"cortex.kernel.v1.KernelService", "cortex_echo.v1.EchoService", "cortex_test.v1.CounterService"} <= set(contracts)
    counter = contracts["cortex_test.v1.CounterService"]
    assert counter.version == "v1"
    methods = {m.name: m for m in counter.methods}
    assert methods["Get"].failover_safe and not methods["Add"].failover_safe
    assert methods["Count"].server_streaming
    assert [(p.name, p.local) for p in counter.providers] == [("second", False), ("first", True)]
    assert all(p.health == kernel_pb2.Provider.HEALTH_SERVING for p in counter.providers)
    assert all(p.circuit == kernel_pb2.Provider.CIRCUIT_CLOSED for p in counter.providers)


def test_health_overall_and_per_contract(start_kernel, channel_to, counter_pb2):
    plugins = [("sick", CounterPlugin(counter_pb2, CounterServicer(counter_pb2, "sick"), healthy=False))]
    target, _ = start_kernel("", plugins)
    health = health_pb2_grpc.HealthStub(channel_to(target))

    def status(service: str) -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    assert status("") == health_pb2.HealthCheckResponse.SERVING
    assert status("cortex.kernel.v1.KernelService") == health_pb2.HealthCheckResponse.SERVING
    assert status("cortex_echo.v1.EchoService") == health_pb2.HealthCheckResponse.SERVING
    assert status("cortex_test.v1.CounterService") == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as err:
        status("no.such.v1.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_contracts(start_kernel, channel_to):
    target, _ = start_kernel()
    stub = reflection_pb2_grpc.ServerReflectionStub(channel_to(target))
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="cortex_echo.v1.EchoService"),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"cortex.kernel.v1.KernelService", "cortex_echo.v1.EchoService", "grpc.health.v1.Health"} <= names
    from google.protobuf import descriptor_pb2

    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in described.file_descriptor_response.file_descriptor_proto]
    assert any(f.name == "cortex_echo/v1/echo.proto" and f.service[0].name == "EchoService" for f in files)


# -- bad input -----------------------------------------------------------------------------------
def test_malformed_request_bytes_get_invalid_argument(start_kernel, channel_to):
    target, _ = start_kernel()
    raw = channel_to(target).unary_unary("/cortex_echo.v1.EchoService/Echo")
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff", timeout=5)  # a truncated varint field: not a message
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cortex_echo.v1.EchoRequest" in err.value.details()
    # and the kernel keeps serving
    ok = echo_pb2_grpc.EchoServiceStub(channel_to(target)).Echo(echo_pb2.EchoRequest(message="still here"), timeout=5)
    assert ok.message == "still here"


def test_oversized_request_gets_resource_exhausted(start_kernel, channel_to):
    target, _ = start_kernel("[kernel]\nmax_message_bytes = 4096\n")
    stub = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    with pytest.raises(grpc.RpcError) as err:
        stub.Echo(echo_pb2.EchoRequest(message="x" * 10_000), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Echo(echo_pb2.EchoRequest(message="small"), timeout=5).message == "small"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/cortex_echo.v1.EchoService/Shout", "has no method 'Shout'; its methods: Echo, EchoStream, Now"),
        ("/no.such.v1.Service/Call", "no contract 'no.such.v1.Service' is served here"),
        ("/garbage", "malformed method path"),
    ],
)
def test_unknown_methods_get_unimplemented_with_a_reason(start_kernel, channel_to, path, expected):
    target, _ = start_kernel()
    with pytest.raises(grpc.RpcError) as err:
        channel_to(target).unary_unary(path)(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert expected in err.value.details()


def test_provider_errors_pass_through_with_their_status(start_kernel, channel_to):
    target, _ = start_kernel()
    stub = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    with pytest.raises(grpc.RpcError) as err:
        list(stub.EchoStream(echo_pb2.EchoStreamRequest(message="x", repeat=10**6), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "repeat must be at most 1000" in err.value.details()


def test_disabled_plugin_is_not_loaded_and_its_service_says_so(start_kernel, channel_to):
    target, kt = start_kernel('[plugins]\ndisabled = ["echo"]\n')
    stub = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    with pytest.raises(grpc.RpcError) as err:
        stub.Echo(echo_pb2.EchoRequest(message="hi"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "plugin 'echo', which is disabled" in err.value.details()
    assert "cortex plugins enable echo" in err.value.details()
    plugins = kernel_pb2_grpc.KernelServiceStub(channel_to(target)).ListPlugins(kernel_pb2.ListPluginsRequest(), timeout=5)
    echo = {p.name: p for p in plugins.plugins}["echo"]
    assert not echo.enabled and echo.state == kernel_pb2.Plugin.STATE_DISABLED
    assert kt.kernel.host.pm.is_blocked("echo") and kt.kernel.host.pm.get_plugin("echo") is None


def test_list_contracts_shows_the_order_the_router_tries(start_kernel, channel_to, counter_pb2):
    """hybrid.mlx_first puts a provider named "mlx" ahead of the configured order: the listing
    must show that order, since it is the one the router follows."""
    config = '[routing."cortex_test.v1.CounterService"]\norder = ["other", "mlx"]\n'
    plugins = [
        ("other", CounterPlugin(counter_pb2, CounterServicer(counter_pb2, "other"))),
        # a provider named "mlx" (the built-in mlx plugin's name is taken: another plugin serves it)
        ("local-fast", CounterPlugin(counter_pb2, CounterServicer(counter_pb2, "mlx"), provider="mlx")),
    ]
    target, _ = start_kernel(config, plugins)
    reply = kernel_pb2_grpc.KernelServiceStub(channel_to(target)).ListContracts(kernel_pb2.ListContractsRequest(), timeout=5)
    listed = [p.name for c in reply.contracts if c.service == "cortex_test.v1.CounterService" for p in c.providers]
    served_by = counter_stub(channel_to, target, counter_pb2).Get(counter_pb2.GetRequest(), timeout=5).provider
    assert listed == ["mlx", "other"] and served_by == listed[0]
