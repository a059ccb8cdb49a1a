"""cortex.kernel.sdk.testing, used here as a plugin author uses it (the pytest11 plugin is active in
this suite too): a governed in-process kernel, a plugin object for one test, a subprocess kernel."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.kernel import hookimpl
from cortex.kernel.security.credentials import KeyStore

seen: list[str] = []


class Watcher:
    """A plugin object registered for one test (cortex_plugins)."""

    @hookimpl
    def cortex_observe(self, call, outcome):
        seen.append(f"{call.method_name}:{call.principal}")


@pytest.fixture
def cortex_plugins():
    return [("watcher", Watcher())]


@pytest.fixture
def cortex_config():
    return "[plugins]\ndisabled = [\"a2a\", \"mcp\", \"http\"]\n"


def test_cortex_kernel_is_governed_and_runs_the_plugins_given(cortex_kernel):
    info = cortex_kernel.stub(kernel_pb2_grpc.KernelServiceStub).GetInfo(kernel_pb2.GetInfoRequest(), timeout=5)
    assert list(info.governed_by) == ["governance"]
    assert "GetInfo:admin" in seen and cortex_kernel.plugin("watcher") is not None
    anonymous = cortex_kernel.stub(kernel_pb2_grpc.PluginServiceStub, as_admin=False)
    with pytest.raises(grpc.RpcError) as err:
        anonymous.Enable(kernel_pb2.EnableRequest(name="http"), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert cortex_kernel.data_dir.name == "cortex-data"


def test_a_test_calls_as_a_key_holder_in_one_line(cortex_kernel):
    """`cortex_kernel.key(NAME, scopes)` makes an API key; `stub(Stub, key=...)` calls as its holder."""
    reader = cortex_kernel.stub(kernel_pb2_grpc.KernelServiceStub, key=cortex_kernel.key("reader", ["cortex.kernel.v1.KernelService/Get*"]))
    assert reader.GetInfo(kernel_pb2.GetInfoRequest(), timeout=5).version
    assert "GetInfo:key:reader" in seen
    with pytest.raises(grpc.RpcError) as err:  # outside its scopes
        reader.ListPlugins(kernel_pb2.ListPluginsRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "key:reader may call only" in err.value.details()


def test_cortex_key_makes_a_key_and_calls_as_its_holder(cortex_key, cortex_kernel):
    """`cortex_key(NAME, scopes)`: the key made as `cortex keys create` makes it, a channel with it."""
    reader = cortex_key("reader", scopes=["cortex.kernel.v1.KernelService/Get*"])
    assert (reader.principal, reader.namespace) == ("key:reader", "key:reader")
    assert reader.stub(kernel_pb2_grpc.KernelServiceStub).GetInfo(kernel_pb2.GetInfoRequest(), timeout=5).version
    assert "GetInfo:key:reader" in seen
    with pytest.raises(grpc.RpcError) as err:  # outside its scopes
        kernel_pb2_grpc.KernelServiceStub(reader.channel).ListPlugins(kernel_pb2.ListPluginsRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "key:reader may call only" in err.value.details()
    anyone = cortex_key("anyone")  # no scopes: every method
    assert anyone.stub(kernel_pb2_grpc.KernelServiceStub).ListPlugins(kernel_pb2.ListPluginsRequest(), timeout=5).plugins
    listed = {k.name: k.scopes for k in KeyStore(cortex_kernel.data_dir).list()}
    assert listed == {"reader": ("cortex.kernel.v1.KernelService/Get*",), "anyone": ("*/*",)}
    assert cortex_key("one", "cortex.kernel.v1.KernelService/GetInfo").stub(kernel_pb2_grpc.KernelServiceStub).GetInfo(
        kernel_pb2.GetInfoRequest(), timeout=5).version  # one scope given as a string is that scope


def test_cortex_serve_runs_a_real_process(cortex_serve):
    kernel = cortex_serve(env={"CORTEX_PLUGINS__DISABLED": '["a2a", "mcp", "http"]'})
    channel = kernel.channel()
    try:
        plugins = kernel_pb2_grpc.KernelServiceStub(channel).ListPlugins(kernel_pb2.ListPluginsRequest(), timeout=5)
        assert {p.name for p in plugins.plugins} >= {"governance", "memories"}
    finally:
        channel.close()
    code, _ = kernel.stop()
    assert code == 0
