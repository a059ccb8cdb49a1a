"""Load shedding: past kernel.max_in_flight calls from outside, a call is refused at once with
RESOURCE_EXHAUSTED and a retry hint, counted in GetInfo; the admin's calls are still served,
and the calls in flight finish untouched."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.kernel import hookimpl
from cortex.kernel.call import PRINCIPAL_HEADER
from cortex.kernel.config import ConfigError, load_config
from cortex_echo.plugin import EchoServicer
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import callers, wait_for


def held_echo(release: threading.Event, started: list[str]):
    class Held(EchoServicer):
        async def Echo(self, request, context):
            started.append(request.message)
            await asyncio.to_thread(release.wait, 30)  # (set from the test's thread)
            return echo_pb2.EchoResponse(message=request.message, served_by="held")

        async def EchoStream(self, request, context):  # a subscription: one message, then open till released
            started.append(request.message)
            if request.message != "quiet":  # (a quiet one: no event yet)
                yield echo_pb2.EchoResponse(message="first", served_by="held")
            await asyncio.to_thread(release.wait, 30)  # (set from the test's thread)

    class HeldPlugin:
        @hookimpl
        def cortex_register(self, registry):
            registry.add(echo_pb2.DESCRIPTOR.services_by_name["EchoService"], Held("held"))

    return HeldPlugin()


def test_past_the_limit_calls_are_shed_with_a_retry_hint_and_the_admin_still_served(start_kernel, channel_to):
    release, started = threading.Event(), []
    target, _ = start_kernel('[kernel]\nmax_in_flight = 2\n[plugins]\ndisabled = ["echo"]\n',
                             plugins=[("held", held_echo(release, started))])
    local = echo_pb2_grpc.EchoServiceStub(channel_to(target, as_admin=False))
    admin_channel = channel_to(target)
    in_flight = [local.Echo.future(echo_pb2.EchoRequest(message=f"m{i}"), timeout=30) for i in range(2)]
    wait_for(lambda: len(started) == 2, "two calls in flight")

    with pytest.raises(grpc.RpcError) as shed:
        local.Echo(echo_pb2.EchoRequest(message="one too many"), timeout=10)
    assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "kernel.max_in_flight" in shed.value.details() and "retry in about" in shed.value.details()
    trailers = dict(shed.value.trailing_metadata())
    assert int(trailers["grpc-retry-pushback-ms"]) >= 10 and trailers["x-cortex-call-id"]
    assert "one too many" not in started  # refused before any provider saw it

    info = kernel_pb2_grpc.KernelServiceStub(admin_channel).GetInfo(kernel_pb2.GetInfoRequest(), timeout=10)
    assert (info.calls_shed, info.in_flight) == (1, 3)  # the two held, and this GetInfo: the admin is not shed
    admin_echo = echo_pb2_grpc.EchoServiceStub(admin_channel).Echo.future(echo_pb2.EchoRequest(message="admin"), timeout=30)
    wait_for(lambda: "admin" in started, "the admin's call served while the kernel is full")
    for_alice = echo_pb2_grpc.EchoServiceStub(admin_channel).Echo.future(  # the admin acting for someone
        echo_pb2.EchoRequest(message="for alice"), metadata=((PRINCIPAL_HEADER, "alice"),), timeout=30)
    wait_for(lambda: "for alice" in started, "the admin's call for alice served while the kernel is full")
    with pytest.raises(grpc.RpcError) as spoofed:  # a caller claiming to be the admin is not
        local.Echo(echo_pb2.EchoRequest(message="spoof"), metadata=((PRINCIPAL_HEADER, "admin"),), timeout=10)
    assert spoofed.value.code() == grpc.StatusCode.PERMISSION_DENIED  # refused by its credential, before any slot
    assert "spoof" not in started

    release.set()
    assert [f.result().message for f in in_flight] == ["m0", "m1"]  # nothing admitted was lost
    assert admin_echo.result().served_by == "held" and for_alice.result().message == "for alice"
    assert local.Echo(echo_pb2.EchoRequest(message="later"), timeout=10).message == "later"  # a slot again
    info = kernel_pb2_grpc.KernelServiceStub(admin_channel).GetInfo(kernel_pb2.GetInfoRequest(), timeout=10)
    assert (info.calls_shed, info.in_flight) == (1, 1)  # this GetInfo alone


def test_one_caller_flooding_the_kernel_leaves_slots_to_the_others(start_kernel, channel_to, data_dir):
    release, started = threading.Event(), []
    target, _ = start_kernel('[kernel]\nmax_in_flight = 8\n[plugins]\ndisabled = ["echo"]\n',
                             plugins=[("held", held_echo(release, started))])
    who = callers(target, data_dir, "alice", "bob", "carol")
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(target, as_admin=False))
    flood = [echo.Echo.future(echo_pb2.EchoRequest(message=f"a{i}"), metadata=who["alice"], timeout=30) for i in range(8)]
    wait_for(lambda: len(started) == 8, "alice alone holding every slot")
    with pytest.raises(grpc.RpcError) as shed:  # the kernel at its limit, alice holding all of it
        echo.Echo(echo_pb2.EchoRequest(message="a-more"), metadata=who["alice"], timeout=10)
    assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "8 of them 'key:alice''s: its share or more" in shed.value.details()
    bob = echo.Echo.future(echo_pb2.EchoRequest(message="b0"), metadata=who["bob"], timeout=30)
    wait_for(lambda: "b0" in started, "bob's call served beside the flood, in the slot kept spare")
    with pytest.raises(grpc.RpcError) as full:  # the spare slot taken too: anyone is shed
        echo.Echo(echo_pb2.EchoRequest(message="c0"), metadata=who["carol"], timeout=10)
    assert "and the 1 more it keeps for callers holding less than their share" in full.value.details()
    release.set()
    assert [f.result().message for f in [*flood, bob]] == [f"a{i}" for i in range(8)] + ["b0"]
    assert "a-more" not in started and "c0" not in started


def test_a_remote_kernel_shedding_is_routed_around_and_not_held_against_it(start_kernel, channel_to, tmp_path):
    from cortex.kernel.security.credentials import KeyStore

    release, started = threading.Event(), []
    far_dir = tmp_path / "far"
    far, _ = start_kernel('[kernel]\nmax_in_flight = 1\n[plugins]\ndisabled = ["echo"]\n',
                          plugins=[("held", held_echo(release, started))], env={"CORTEX_DATA_DIR": str(far_dir)})
    key = KeyStore(far_dir).create("near", ["cortex_echo.v1.*/*", "act_as"])
    near, near_kt = start_kernel(f"""
        [providers.far]
        endpoint = "{far}"
        services = ["cortex_echo.v1.EchoService"]
        token_env = "FAR_KEY"
        [routing."cortex_echo.v1.EchoService"]
        order = ["far", "echo"]
    """, env={"FAR_KEY": key})
    far_echo = echo_pb2_grpc.EchoServiceStub(channel_to(far, as_admin=False))
    holding = far_echo.Echo.future(echo_pb2.EchoRequest(message="holds the far kernel's one slot"), timeout=30)
    wait_for(lambda: len(started) == 1, "the far kernel full")
    for _ in range(3):
        reply, call = echo_pb2_grpc.EchoServiceStub(channel_to(near)).Echo.with_call(echo_pb2.EchoRequest(message="x"),
                                                                                     timeout=10)
        assert reply.served_by == "echo"  # served here, at once: the far kernel refused before doing anything
        assert dict(call.trailing_metadata())["x-cortex-route"] == "far:RESOURCE_EXHAUSTED,echo:ok"
    provider = next(p for p in near_kt.kernel.registry.all_providers() if p.name == "far")
    assert provider.failures == 0 and provider.breaker.state.value == "closed"  # at capacity is not broken
    release.set()
    assert holding.result().message == "holds the far kernel's one slot"
    reply = echo_pb2_grpc.EchoServiceStub(channel_to(near)).Echo(echo_pb2.EchoRequest(message="y"), timeout=10)
    assert reply.served_by == "held"  # the far kernel again, once it has room


def test_a_limit_out_of_range_is_refused_naming_the_key(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[kernel]\nmax_in_flight = -1\n")
    with pytest.raises(ConfigError, match="max_in_flight must be between 0"):
        load_config(config)


def test_a_stream_holds_its_slot_only_until_its_first_message(start_kernel, channel_to):
    release, started = threading.Event(), []
    target, _ = start_kernel('[kernel]\nmax_in_flight = 1\n[plugins]\ndisabled = ["echo"]\n',
                             plugins=[("held", held_echo(release, started))])
    local = echo_pb2_grpc.EchoServiceStub(channel_to(target, as_admin=False))
    streams = [local.EchoStream(echo_pb2.EchoRequest(message="s"), timeout=30) for _ in range(3)]
    assert [next(s).message for s in streams] == ["first"] * 3  # each began, one after another
    held = local.Echo.future(echo_pb2.EchoRequest(message="unary"), timeout=30)  # the one slot: free again
    wait_for(lambda: "unary" in started, "the unary call served beside three open streams")
    with pytest.raises(grpc.RpcError) as shed:  # and now taken by that unary call
        local.Echo(echo_pb2.EchoRequest(message="over"), timeout=10)
    assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    release.set()
    assert held.result().message == "unary"
    assert all(list(s) == [] for s in streams)  # the streams end cleanly


def test_a_quiet_stream_lets_its_slot_go_after_a_second(start_kernel, channel_to):
    import time

    from cortex.kernel.security.shedding import STREAM_HOLD_S

    release, started = threading.Event(), []
    target, _ = start_kernel('[kernel]\nmax_in_flight = 1\n[plugins]\ndisabled = ["echo"]\n',
                             plugins=[("held", held_echo(release, started))])
    local = echo_pb2_grpc.EchoServiceStub(channel_to(target, as_admin=False))
    quiet = local.EchoStream(echo_pb2.EchoRequest(message="quiet"), timeout=30)
    wait_for(lambda: "quiet" in started, "the quiet stream at its provider")
    opened = time.monotonic()
    with pytest.raises(grpc.RpcError) as shed:  # its slot, for now
        local.Echo(echo_pb2.EchoRequest(message="early"), timeout=10)
    assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() - opened < STREAM_HOLD_S
    time.sleep(STREAM_HOLD_S + 0.3)
    served = local.Echo.future(echo_pb2.EchoRequest(message="later"), timeout=30)  # 64 subscriptions never pin the kernel
    wait_for(lambda: "later" in started, "a call served beside the quiet stream")
    release.set()
    assert served.result().message == "later" and list(quiet) == []
