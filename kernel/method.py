"""One RPC of a contract, as the registry, the router and the bridges know it: its wire path, its
message classes, its streaming shape, and whether a retry is safe (from its idempotency level)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

_SAFE = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
}


@dataclass(frozen=True)
class MethodInfo:
    """One RPC of a contract, with the message classes to parse and build its messages."""

    service: str
    name: str
    path: str  # "/pkg.v1.Service/Method", as on the wire
    input: type[Message]
    output: type[Message]
    client_streaming: bool
    server_streaming: bool
    failover_safe: bool

    @classmethod
    def from_descriptor(cls, desc: MethodDescriptor) -> MethodInfo:
        service = desc.containing_service.full_name
        return cls(
            service=service,
            name=desc.name,
            path=f"/{service}/{desc.name}",
            input=message_factory.GetMessageClass(desc.input_type),
            output=message_factory.GetMessageClass(desc.output_type),
            client_streaming=desc.client_streaming,
            server_streaming=desc.server_streaming,
            failover_safe=desc.GetOptions().idempotency_level in _SAFE,
        )


