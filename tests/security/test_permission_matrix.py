"""The permission matrix, generated from the registry: every method the kernel serves, called by
every kind of caller (admin, key A, key B, a scoped key, a gateway's user, local), directly, as a
Cerebrum plan step, and through a plugin's channel (a plugin calling it while serving the caller).

Two rules hold for every cell, for methods that exist now and for any added later (nothing here
names a method):
- a nested call is never allowed more than the direct one: what the caller may not call directly
  is refused however it is reached;
- no caller reads or changes another namespace's data: callers other than A call every method
  with A's ids in every id field, and afterwards A's memory and trace are as they were, and no
  answer they got holds A's text, its content hash or A's principal.
"""

from __future__ import annotations

import base64
import importlib
import json
import pkgutil

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory

import cortex.contracts
from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as cpb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc
from cortex.kernel.security.credentials import KeyStore
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import cortex_env
from .echo_plugin import echo_plugin

pytestmark = pytest.mark.slow

SECRET = "zebra-lantern-4711 is alice's locker code"
DENIED = {"PERMISSION_DENIED", "UNAUTHENTICATED"}
NOT_RUN = "not run"  # the way in itself was refused (e.g. local may not call the relay at all)
# side effects that would end the matrix itself, not a caller's rights: they run last, for admin
KERNEL_WIDE = {"cortex.kernel.v1.PluginService"}

RELAY = """
    async def Echo(self, request, context):
        asked = json.loads(request.message)
        method = Servicer.channel.method(asked["path"])
        message = method.input.FromString(base64.b64decode(asked["request"]))
        body = b""
        try:
            if method.server_streaming:
                async for item in Servicer.channel.unary_stream(asked["path"])(message, timeout=1.5):
                    body += item.SerializeToString()
            else:
                body = (await Servicer.channel.unary_unary(asked["path"])(message, timeout=20)).SerializeToString()
            code = "OK"
        except grpc.RpcError as exc:
            code, body = exc.code().name, exc.details().encode()
        return echo_pb2.EchoResponse(message=json.dumps({"code": code, "body": base64.b64encode(body).decode()}))
"""  # calls the method named in the message through the plugin's channel, for its caller


for _module in pkgutil.walk_packages(cortex.contracts.__path__, "cortex.contracts."):
    if _module.name.endswith("_pb2"):  # every contract's messages in the default pool
        importlib.import_module(_module.name)


def message_class(full_name: str):
    return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(full_name))


def aimed_at(request, ids: dict[str, str]):
    """`request` with another namespace's ids in every id field: trace ids where a trace is
    named, memory ids elsewhere."""
    for field in request.DESCRIPTOR.fields:
        if field.type != field.TYPE_STRING:
            continue
        name = field.name
        value = ids["trace"] if "trace" in name or "Trace" in request.DESCRIPTOR.name else ids["memory"]
        if field.is_repeated and (name == "ids" or name.endswith("_ids")):
            getattr(request, name).append(value)
        elif not field.is_repeated and (name == "id" or name.endswith("_id")):
            setattr(request, name, value)
        elif not field.is_repeated and name in ("ref", "text"):
            setattr(request, name, value if name == "ref" else "overwritten by another caller")
    return request


class Matrix:
    def __init__(self, target: str, channel_to, callers: dict[str, tuple]):
        self.channel = channel_to(target, as_admin=False)
        self.callers = callers
        self.cerebrum = cerebrum_pb2_grpc.CerebrumServiceStub(self.channel)
        self.echo = echo_pb2_grpc.EchoServiceStub(self.channel)
        self.answers: list[tuple[str, str, str, bytes]] = []  # (caller, method, way, what came back)

    def _keep(self, caller: str, path: str, way: str, code: str, body: bytes) -> str:
        self.answers.append((caller, path, way, body))
        return code

    def direct(self, caller: str, path: str, method: kernel_pb2.Method, request) -> str:
        output = message_class(method.output_type)
        metadata = self.callers[caller]
        try:
            if method.server_streaming:
                call = self.channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                                 response_deserializer=output.FromString)
                body = b"".join(m.SerializeToString() for m in call(request, timeout=1.5, metadata=metadata))
            else:
                call = self.channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                                response_deserializer=output.FromString)
                body = call(request, timeout=20, metadata=metadata).SerializeToString()
            return self._keep(caller, path, "direct", "OK", body)
        except grpc.RpcError as exc:
            return self._keep(caller, path, "direct", exc.code().name, (exc.details() or "").encode())

    def as_step(self, caller: str, path: str, request) -> str:
        step = cpb.Step(id="s", method=path.lstrip("/"), request_json=json_format.MessageToJson(request, indent=None))
        try:
            events = list(self.cerebrum.Execute(cpb.ExecuteRequest(plan=cpb.Plan(goal="matrix", steps=[step])),
                                                timeout=60, metadata=self.callers[caller]))
        except grpc.RpcError:
            return NOT_RUN
        records = [e.step for e in events if e.HasField("step") and e.step.state != cpb.StepRecord.STATE_STARTED]
        if not records:
            return NOT_RUN
        record = records[-1]
        return self._keep(caller, path, "step", record.status or "OK", (record.response_json + record.error).encode())

    def relayed(self, caller: str, path: str, request) -> str:
        asked = json.dumps({"path": path, "request": base64.b64encode(request.SerializeToString()).decode()})
        try:
            reply = self.echo.Echo(echo_pb2.EchoRequest(message=asked), timeout=60, metadata=self.callers[caller])
        except grpc.RpcError:
            return NOT_RUN
        answer = json.loads(reply.message)
        return self._keep(caller, path, "relay", answer["code"], base64.b64decode(answer["body"]))


