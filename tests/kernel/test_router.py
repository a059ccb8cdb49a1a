"""The policy router, seen from a gRPC client: authorize, failover, circuits, privacy, deadlines."""

from __future__ import annotations

import time

import grpc
import pytest

from cortex.kernel import hookimpl

from ..conftest import FakeClock
from ..counter_contract import CounterPlugin, CounterServicer, Gatekeeper, counter_stub

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE




def _plugins(pb2, *servicers, **kw):
    return [(s.name, CounterPlugin(pb2, s, **kw)) for s in servicers]


def test_deny_from_an_authorize_hook_is_permission_denied_with_reasons(start_kernel, channel_to, counter_pb2):
    gate = Gatekeeper(lambda call: "adding is not allowed here" if call.method_name == "Add" else None)
    servicer = CounterServicer(counter_pb2, "only")
    target, _ = start_kernel("", [*_plugins(counter_pb2, servicer), ("gate", gate)])
    stub = counter_stub(channel_to, target, counter_pb2)
    with pytest.raises(grpc.RpcError) as err:
        stub.Add(counter_pb2.AddRequest(amount=1), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "gate: adding is not allowed here" in err.value.details()
    assert servicer.calls == 0  # a denied call never reaches the provider
    assert stub.Get(counter_pb2.GetRequest(), timeout=5).value == 0
    denied = next(o for c, o in gate.observed if c.method_name == "Add")
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED and denied.attempts[0].outcome == "denied"


def test_an_authorize_hook_that_raises_denies(start_kernel, channel_to, counter_pb2):
    class Broken:
        @hookimpl
        def cortex_authorize(self, call):
            raise RuntimeError("policy store unreachable")

    target, _ = start_kernel("", [*_plugins(counter_pb2, CounterServicer(counter_pb2, "p")), ("shaky", Broken())])
    with pytest.raises(grpc.RpcError) as err:
        counter_stub(channel_to, target, counter_pb2).Get(counter_pb2.GetRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "policy store unreachable" in err.value.details()


def test_failover_to_the_second_provider_on_unavailable(start_kernel, channel_to, counter_pb2):
    down = CounterServicer(counter_pb2, "primary", fail=UNAVAILABLE)
    up = CounterServicer(counter_pb2, "backup")
    config = '[routing."cortex_test.v1.CounterService"]\norder = ["primary", "backup"]\n'
    target, _ = start_kernel(config, _plugins(counter_pb2, down, up))
    reply, call = counter_stub(channel_to, target, counter_pb2).Get.with_call(counter_pb2.GetRequest(), timeout=5)
    assert reply.provider == "backup"
    trailers = dict(call.trailing_metadata())
    assert trailers["x-cortex-provider"] == "backup"
    assert trailers["x-cortex-route"] == "primary:UNAVAILABLE,backup:ok"
    assert (down.calls, up.calls) == (1, 1)


def test_a_crashing_provider_fails_over_too(start_kernel, channel_to, counter_pb2):
    class Crashing(CounterServicer):
        async def Get(self, request, context):
            self.calls += 1
            raise ZeroDivisionError("bug in the provider")

    crash, up = Crashing(counter_pb2, "crashy"), CounterServicer(counter_pb2, "steady")
    target, _ = start_kernel("", _plugins(counter_pb2, crash, up))
    assert counter_stub(channel_to, target, counter_pb2).Get(counter_pb2.GetRequest(), timeout=5).provider == "steady"
    assert crash.calls == 1


def test_a_crash_tells_the_caller_its_call_id_not_the_exception(start_kernel, channel_to, counter_pb2):
    class Crashing(CounterServicer):
        async def Get(self, request, context):
            raise KeyError("/home/someone/secret-path")

    target, _ = start_kernel("[circuit]\nretries = 0\n", _plugins(counter_pb2, Crashing(counter_pb2, "crashy")))
    with pytest.raises(grpc.RpcError) as err:
        counter_stub(channel_to, target, counter_pb2).Get.with_call(counter_pb2.GetRequest(), timeout=5)
    call_id = dict(err.value.trailing_metadata())["x-cortex-call-id"]
    assert err.value.code() == grpc.StatusCode.INTERNAL and "secret-path" not in err.value.details()
    assert f"(call {call_id}; the kernel's log says why)" in err.value.details()


def test_no_failover_for_a_method_not_marked_failover_safe(start_kernel, channel_to, counter_pb2):
    down = CounterServicer(counter_pb2, "primary", fail=UNAVAILABLE)
    up = CounterServicer(counter_pb2, "backup")
    target, _ = start_kernel("", _plugins(counter_pb2, down, up))
    with pytest.raises(grpc.RpcError) as err:
        counter_stub(channel_to, target, counter_pb2).Add(counter_pb2.AddRequest(amount=5), timeout=5)
    assert err.value.code() == UNAVAILABLE
    assert "primary is failing on purpose" in err.value.details()
    assert up.calls == 0 and up.value == 0  # never added twice


def test_client_errors_do_not_fail_over(start_kernel, channel_to, counter_pb2):
    bad = CounterServicer(counter_pb2, "strict", fail=grpc.StatusCode.INVALID_ARGUMENT)
    other = CounterServicer(counter_pb2, "lenient")
    target, _ = start_kernel("", _plugins(counter_pb2, bad, other))
    with pytest.raises(grpc.RpcError) as err:
        counter_stub(channel_to, target, counter_pb2).Get(counter_pb2.GetRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert other.calls == 0


def test_circuit_opens_after_failures_then_half_open_probe_closes_it(start_kernel, channel_to, counter_pb2):
    flaky = CounterServicer(counter_pb2, "flaky", fail=UNAVAILABLE)
    backup = CounterServicer(counter_pb2, "backup")
    config = """
        [circuit]
        failure_threshold = 2
        reset_timeout_seconds = 0.5
        [routing."cortex_test.v1.CounterService"]
        order = ["flaky", "backup"]
    """
    target, kt = start_kernel(config, _plugins(counter_pb2, flaky, backup))
    stub = counter_stub(channel_to, target, counter_pb2)
    breaker = kt.kernel.registry.breaker("flaky")
    clock = breaker.clock = FakeClock()
    for _ in range(2):
        assert stub.Get(counter_pb2.GetRequest(), timeout=5).provider == "backup"
    assert breaker.state.value == "open" and flaky.calls == 2
    _, call = stub.Get.with_call(counter_pb2.GetRequest(), timeout=5)
    assert flaky.calls == 2  # open: skipped without a call
    assert dict(call.trailing_metadata())["x-cortex-route"] == "flaky:skipped,backup:ok"
    clock.advance(0.6)
    assert breaker.state.value == "half_open"
    flaky.fail = None  # it recovered: the probe succeeds and closes the circuit
    assert stub.Get(counter_pb2.GetRequest(), timeout=5).provider == "flaky"
    assert breaker.state.value == "closed"


def test_all_circuits_open_is_unavailable_with_the_reason(start_kernel, channel_to, counter_pb2):
    # (two providers: a sole in-process provider's UNAVAILABLE opens no circuit, tests/security)
    down, also = CounterServicer(counter_pb2, "only", fail=UNAVAILABLE), CounterServicer(counter_pb2, "also", fail=UNAVAILABLE)
    target, _ = start_kernel("[circuit]\nfailure_threshold = 1\nreset_timeout_seconds = 60\n", _plugins(counter_pb2, down, also))
    stub = counter_stub(channel_to, target, counter_pb2)
    with pytest.raises(grpc.RpcError):
        stub.Get(counter_pb2.GetRequest(), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        stub.Get(counter_pb2.GetRequest(), timeout=5)
    assert err.value.code() == UNAVAILABLE
    assert "circuit open" in err.value.details()
    assert down.calls == 1


def test_privacy_mode_never_calls_a_remote_provider(start_kernel, channel_to, counter_pb2):
    remote = CounterServicer(counter_pb2, "cloud")
    target, _ = start_kernel("[kernel]\nprivacy_mode = true\n", _plugins(counter_pb2, remote, local=False))
    with pytest.raises(grpc.RpcError) as err:
        counter_stub(channel_to, target, counter_pb2).Get(counter_pb2.GetRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no local provider can serve cortex_test.v1.CounterService" in err.value.details()
    assert "privacy mode is on" in err.value.details()
    assert remote.calls == 0


def test_local_only_request_skips_remote_providers(start_kernel, channel_to, counter_pb2):
    remote = CounterServicer(counter_pb2, "cloud")
    local = CounterServicer(counter_pb2, "laptop")
    config = '[routing."cortex_test.v1.CounterService"]\norder = ["cloud", "laptop"]\n'
    plugins = [("cloud", CounterPlugin(counter_pb2, remote, local=False)), ("laptop", CounterPlugin(counter_pb2, local))]
    target, _ = start_kernel(config, plugins)
    stub = counter_stub(channel_to, target, counter_pb2)
    assert stub.Get(counter_pb2.GetRequest(), timeout=5).provider == "cloud"
    assert stub.Get(counter_pb2.GetRequest(local_only=True), timeout=5).provider == "laptop"
    assert remote.calls == 1


def test_the_callers_deadline_is_respected(start_kernel, channel_to, counter_pb2):
    slow = CounterServicer(counter_pb2, "slow", delay=2.0)
    target, _ = start_kernel("", _plugins(counter_pb2, slow))
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        counter_stub(channel_to, target, counter_pb2).Get(counter_pb2.GetRequest(), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5


def test_a_hanging_provider_times_out_and_the_fallback_serves(start_kernel, channel_to, counter_pb2):
    hung = CounterServicer(counter_pb2, "hung", delay=30)
    backup = CounterServicer(counter_pb2, "backup")
    config = """
        [providers.hung]
        timeout_seconds = 0.2
        [routing."cortex_test.v1.CounterService"]
        order = ["hung", "backup"]
    """
    target, _ = start_kernel(config, _plugins(counter_pb2, hung, backup))
    reply, call = counter_stub(channel_to, target, counter_pb2).Get.with_call(counter_pb2.GetRequest(), timeout=5)
    assert reply.provider == "backup"
    assert dict(call.trailing_metadata())["x-cortex-route"] == "hung:UNAVAILABLE,backup:ok"


def test_stream_fails_over_before_its_first_message(start_kernel, channel_to, counter_pb2):
    down = CounterServicer(counter_pb2, "primary", fail=UNAVAILABLE)
    up = CounterServicer(counter_pb2, "backup")
    config = '[routing."cortex_test.v1.CounterService"]\norder = ["primary", "backup"]\n'
    target, _ = start_kernel(config, _plugins(counter_pb2, down, up))
    got = list(counter_stub(channel_to, target, counter_pb2).Count(counter_pb2.CountRequest(upto=3), timeout=5))
    assert [(m.value, m.provider) for m in got] == [(0, "backup"), (1, "backup"), (2, "backup")]


@pytest.mark.parametrize("method", ["Get", "Count"])
def test_unary_and_streams_retry_a_lone_provider_alike(start_kernel, channel_to, counter_pb2, method):
    """circuit.retries gives a failover-safe call another pass after a provider fault, unary or
    streaming (before its first message): the two paths share one attempt loop."""

    class FailsOnce(CounterServicer):
        async def _enter(self, context):
            self.calls += 1
            if self.calls == 1:
                await context.abort(UNAVAILABLE, "a hiccup")

    once = FailsOnce(counter_pb2, "only")
    target, _ = start_kernel("[circuit]\nretries = 1\nretry_backoff_seconds = 0.01\n", _plugins(counter_pb2, once))
    stub = counter_stub(channel_to, target, counter_pb2)
    if method == "Get":
        _, call = stub.Get.with_call(counter_pb2.GetRequest(), timeout=5)
    else:
        call = stub.Count(counter_pb2.CountRequest(upto=2), timeout=5)
        assert [m.value for m in call] == [0, 1]
    assert dict(call.trailing_metadata())["x-cortex-route"] == "only:UNAVAILABLE,only:ok"
    assert once.calls == 2


def test_stream_does_not_fail_over_after_its_first_message(start_kernel, channel_to, counter_pb2):
    class DiesMidStream(CounterServicer):
        async def Count(self, request, context):
            self.calls += 1
            yield self.pb2.CountResponse(value=0, provider=self.name)
            await context.abort(UNAVAILABLE, "lost the model mid-stream")

    dying, up = DiesMidStream(counter_pb2, "primary"), CounterServicer(counter_pb2, "backup")
    config = '[routing."cortex_test.v1.CounterService"]\norder = ["primary", "backup"]\n'
    target, _ = start_kernel(config, _plugins(counter_pb2, dying, up))
    received = []
    stream = counter_stub(channel_to, target, counter_pb2).Count(counter_pb2.CountRequest(upto=3), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        received.extend(message.value for message in stream)
    assert received == [0]
    assert err.value.code() == UNAVAILABLE
    assert "not retried on another provider because the stream had started" in err.value.details()
    assert up.calls == 0


def test_a_provider_returning_the_wrong_type_is_internal(start_kernel, channel_to, counter_pb2):
    class Wrong(CounterServicer):
        async def Get(self, request, context):
            return self.pb2.AddRequest(amount=1)

    target, _ = start_kernel("", _plugins(counter_pb2, Wrong(counter_pb2, "wrong")))
    with pytest.raises(grpc.RpcError) as err:
        counter_stub(channel_to, target, counter_pb2).Get(counter_pb2.GetRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "returned AddRequest, expected cortex_test.v1.CountResponse" in err.value.details()


def test_observe_hook_sees_every_outcome(start_kernel, channel_to, counter_pb2):
    gate = Gatekeeper(lambda call: None)
    target, _ = start_kernel("", [*_plugins(counter_pb2, CounterServicer(counter_pb2, "c")), ("gate", gate)])
    channel_to(target)
    counter_stub(channel_to, target, counter_pb2).Add(
        counter_pb2.AddRequest(amount=2), timeout=5, metadata=(("x-cortex-principal", "tester"),)
    )
    call, outcome = next((c, o) for c, o in gate.observed if c.method_name == "Add")
    assert call.principal == "tester" and call.provider.name == "c"
    assert outcome.code == grpc.StatusCode.OK and outcome.provider == "c"
    assert outcome.response.value == 2 and outcome.latency_s > 0


def test_plugins_call_other_contracts_through_the_router(start_kernel, counter_pb2):
    """A plugin's channel reaches other contracts via the router, with the plugin as principal."""
    gate = Gatekeeper(lambda call: "plugins may not add" if call.principal.startswith("plugin:") and call.method_name == "Add" else None)
    servicer = CounterServicer(counter_pb2, "c")
    _target, kt = start_kernel("", [*_plugins(counter_pb2, servicer), ("gate", gate)])
    channel = kt.kernel.host.records["c"].context.channel
    add = channel.unary_unary("/cortex_test.v1.CounterService/Add")
    get = channel.unary_unary("/cortex_test.v1.CounterService/Get")
    with pytest.raises(grpc.RpcError) as err:
        kt.run(add(counter_pb2.AddRequest(amount=1)))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert kt.run(get(counter_pb2.GetRequest(), timeout=2)).provider == "c"
    assert gate.observed[-1][0].principal == "plugin:c"


def test_a_servicer_written_for_grpc_aio_works_in_process(start_kernel, channel_to, counter_pb2):
    """In-process providers get a context with grpc.aio's API: a status set with set_code (not
    abort) reaches the caller as that status, and the rest of the API answers sensibly."""
    seen = {}

    class ContextUser(CounterServicer):
        async def Get(self, request, context):
            seen.update(
                metadata=dict(context.invocation_metadata()), remaining=context.time_remaining(), peer=context.peer(),
                cancelled=context.cancelled(), done=context.done(), active=context.is_active(),
                call_id=context.call_id, principal=context.principal,
            )
            context.add_done_callback(lambda _: None)
            await context.send_initial_metadata((("x-initial", "1"),))
            context.set_trailing_metadata((("x-trailing", "1"),))
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details("the counter is frozen")
            assert context.code_and_details() == (grpc.StatusCode.FAILED_PRECONDITION, "the counter is frozen")
            return self.pb2.CountResponse(value=0, provider=self.name)

    target, _ = start_kernel("", _plugins(counter_pb2, ContextUser(counter_pb2, "only")))
    stub = counter_stub(channel_to, target, counter_pb2)
    with pytest.raises(grpc.RpcError) as err:
        stub.Get(counter_pb2.GetRequest(), timeout=5, metadata=(("x-note", "hello"),))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "the counter is frozen")
    assert seen["metadata"]["x-note"] == "hello" and 0 < seen["remaining"] < 6  # the caller gave 5 s (give or take a clock tick)
    assert (seen["peer"], seen["cancelled"], seen["done"], seen["active"]) == ("local", False, False, True)
    assert seen["call_id"] and seen["principal"]


def test_plain_function_servicers_work_and_half_servicers_are_refused(start_kernel, channel_to, counter_pb2):
    """A servicer of plain (blocking) functions runs off the event loop, its streams from lists; a
    servicer missing a method of its contract is refused when registered, naming the method."""
    from cortex.kernel.registry import ContractRegistry

    class Plain:
        name = "plain"

        def Add(self, request, context):
            return counter_pb2.CountResponse(value=request.amount, provider="plain")

        def Get(self, request, context):
            return counter_pb2.CountResponse(value=7, provider="plain")

        def Count(self, request, context):
            return [counter_pb2.CountResponse(value=i, provider="plain") for i in range(request.upto)]

    target, _ = start_kernel("", [("plain", CounterPlugin(counter_pb2, Plain()))])
    stub = counter_stub(channel_to, target, counter_pb2)
    assert stub.Get(counter_pb2.GetRequest(), timeout=5).value == 7
    assert [m.value for m in stub.Count(counter_pb2.CountRequest(upto=3), timeout=5)] == [0, 1, 2]

    class Half:
        def Get(self, request, context):
            return None

    with pytest.raises(ValueError, match=r"does not implement cortex_test\.v1\.CounterService method"):
        ContractRegistry().add_servicer(counter_pb2.DESCRIPTOR.services_by_name["CounterService"], Half(), plugin="half")


def test_a_rank_that_is_not_a_number_is_refused_at_registration(counter_pb2):
    """A NaN rank compares false with everything: it would scramble the other providers' order (a
    cloud provider before a local one), so the plugin's register hook fails, naming it."""
    from cortex.kernel.registry import ContractRegistry, Registrar

    registrar = Registrar(ContractRegistry(), "evil", {})
    service = counter_pb2.DESCRIPTOR.services_by_name["CounterService"]
    with pytest.raises(ValueError, match="provider 'evil': rank must be a number"):
        registrar.add(service, CounterServicer(counter_pb2, "evil"), rank=float("nan"))
    assert registrar.add(service, CounterServicer(counter_pb2, "ok"), rank=5).rank == 5
