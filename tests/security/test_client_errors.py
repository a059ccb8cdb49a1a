"""No client can switch a service off for others. Before, three requests that made an in-process
provider raise (SourceService/Open with a line number past uint32) opened the memories circuit:
MemoryService, SourceService and ArchiveService were UNAVAILABLE for every caller for 30 s. And a
sole provider of a failover-safe method, tried twice, counted its one fault twice."""

from __future__ import annotations

import grpc
import pytest

from ..counter_contract import CounterPlugin, CounterServicer, counter_stub


class Poisoned(CounterServicer):
    """Raises on one kind of request (amount 13), as a provider with a bug a request can find."""

    async def Add(self, request, context):
        if request.amount == 13:
            self.calls += 1
            raise OverflowError("13 is unlucky")
        return await super().Add(request, context)


def test_a_request_that_crashes_an_in_process_provider_fails_alone(start_kernel, channel_to, counter_pb2):
    poisoned = Poisoned(counter_pb2, "only")
    target, kt = start_kernel("[circuit]\nfailure_threshold = 2\nreset_timeout_seconds = 60\n",
                              [("only", CounterPlugin(counter_pb2, poisoned))])
    stub = counter_stub(channel_to, target, counter_pb2)
    for _ in range(5):  # a hostile client, again and again
        with pytest.raises(grpc.RpcError) as err:
            stub.Add(counter_pb2.AddRequest(amount=13), timeout=5)
        assert err.value.code() == grpc.StatusCode.INTERNAL and "failed unexpectedly (call " in err.value.details()
    assert poisoned.calls == 5
    assert kt.kernel.registry.breaker("only").state.value == "closed"
    assert stub.Add(counter_pb2.AddRequest(amount=1), timeout=5).value == 1  # everyone else is still served


def test_a_provider_that_answers_internal_for_one_request_keeps_its_circuit(start_kernel, channel_to, counter_pb2):
    failing = CounterServicer(counter_pb2, "only", fail=grpc.StatusCode.INTERNAL)
    target, kt = start_kernel("[circuit]\nfailure_threshold = 1\nreset_timeout_seconds = 60\n",
                              [("only", CounterPlugin(counter_pb2, failing))])
    stub = counter_stub(channel_to, target, counter_pb2)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as err:
            stub.Get(counter_pb2.GetRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INTERNAL
    assert kt.kernel.registry.breaker("only").state.value == "closed"
    failing.fail = None
    assert stub.Get(counter_pb2.GetRequest(), timeout=5).provider == "only"


def test_one_call_counts_one_fault_however_often_it_was_tried(start_kernel, channel_to, counter_pb2):
    first = CounterServicer(counter_pb2, "first", fail=grpc.StatusCode.UNAVAILABLE)
    second = CounterServicer(counter_pb2, "second", fail=grpc.StatusCode.UNAVAILABLE)
    config = """
        [circuit]
        failure_threshold = 2
        retries = 2
        retry_backoff_seconds = 0.01
        reset_timeout_seconds = 60
        [routing."cortex_test.v1.CounterService"]
        order = ["first", "second"]
    """
    target, kt = start_kernel(config, [(s.name, CounterPlugin(counter_pb2, s)) for s in (first, second)])
    stub = counter_stub(channel_to, target, counter_pb2)
    with pytest.raises(grpc.RpcError):
        stub.Get(counter_pb2.GetRequest(), timeout=5)
    breaker = kt.kernel.registry.breaker("first")
    assert first.calls == 3 and breaker.state.value == "closed" and breaker.consecutive_failures == 1
    with pytest.raises(grpc.RpcError):
        stub.Get(counter_pb2.GetRequest(), timeout=5)
    assert breaker.state.value == "open"  # a provider that is down, with another to go to, still opens its circuit


def test_a_sole_in_process_provider_saying_unavailable_keeps_serving_the_rest(start_kernel, channel_to, counter_pb2):
    """Its UNAVAILABLE (a backend it needs is away, for the requests that need it) opens no circuit:
    there is no other provider to route to, and an open circuit would refuse every caller."""
    down = CounterServicer(counter_pb2, "only", fail=grpc.StatusCode.UNAVAILABLE)
    target, kt = start_kernel("[circuit]\nfailure_threshold = 1\nretries = 0\n", [("only", CounterPlugin(counter_pb2, down))])
    stub = counter_stub(channel_to, target, counter_pb2)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as err:
            stub.Get(counter_pb2.GetRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert kt.kernel.registry.breaker("only").state.value == "closed" and down.calls == 3


def test_a_model_the_endpoint_refuses_is_that_requests_error_not_an_outage():
    """An endpoint's 403 (a model this key may not use) is PERMISSION_DENIED: the request's, which
    counts against no circuit. Before, it was UNAVAILABLE, and six such calls from one client
    opened the openai provider's circuit for everyone."""
    import httpx
    import ollama
    import openai

    from cortex.plugins.ollama.service import status_for as ollama_status
    from cortex.plugins.openai.service import status_for as openai_status

    response = httpx.Response(403, request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"))
    code, details = openai_status(openai.PermissionDeniedError("model o3-pro is not allowed", response=response, body=None))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "o3-pro" in details
    code, _ = ollama_status(ollama.ResponseError("forbidden", 403))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    response = httpx.Response(503, request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"))
    assert openai_status(openai.InternalServerError("down", response=response, body=None))[0] == grpc.StatusCode.UNAVAILABLE
