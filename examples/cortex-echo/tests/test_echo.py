"""The echo plugin on a real, governed kernel, with cortex.kernel.sdk.testing's fixtures (installed with
cortex-os): what a third-party plugin's own tests look like."""

import grpc
import pytest

from cortex_echo.v1 import echo_pb2, echo_pb2_grpc


@pytest.fixture
def cortex_config():
    return '[plugins.echo]\nserved_by = "the test"\n'


def test_echo_answers_as_configured(cortex_kernel):
    stub = cortex_kernel.stub(echo_pb2_grpc.EchoServiceStub)
    reply = stub.Echo(echo_pb2.EchoRequest(message="hi"), timeout=5)
    assert (reply.message, reply.served_by) == ("hi", "the test")


def test_streams_are_bounded(cortex_kernel):
    stub = cortex_kernel.stub(echo_pb2_grpc.EchoServiceStub)
    assert len(list(stub.EchoStream(echo_pb2.EchoStreamRequest(message="x", repeat=3), timeout=5))) == 3
    with pytest.raises(grpc.RpcError) as err:
        list(stub.EchoStream(echo_pb2.EchoStreamRequest(repeat=10**6), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_policy_holds_it(cortex_kernel):
    """A caller without a credential is `local`, and `local` may not call a new contract."""
    stub = cortex_kernel.stub(echo_pb2_grpc.EchoServiceStub, as_admin=False)
    with pytest.raises(grpc.RpcError) as err:
        stub.Echo(echo_pb2.EchoRequest(message="hi"), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