@pytest.fixture
def kernel(tmp_path, serve_process):
    site = echo_plugin(tmp_path / "site", "relay", RELAY, "any")
    data = tmp_path / "data"
    env = cortex_env(data, [site], CORTEX_PLUGINS__DISABLED='["ollama", "openai", "echo", "marketplace"]',
                     CORTEX_PLUGINS__MEMORIES__WATCH="false")
    return serve_process(env=env), data


def test_every_method_every_caller_every_way(kernel, channel_to):
    proc, data = kernel
    keys = KeyStore(data)
    bearer = lambda token: (("authorization", f"Bearer {token}"),)  # noqa: E731
    callers = {
        "key A": bearer(keys.create("alice", [])),
        "key B": bearer(keys.create("bob", [])),
        "scoped": bearer(keys.create("scoped", ["cortex.cerebrum.v1.CerebrumService/*", "cortex_echo.v1.EchoService/*",
                                                "cortex.memories.v1.MemoryService/Search"])),
        "gateway": (*bearer(keys.create("gateway", ["act_as"])), ("x-cortex-principal", "gwuser")),
        "local": (),
    }
    admin_channel = channel_to(proc.target)
    callers["admin"] = ()  # the admin channel carries its token itself
    matrix = Matrix(proc.target, channel_to, callers)

    # what key A owns: a memory holding a secret, and a trace of a plan that read it
    alice = callers["key A"]
    memories = memories_pb2_grpc.MemoryServiceStub(matrix.channel)
    secret = memories.Store(mem.StoreRequest(text=SECRET, tags=["locker"]), timeout=60, metadata=alice)
    search = {"query": "zebra lantern locker", "mode": "SEARCH_MODE_KEYWORD", "top_k": 3}
    plan = cpb.Plan(goal="find the code", steps=[cpb.Step(id="s", method="cortex.memories.v1.MemoryService/Search",
                                                            request_json=json.dumps(search))])
    trace_id = list(matrix.cerebrum.Execute(cpb.ExecuteRequest(plan=plan), timeout=60, metadata=alice))[-1].summary.trace_id
    ids = {"memory": secret.id, "trace": trace_id}
    content_hash = memories.Get(mem.GetRequest(id=secret.id), timeout=10, metadata=alice).memory.content_hash

    contracts = kernel_pb2_grpc.KernelServiceStub(admin_channel).ListContracts(kernel_pb2.ListContractsRequest(), timeout=10)
    methods = [(f"/{c.service}/{m.name}", m) for c in contracts.contracts for m in c.methods
               if not m.client_streaming and not c.service.startswith("grpc.") and c.service not in KERNEL_WIDE]
    assert len(methods) > 40, "the registry serves fewer methods than the contracts declare"

    escalations = []
    for caller in ("key B", "scoped", "gateway", "local", "key A"):
        for path, method in methods:
            request = aimed_at(message_class(method.input_type)(), ids) if caller != "key A" else message_class(method.input_type)()
            direct = matrix.direct(caller, path, method, request)
            for way, outcome in (("step", matrix.as_step(caller, path, request)), ("relay", matrix.relayed(caller, path, request))):
                if direct in DENIED and outcome not in DENIED and outcome != NOT_RUN:
                    escalations.append(f"{caller} {path}: directly {direct}, as a {way} {outcome}")
    assert not escalations, "nested calls allowed more than direct ones:\n" + "\n".join(escalations)

    # key A's data is as it was, and nothing of it reached anyone else
    kept = memories.Get(mem.GetRequest(id=secret.id), timeout=10, metadata=alice).memory
    assert (kept.text, list(kept.tags)) == (SECRET, ["locker"]) and not kept.superseded_by
    assert len(memories.History(mem.HistoryRequest(id=secret.id), timeout=10, metadata=alice).versions) <= 1
    assert matrix.cerebrum.GetTrace(cpb.GetTraceRequest(id=trace_id), timeout=10, metadata=alice).trace.id == trace_id
    leaks = [f"{caller} {path} ({way})" for caller, path, way, body in matrix.answers if caller != "key A"
             and any(mark in body for mark in (b"zebra-lantern", content_hash.encode(), b"key:alice"))]
    assert not leaks, "another namespace's data reached: " + ", ".join(leaks)
