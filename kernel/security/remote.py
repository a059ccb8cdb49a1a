"""A provider on another machine (or process): the router calls it over a gRPC channel.

Configured, not registered by a plugin:

    [providers.box-2]
    endpoint = "10.0.0.7:50051"
    services = ["cortex_echo.v1.EchoService"]
    tls_ca = "ca.pem"                # TLS, and a credential: a client certificate (the remote
    tls_cert = "node.pem"            # kernel sees node:<CN>) or an API key of the remote kernel
    tls_key = "node.key"
    token_env = "BOX2_KEY"

The contract must be known here (its generated code imported), so that requests and responses
can be serialized; the remote side may itself be another Cortex-OS kernel.

With a credential, this kernel acts for its caller there: it sends whom the call serves (the
caller, or for a plugin's call the caller the plugin serves: Call.origin) in x-cortex-principal
(which the remote honours from a kernel certificate, or a key with the act_as scope), so policy,
audit and namespaces on both sides see the same person. The kernel's owner (admin, local, its
plugins: this kernel's own principals, which mean nothing there) is not sent: the remote judges
the credential itself, which is the owner's there too. Someone else whom only this kernel's
credentials name (key:alice) cannot be carried, and a call for them is not sent at all (the
router skips this provider, saying why): it would run there as the owner, in the owner's
namespace. Without a credential nothing of the kind is sent, and the remote sees `local`
(loopback) or refuses the call; so only the owner's calls go there.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..call import CALL_ID_HEADER, LABELS_HEADER, PRINCIPAL_HEADER, PROVIDER_HEADER, Call
from ..method import MethodInfo
from ..registry import Health, Provider
from .credentials import OWNER_NAMESPACE, is_reserved, namespace_of
from .dial import Dial

PROBE_TIMEOUT = 2.0


@functools.lru_cache(maxsize=1024)  # asked for every call without a bearer credential
def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses: a provider there runs on this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback(endpoint: str) -> bool:
    """For a "host:port" endpoint."""
    return is_loopback_host(endpoint.rsplit(":", 1)[0])


@dataclass(eq=False)
class RemoteProvider(Provider):
    max_message_bytes: int = 8 * 1024 * 1024
    dial: Dial = field(default_factory=Dial)
    _channel: grpc.aio.Channel | None = field(default=None, repr=False)
    _callables: dict[str, Any] = field(default_factory=dict, repr=False)

    def channel(self) -> grpc.aio.Channel:
        # Created lazily, inside the serving event loop (grpc.aio channels belong to one loop).
        if self._channel is None:
            self._channel = self.dial.aio_channel(
                self.endpoint,
                options=[
                    ("grpc.max_send_message_length", self.max_message_bytes),
                    ("grpc.max_receive_message_length", self.max_message_bytes),
                ],
            )
        return self._channel

    def _callable(self, method: MethodInfo) -> Any:
        fn = self._callables.get(method.path)
        if fn is None:
            make = self.channel().unary_stream if method.server_streaming else self.channel().unary_unary
            fn = self._callables[method.path] = make(
                method.path,
                request_serializer=method.input.SerializeToString,
                response_deserializer=method.output.FromString,
            )
        return fn

    def _metadata(self, call: Call) -> tuple[tuple[str, str], ...]:
        own = (PRINCIPAL_HEADER, CALL_ID_HEADER, PROVIDER_HEADER, LABELS_HEADER, "authorization")  # a pin names a provider here
        forwarded = tuple((k, v) for k, v in call.metadata if k not in own)
        if call.labels:  # every label the call carries, gathered ones too: the remote kernel's policy judges them
            forwarded += ((LABELS_HEADER, ",".join(sorted(call.labels))),)
        # acting for the caller needs a credential there; this kernel's own principals (admin,
        # local, key:*, plugin:*) mean nothing there: the remote judges the credential instead
        who = _serves(call)
        credential = self.dial.token or self.dial.tls_cert
        acting = ((PRINCIPAL_HEADER, who),) if credential and not is_reserved(who) else ()
        return (*forwarded, *self.dial.metadata(), *acting, (CALL_ID_HEADER, call.id))

    def refuses(self, call: Call, owners: tuple[str, ...]) -> str:
        who = _serves(call)
        if namespace_of(who, owners) == OWNER_NAMESPACE:
            return ""
        if not (self.dial.token or self.dial.tls_cert):
            return f"cannot act for {who} on {self.name}: it is called without a credential, as this kernel's owner"
        if is_reserved(who):
            return (f"cannot act for {who} on {self.name}: that principal is this kernel's own, and there the call "
                    "would run as this kernel (its owner)")
        return ""

    async def unary(
        self, method: MethodInfo, request: Any, call: Call, context: Any, timeout: float | None = None
    ) -> Message:
        return cast(Message, await self._callable(method)(request, timeout=timeout, metadata=self._metadata(call)))

    async def stream(
        self, method: MethodInfo, request: Any, call: Call, context: Any, timeout: float | None = None
    ) -> AsyncGenerator[Message, None]:
        async for message in self._callable(method)(request, timeout=timeout, metadata=self._metadata(call)):
            yield message

    async def probe(self) -> Health:
        """The remote's own gRPC health status for this service."""
        stub = health_pb2_grpc.HealthStub(self.channel())
        try:
            reply = await stub.Check(  # type: ignore[attr-defined]  # typeshed's HealthStub declares no methods
                health_pb2.HealthCheckRequest(service=self.service.full_name), timeout=PROBE_TIMEOUT,
                metadata=self.dial.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return Health(True, "reachable (no health service)")
            return Health(False, f"{self.endpoint}: {exc.code().name}: {exc.details()}")
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        return Health(serving, "" if serving else f"{self.endpoint} reports {reply.status}")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _serves(call: Call) -> str:
    """Whom `call` serves: a plugin's call serves the caller the plugin was serving."""
    return call.origin if call.principal.startswith("plugin:") else call.principal
