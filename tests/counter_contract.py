"""A counter contract for tests, compiled from tests/protos at session start (fixture
`counter_pb2`), and plugins providing it that can fail, hang, deny or record what they see."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import grpc

from cortex.kernel import Decision, Health, hookimpl

PROTOS = Path(__file__).parent / "protos"


def compile_counter(tmp_path_factory):
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("counter_gen")
    assert protoc.main(["protoc", f"-I{PROTOS}", f"--python_out={out}", "counter.proto"]) == 0
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("counter_pb2")
    finally:
        sys.path.remove(str(out))


class CounterServicer:
    """Counts; `fail` makes every call end with that status, `delay` makes it slow."""

    def __init__(self, pb2, name: str, fail: grpc.StatusCode | None = None, delay: float = 0.0):
        self.pb2, self.name, self.fail, self.delay = pb2, name, fail, delay
        self.value = 0
        self.calls = 0

    async def _enter(self, context):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            await context.abort(self.fail, f"{self.name} is failing on purpose")

    async def Add(self, request, context):
        await self._enter(context)
        self.value += request.amount
        return self.pb2.CountResponse(value=self.value, provider=self.name)

    async def Get(self, request, context):
        await self._enter(context)
        return self.pb2.CountResponse(value=self.value, provider=self.name)

    async def Count(self, request, context):
        await self._enter(context)
        for i in range(request.upto):
            yield self.pb2.CountResponse(value=i, provider=self.name)


class CounterPlugin:
    """Provides CounterService with `servicer`; records its lifecycle in `events`."""

    def __init__(self, pb2, servicer, local: bool = True, events: list | None = None, healthy: bool = True,
                 provider: str | None = None):
        self.pb2, self.servicer, self.local, self.provider = pb2, servicer, local, provider
        self.events = events if events is not None else []
        self.healthy = healthy

    @hookimpl
    def cortex_register(self, registry):
        registry.add(
            self.pb2.DESCRIPTOR.services_by_name["CounterService"], self.servicer, local=self.local, name=self.provider
        )

    @hookimpl
    async def cortex_start(self, context):
        self.events.append(("start", context.name))

    @hookimpl
    async def cortex_stop(self, context):
        self.events.append(("stop", context.name))

    @hookimpl
    async def cortex_health(self):
        return Health(self.healthy, "" if self.healthy else "told to be unhealthy")


class Gatekeeper:
    """An authorize hook: denies what `rule(call)` says, and records every outcome it observes."""

    def __init__(self, rule):
        self.rule = rule
        self.observed = []

    @hookimpl
    def cortex_authorize(self, call):
        reason = self.rule(call)
        return Decision.deny(reason, rule="test-rule") if reason else None

    @hookimpl
    def cortex_observe(self, call, outcome):
        self.observed.append((call, outcome))


def counter_stub(channel_to, target, counter_pb2):
    """A client of CounterService through `channel_to(target)`."""
    channel = channel_to(target)

    class Stub:
        Add = channel.unary_unary(
            "/cortex_test.v1.CounterService/Add",
            request_serializer=counter_pb2.AddRequest.SerializeToString,
            response_deserializer=counter_pb2.CountResponse.FromString,
        )
        Get = channel.unary_unary(
            "/cortex_test.v1.CounterService/Get",
            request_serializer=counter_pb2.GetRequest.SerializeToString,
            response_deserializer=counter_pb2.CountResponse.FromString,
        )
        Count = channel.unary_stream(
            "/cortex_test.v1.CounterService/Count",
            request_serializer=counter_pb2.CountRequest.SerializeToString,
            response_deserializer=counter_pb2.CountResponse.FromString,
        )

    return Stub
