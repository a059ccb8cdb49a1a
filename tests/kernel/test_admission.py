"""Admission (kernel/admission.py): one function says whether a call may go to a provider now, and
if not, why; the route's trailers and ListContracts show that reason."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from google.protobuf import empty_pb2

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.kernel.admission import Admitter
from cortex.kernel.call import ALLOW_BY_DEFAULT, Call, Decision, RouterError
from cortex.kernel.circuit import CircuitBreaker
from cortex.kernel.method import MethodInfo
from cortex.kernel.registry import Provider
from cortex.kernel.sdk.testing import kernel_config
from cortex.kernel.security.remote import RemoteProvider

from ..conftest import bearer, cortex_env, run_cli
from ..counter_contract import CounterPlugin, CounterServicer, counter_stub

Code = grpc.StatusCode
GET = MethodInfo("cortex_test.v1.CounterService", "Get", "/cortex_test.v1.CounterService/Get",
                 empty_pb2.Empty, empty_pb2.Empty, False, False, True)


class Host:
    """What admission reads of the plugin host: required plugins, their records, the policy."""

    def __init__(self, deny: str = "", down: str = "", cannot_judge: bool = False):
        self.required = ("governance",)
        self.records = {"governance": SimpleNamespace(state="broken" if down else "loaded", error=down)}
        self.deny, self.cannot_judge, self.asked = deny, cannot_judge, []

    async def authorize(self, call: Call) -> Decision:
        self.asked.append(call.provider.name)
        if self.cannot_judge:
            raise RouterError(Code.UNAVAILABLE, "'governance' cannot judge calls now (disk full): calls are refused until it recovers")
        return Decision.deny(self.deny) if self.deny else ALLOW_BY_DEFAULT


def provider(name: str, local: bool = True, remote: bool = False) -> Provider:
    kind = RemoteProvider if remote else Provider
    return kind(name, name, None, CircuitBreaker(failure_threshold=1), local=local, endpoint="far:443" if remote else "")


def call(principal: str = "local", scopes: tuple[str, ...] | None = None, local_only: bool = False) -> Call:
    return Call("c1", GET, empty_pb2.Empty(), principal, scopes=scopes, local_only=local_only)


@pytest.fixture
def admitter(tmp_path):
    def make(config: str = "", host: Host | None = None) -> Admitter:
        cfg = kernel_config(tmp_path / "cortex.toml", config, tmp_path / "data", governance=False)
        return Admitter(host or Host(), cfg, ())

    return make


def admit(admitter: Admitter, c: Call | None, p: Provider | None, position: int = 0):
    return asyncio.run(admitter.admit(c, p, position))


def test_one_function_gives_the_reason_for_each_refusal_kind(admitter):
    plain = admitter()
    # the caller's key scopes: the whole call, before any provider is named
    scoped = admit(plain, call("key:alice", scopes=("cortex.memories.v1.MemoryService/*",)), None)
    assert (scoped.allowed, scoped.step, scoped.code, scoped.whole_call) == (False, "scopes", Code.PERMISSION_DENIED, True)
    assert "key:alice may call only cortex.memories.v1.MemoryService/* (its key's scopes)" in scoped.reason
    assert admit(plain, call(scopes=("cortex_test.v1.CounterService/*",)), None).allowed
    # privacy: privacy mode, or a local_only call, keeps a call off remote providers
    private = admit(admitter("[kernel]\nprivacy_mode = true\n"), call(), provider("cloud", local=False))
    assert (private.step, private.code, private.reason) == (
        "privacy", Code.FAILED_PRECONDITION, "remote provider not allowed: privacy mode is on")
    assert admit(plain, call(local_only=True), provider("cloud", local=False)).reason.endswith("asks for local_only")
    assert admit(plain, call(local_only=True), provider("laptop")).allowed
    # conjunction off: a remote provider is never a fallback
    alone = admitter("[hybrid]\nconjunction = false\n")
    assert admit(alone, call(), provider("cloud", local=False), 0).allowed
    assert admit(alone, call(), provider("cloud", local=False), 1).step == "conjunction"
    # remote identity: a remote provider called without a credential cannot act for key:alice
    far = admit(plain, call("key:alice"), provider("far", remote=True))
    assert (far.step, far.code, far.whole_call) == ("identity", Code.UNAVAILABLE, False)
    assert far.reason.startswith("cannot act for key:alice on far")
    assert admit(plain, call(), provider("far", remote=True)).allowed  # the owner's call goes
    # a required plugin that is down refuses every call, before the policy is asked
    host = Host(down="its audit log cannot be read")
    down = admit(admitter(host=host), call(), provider("laptop"))
    assert (down.step, down.code, down.whole_call) == ("required", Code.UNAVAILABLE, True)
    assert down.reason == ("required plugin 'governance' is broken (its audit log cannot be read): "
                           "calls are refused until it is back") and host.asked == []
    # the policy: a deny skips this provider only; a plugin that cannot judge refuses the call
    denied = admit(admitter(host=Host(deny="not here")), call(), provider("laptop"))
    assert (denied.step, denied.code, denied.reason, denied.whole_call) == ("policy", Code.PERMISSION_DENIED, "not here", False)
    assert not denied.decision.allow
    blind = admit(admitter(host=Host(cannot_judge=True)), call(), provider("laptop"))
    assert (blind.step, blind.code, blind.whole_call) == ("policy", Code.UNAVAILABLE, True)
    assert blind.reason.startswith("'governance' cannot judge calls now")


def test_the_first_refusal_wins_and_the_circuit_comes_last(admitter):
    host = Host(deny="not here")
    private = admitter("[kernel]\nprivacy_mode = true\n", host)
    assert admit(private, call(), provider("cloud", local=False)).step == "privacy" and host.asked == []
    broken = provider("laptop")
    broken.breaker.record_failure()  # threshold 1: open
    assert admit(admitter(host=host), call(), broken).step == "policy"  # a denied call is denied, not skipped
    shut = admit(admitter(), call(), broken)
    assert (shut.step, shut.code) == ("circuit", Code.UNAVAILABLE) and shut.reason.startswith("circuit open, next probe in")
    # no call (ListContracts' plain call): the circuit is read, its half-open probe never taken
    assert admit(admitter(), None, broken).step == "circuit"
    broken.breaker.reset_timeout = 0.0
    assert admit(admitter(), None, broken).allowed and broken.breaker.allow()  # the probe is still there


def test_list_contracts_shows_why_a_provider_is_not_admitted(start_kernel, channel_to, counter_pb2, data_dir):
    plugins = [
        ("laptop", CounterPlugin(counter_pb2, CounterServicer(counter_pb2, "laptop"))),
        ("cloud", CounterPlugin(counter_pb2, CounterServicer(counter_pb2, "cloud"), local=False)),
    ]
    target, _ = start_kernel("[kernel]\nprivacy_mode = true\n", plugins)
    reply = kernel_pb2_grpc.KernelServiceStub(channel_to(target)).ListContracts(kernel_pb2.ListContractsRequest(), timeout=5)
    counter = {c.service: c for c in reply.contracts}["cortex_test.v1.CounterService"]
    assert [(p.name, p.admission) for p in counter.providers] == [
        ("laptop", ""), ("cloud", "remote provider not allowed: privacy mode is on")]
    listed = run_cli("contracts", "list", "--target", target, env=cortex_env(data_dir)).stdout  # and `cortex contracts list`
    assert "provider:  cloud (in-process, remote)" in listed and "not admitted: remote provider not allowed: privacy mode is on" in listed
    # and a call refused there says why in its trailers
    with pytest.raises(grpc.RpcError) as err:
        counter_stub(channel_to, target, counter_pb2).Get(counter_pb2.GetRequest(), timeout=5, metadata=(("x-cortex-provider", "cloud"),))
    assert err.value.code() == Code.FAILED_PRECONDITION
    trailers = dict(err.value.trailing_metadata())
    assert trailers["x-cortex-route"] == "cloud:skipped"
    assert trailers["x-cortex-refused"] == "cloud: remote provider not allowed: privacy mode is on"


def test_a_call_refused_as_a_whole_says_why_in_its_trailers(start_kernel, channel_to, counter_pb2, data_dir):
    from cortex.kernel.security.credentials import KeyStore

    target, _ = start_kernel("", [("laptop", CounterPlugin(counter_pb2, CounterServicer(counter_pb2, "laptop")))])
    token = KeyStore(data_dir).create("narrow", ["cortex.memories.v1.MemoryService/*"])
    stub = counter_stub(lambda t: channel_to(t, as_admin=False), target, counter_pb2)
    with pytest.raises(grpc.RpcError) as err:
        stub.Get(counter_pb2.GetRequest(), timeout=5, metadata=bearer(token))
    assert err.value.code() == Code.PERMISSION_DENIED
    trailers = dict(err.value.trailing_metadata())
    assert trailers["x-cortex-refused"] == err.value.details() and "(its key's scopes)" in trailers["x-cortex-refused"]
    assert "x-cortex-route" not in trailers


def test_only_a_call_that_will_be_made_takes_a_half_open_circuits_probe(admitter):
    """A side door's admission (nothing is called) reads the circuit; a probe in flight shows as such."""
    half_open = provider("laptop")
    half_open.breaker.record_failure()
    half_open.breaker.reset_timeout = 0.0
    assert asyncio.run(admitter().admit(call(), half_open, 0, probe=False)).allowed
    assert admit(admitter(), call(), half_open).allowed  # the probe was still there: this call takes it
    busy = admit(admitter(), None, half_open)  # ListContracts while the probe is out
    assert (busy.step, busy.reason) == ("circuit", "circuit open, its one probe is in flight")
    half_open.breaker.release()  # a probe taken but never sent
    assert admit(admitter(), call(), half_open).allowed


