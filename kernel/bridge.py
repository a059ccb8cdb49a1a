"""What the bridges (MCP, HTTP/JSON, A2A) see of the contracts: a list of methods with their
message classes, and a way to call them as a given principal, with JSON in and out.

Two gateways, one shape:
- `KernelGateway`: inside a kernel, through a plugin's channel and so through the router
  (governance, audit, failover hold exactly as for gRPC callers);
- `GrpcGateway`: a running kernel over gRPC, its contracts discovered by server reflection
  (`cortex mcp --target HOST:PORT`), third-party contracts included.

Errors are grpc.RpcError either way (code(), details()), so bridges map one kind of error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from . import proto_docs
from .call import PRINCIPAL_HEADER, RouterError

# the kernel's plumbing, not contracts: never bridged
INTERNAL_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")


@dataclass(frozen=True)
class BridgeMethod:
    service: str  # "cortex.memories.v1.MemoryService"
    name: str  # "Store"
    input: type[Message]
    output: type[Message]
    server_streaming: bool
    failover_safe: bool = False

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def full_name(self) -> str:
        return f"{self.service}.{self.name}"

    @property
    def description(self) -> str:
        fallback = f"Calls {self.service}/{self.name} ({self.input.DESCRIPTOR.name} -> {self.output.DESCRIPTOR.name})."
        return proto_docs.doc(self.full_name, fallback)


def parse_json(method: BridgeMethod, data: Any) -> Message:
    """A request message from JSON (protobuf JSON mapping); INVALID_ARGUMENT saying what is wrong."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RouterError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request for {method.path} must be a JSON object ({method.input.DESCRIPTOR.full_name}), not {type(data).__name__}",
        )
    try:
        return json_format.ParseDict(data, method.input())
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise RouterError(
            grpc.StatusCode.INVALID_ARGUMENT, f"bad {method.input.DESCRIPTOR.full_name} for {method.path}: {exc}"
        ) from None


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class KernelGateway:
    """Contracts of the kernel this plugin runs in, called through its router."""

    def __init__(self, channel: Any):
        self._channel = channel

    def methods(self) -> list[BridgeMethod]:
        return [
            BridgeMethod(m.service, m.name, m.input, m.output, m.server_streaming, m.failover_safe)
            for m in self._channel.methods()
            if not m.client_streaming and m.service not in INTERNAL_SERVICES
        ]

    async def unary(self, method: BridgeMethod, request: Message, principal: str, timeout: float | None = None) -> Message:
        response, _outcome = await self._channel.acting_for(principal).call(method.path, request, timeout=timeout)
        return response

    def stream(self, method: BridgeMethod, request: Message, principal: str, timeout: float | None = None) -> AsyncIterator[Message]:
        return self._channel.acting_for(principal).unary_stream(method.path)(request, timeout=timeout)

    async def close(self) -> None:
        pass


class GrpcGateway:
    """A running kernel's contracts over gRPC, discovered by server reflection."""

    def __init__(self, target: str, max_message_bytes: int = 8 * 1024 * 1024):
        self.target = target
        options = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]
        self._channel = grpc.aio.insecure_channel(target, options=options)
        self._methods: list[BridgeMethod] = []

    async def discover(self, timeout: float = 5.0) -> list[BridgeMethod]:
        """Read the served services and their descriptors; UNAVAILABLE when nothing answers."""
        self._methods = await asyncio.wait_for(asyncio.to_thread(self._reflect, timeout), timeout + 1)
        return self._methods

    def _reflect(self, timeout: float) -> list[BridgeMethod]:
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        with grpc.insecure_channel(self.target) as sync:
            grpc.channel_ready_future(sync).result(timeout=timeout)
            database = ProtoReflectionDescriptorDatabase(sync)
            pool = descriptor_pool.DescriptorPool(database)
            methods = []
            for name in database.get_services():
                if name in INTERNAL_SERVICES:
                    continue
                service = pool.FindServiceByName(name)
                for m in service.methods:
                    if m.client_streaming:
                        continue
                    level = m.GetOptions().idempotency_level
                    methods.append(
                        BridgeMethod(
                            service=name,
                            name=m.name,
                            input=message_factory.GetMessageClass(m.input_type),
                            output=message_factory.GetMessageClass(m.output_type),
                            server_streaming=m.server_streaming,
                            failover_safe=level in (1, 2),  # NO_SIDE_EFFECTS, IDEMPOTENT
                        )
                    )
            return methods

    def methods(self) -> list[BridgeMethod]:
        return list(self._methods)

    async def unary(self, method: BridgeMethod, request: Message, principal: str, timeout: float | None = None) -> Message:
        call = self._channel.unary_unary(
            method.path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=method.output.FromString
        )
        return await call(request, timeout=timeout, metadata=((PRINCIPAL_HEADER, principal),))

    async def stream(self, method: BridgeMethod, request: Message, principal: str, timeout: float | None = None) -> AsyncIterator[Message]:
        call = self._channel.unary_stream(
            method.path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=method.output.FromString
        )
        async for message in call(request, timeout=timeout, metadata=((PRINCIPAL_HEADER, principal),)):
            yield message

    async def close(self) -> None:
        await self._channel.close()
