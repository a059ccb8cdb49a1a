"""What the bridges (MCP, HTTP/JSON, A2A) see of the contracts: the methods (the registry's
MethodInfo: path, message classes, streaming), and a way to call them as a given principal, with
JSON in and out.

Two gateways, one shape:
- `KernelGateway`: inside a kernel, through a plugin's channel and so through the router
  (governance, audit, failover hold exactly as for gRPC callers);
- `GrpcGateway`: a running kernel over gRPC, its contracts discovered by server reflection
  (`cortex mcp --target HOST:PORT`), third-party contracts included.

Errors are grpc.RpcError either way; `rpc_status` reads one for any bridge.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message import Message

from ..call import PRINCIPAL_HEADER, RouterError
from ..method import MethodInfo
from ..security.dial import Dial
from . import proto_docs
from .json_schema import FREE_OBJECTS, NOT_OBJECTS

# the kernel's plumbing, not contracts: never bridged
INTERNAL_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")


def bridged(method: MethodInfo) -> bool:
    return not method.client_streaming and method.service not in INTERNAL_SERVICES


def describe(method: MethodInfo) -> str:
    """The method's .proto comment, or a plain description for contracts shipped without one."""
    fallback = f"Calls {method.service}/{method.name} ({method.input.DESCRIPTOR.name} -> {method.output.DESCRIPTOR.name})."
    service = method.input.DESCRIPTOR.file.pool.FindServiceByName(method.service)
    return proto_docs.doc(f"{method.service}.{method.name}", fallback, proto_file=service.file.name)


def rpc_status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """(code, details) of a failed call, local (RouterError) or remote, defaulting safely."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    return code or grpc.StatusCode.UNKNOWN, details or ""


def client_principal(kind: str, name: str | None, fallback: str) -> str:
    """"mcp:zed-editor", "a2a:agent": a bridge's client as principal, its self-given name made safe."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name or "")[:64]
    return f"{kind}:{cleaned or fallback}"


def bridge_caller(kind: str, name: str | None, fallback: str, identity: Any = None) -> Any:
    """Whom the router judges for a bridge's client: the client by name ("mcp:zed", "a2a:agent")
    when no identity came with the request (stdio: the bridge's own credential speaks for the
    editor that started it) or when the request's credential is the owner's (the admin token):
    such names are the owner's identities (`kernel.owners`). Else the request's own identity
    (local, key:NAME with its scopes, a gateway's user): a client's self-given name never moves
    anyone into the owner's namespace."""
    named = client_principal(kind, name, fallback)
    if identity is None:
        return named
    return identity.acting_for(named) if identity.is_owner and identity.act_as else identity