def test_a_side_door_admission_leaves_the_probe_and_a_passed_deadline_leaves_the_circuit(start_kernel, channel_to, counter_pb2):
    """Neither tells anything of the provider: an admitted part of an import keeps the half-open
    circuit's one probe for a real call, and a call whose deadline passed before any provider was
    asked neither closes a failing provider's circuit nor counts as its call."""
    import time

    from cortex.kernel.call import Call as KernelCall

    servicer = CounterServicer(counter_pb2, "laptop")
    _, kt = start_kernel(plugins=[("laptop", CounterPlugin(counter_pb2, servicer))])
    kernel = kt.kernel
    method = kernel.registry.method("/cortex_test.v1.CounterService/Get")
    laptop = kernel.registry.providers["cortex_test.v1.CounterService"][0]

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, kt.loop).result(10)

    async def fail_it() -> None:  # on the kernel's loop, which hears of the circuit's changes
        laptop.breaker.reset_timeout = 0.0
        for _ in range(laptop.breaker.failure_threshold):
            laptop.breaker.record_failure()

    run(fail_it())

    request = counter_pb2.GetRequest()
    run(kernel.router.admit(method, request, KernelCall("side", method, request, "admin")))
    assert laptop.breaker.would_allow()  # the side door took no probe
    late = KernelCall("late", method, request, "admin", deadline=time.monotonic() - 1)
    calls = laptop.calls
    with pytest.raises(RouterError) as err:
        run(kernel.router.unary(method, request, late))
    assert err.value.code() == Code.DEADLINE_EXCEEDED
    assert laptop.breaker.state.value == "half_open" and laptop.breaker.consecutive_failures >= 1 and laptop.calls == calls
    assert laptop.breaker.would_allow()  # and its probe is still there for the next call