def parse_json(method: MethodInfo, data: Any) -> Message:
    """A request message from JSON (protobuf JSON mapping); INVALID_ARGUMENT saying what is wrong.
    The JSON must be an object (`{}` for an empty request): `null` is refused like any non-object."""
    if not isinstance(data, dict):
        raise RouterError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request for {method.path} must be a JSON object ({method.input.DESCRIPTOR.full_name}), not {type(data).__name__}",
        )
    try:
        _check_shapes(data, method.input.DESCRIPTOR, "")
        return json_format.ParseDict(data, method.input())
    except (json_format.ParseError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise RouterError(
            grpc.StatusCode.INVALID_ARGUMENT, f"bad {method.input.DESCRIPTOR.full_name} for {method.path}: {exc}"
        ) from None


def _check_scalar(value: Any, field: Any, path: str) -> None:
    if field.type == field.TYPE_BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be true or false")
    elif field.type == field.TYPE_ENUM:
        known = isinstance(value, str) or (
            isinstance(value, int) and not isinstance(value, bool) and value in field.enum_type.values_by_number
        )
        if not known:  # (an unknown name is json_format's to refuse)
            names = ", ".join(v.name for v in field.enum_type.values)
            raise ValueError(f"{path} must be one of {names}")
    elif field.message_type is None and field.type != field.TYPE_STRING and field.type != field.TYPE_BYTES:
        if isinstance(value, bool):  # a number field: json_format would read true as 1
            raise ValueError(f"{path} must be a number")


def _check_shapes(data: dict[str, Any], descriptor: Any, where: str) -> None:
    """Refuse what json_format lets through although its schema (and the JSON mapping) forbids it:
    an array or a scalar where a message belongs (`"policy_change": []` parsed as an empty message),
    a scalar where a list belongs, true where a number belongs, 1.5 where an enum belongs.
    ValueError names the field."""
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        if field is None or value is None:
            continue  # unknown names are json_format's to refuse; null means the default
        path = f"{where}{key}"
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.is_repeated and not is_map:
            if not isinstance(value, list):
                raise ValueError(f"{path} must be a JSON array")
            items = value
        else:
            items = [value]
        if field.message_type is None:
            for item in items:
                if item is not None:
                    _check_scalar(item, field, path)
            continue
        if field.message_type.full_name in NOT_OBJECTS:
            continue
        for item in items:
            if not isinstance(item, dict):
                raise ValueError(f"{path} must be a JSON object ({field.message_type.full_name})")
            if not is_map and field.message_type.full_name not in FREE_OBJECTS:
                _check_shapes(item, field.message_type, f"{path}.")


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class KernelGateway:
    """Contracts of the kernel this plugin runs in, called through its router."""

    def __init__(self, channel: Any):  # the plugin's KernelChannel (context.channel)
        self._channel = channel

    def methods(self) -> list[MethodInfo]:
        return [m for m in self._channel.methods() if bridged(m)]

    def method(self, path: str) -> MethodInfo | None:
        return cast("MethodInfo | None", self._channel.method(path))

    def explain(self, path: str) -> str:
        """Why `path` is not served (a plugin disabled or broken, by name)."""
        return cast(str, self._channel.explain(path))

    async def unary(self, method: MethodInfo, request: Message, principal: str, timeout: float | None = None) -> Message:
        response, _outcome = await self._channel.acting_for(principal).call(method.path, request, timeout=timeout)
        return cast(Message, response)

    def stream(self, method: MethodInfo, request: Message, principal: str, timeout: float | None = None) -> AsyncIterator[Message]:
        return cast("AsyncIterator[Message]", self._channel.acting_for(principal).unary_stream(method.path)(request, timeout=timeout))

    async def close(self) -> None:
        pass


class GrpcGateway:
    """A running kernel's contracts over gRPC, discovered by server reflection."""

    def __init__(self, target: str, max_message_bytes: int = 8 * 1024 * 1024, dial: Dial | None = None):
        self.target = target
        self._dial = dial or Dial()
        options = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]
        self._channel = self._dial.aio_channel(target, options=options)
        self._methods: dict[str, MethodInfo] = {}

    def _metadata(self, principal: str) -> tuple[tuple[str, str], ...]:
        """The credential; and the bridge's client as principal when the credential may act for
        others (otherwise the kernel judges the credential's own principal)."""
        acting = ((PRINCIPAL_HEADER, principal),) if self._dial.act_as and principal else ()
        return (*self._dial.metadata(), *acting)

    async def discover(self, timeout: float = 5.0) -> list[MethodInfo]:
        """Read the served services and their descriptors; UNAVAILABLE when nothing answers."""
        found = await asyncio.wait_for(asyncio.to_thread(self._reflect, timeout), timeout + 1)
        self._methods = {m.path: m for m in found}
        return found

    def _reflect(self, timeout: float) -> list[MethodInfo]:
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        with self._dial.channel(self.target) as sync:
            grpc.channel_ready_future(sync).result(timeout=timeout)
            database = ProtoReflectionDescriptorDatabase(sync)
            pool = descriptor_pool.DescriptorPool(database)
            return [
                info
                for name in database.get_services()
                if name not in INTERNAL_SERVICES
                for info in map(MethodInfo.from_descriptor, pool.FindServiceByName(name).methods)
                if bridged(info)
            ]

    def methods(self) -> list[MethodInfo]:
        return list(self._methods.values())

    def method(self, path: str) -> MethodInfo | None:
        return self._methods.get(path)

    def explain(self, path: str) -> str:
        return f"{path} is not served by the kernel at {self.target} any more"

    async def unary(self, method: MethodInfo, request: Message, principal: str, timeout: float | None = None) -> Message:
        call: grpc.aio.UnaryUnaryMultiCallable[Message, Message] = self._channel.unary_unary(
            method.path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=method.output.FromString
        )
        return await call(request, timeout=timeout, metadata=self._metadata(principal))

    async def stream(self, method: MethodInfo, request: Message, principal: str, timeout: float | None = None) -> AsyncIterator[Message]:
        call: grpc.aio.UnaryStreamMultiCallable[Message, Message] = self._channel.unary_stream(
            method.path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=method.output.FromString
        )
        async for message in call(request, timeout=timeout, metadata=self._metadata(principal)):
            yield message

    async def close(self) -> None:
        await self._channel.close()

