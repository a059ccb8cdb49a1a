"""The gRPC server: grpc.aio with the router behind one handler per contract method, plus the
standard health and reflection services.

Requests arrive as bytes and are parsed here, so a malformed message gets INVALID_ARGUMENT with
the parser's reason (grpc's own deserializer would answer a bare INTERNAL). A method nobody serves
gets UNIMPLEMENTED with a message saying why (a disabled or broken plugin, a typo).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from .admission import REFUSED_HEADER, Refused
from .call import (
    CALL_ID_HEADER,
    PARENT_CALL_ID_HEADER,
    PRINCIPAL_HEADER,
    PROVIDER_HEADER,
    ROUTE_HEADER,
    Call,
    RouterError,
    new_call_id,
)
from .registry import ContractRegistry, MethodInfo
from .router import Router
from .security.credentials import AuthError, Credentials
from .security.labels import request_labels
from .security.remote import is_loopback_host

log = structlog.get_logger("cortex.server")

_ASCII_SAFE = str.maketrans(dict.fromkeys(map(chr, range(32)), "?"))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _trailers(call: Call, error: RouterError | None = None) -> tuple[tuple[str, str], ...]:
    """The call's id (and parent); once routed, who served it, the route, and why admission refused (x-cortex-refused)."""
    trailers = [(CALL_ID_HEADER, call.id)]
    outcome = call.outcome
    if call.parent_id:
        trailers.append((PARENT_CALL_ID_HEADER, call.parent_id))
    if outcome is not None:
        if outcome.provider:
            trailers.append((PROVIDER_HEADER, outcome.provider))
        refused = [f"{a.provider}: {a.detail}" for a in outcome.attempts if a.outcome in ("skipped", "denied")]
        refused += [error.details()] if isinstance(error, Refused) else []
        trailers += error.trailing_metadata() if error is not None else ()
        for header, value in ((ROUTE_HEADER, outcome.route), (REFUSED_HEADER, "; ".join(refused))):
            if value:
                trailers.append((header, value.encode("ascii", "replace").decode().translate(_ASCII_SAFE)[:1024]))
    return tuple(trailers)


def peer_is_loopback(peer: str) -> bool:
    """For grpc's peer strings: "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:/path"."""
    kind, _, address = peer.partition(":")
    if kind == "unix":
        return True
    return is_loopback_host(address.rsplit(":", 1)[0])


def _certificate_name(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    names = list(context.auth_context().get("x509_common_name") or ())
    return names[0].decode("utf-8", "replace") if names else ""


def _make_call(
    method: MethodInfo, request: Any, context: grpc.aio.ServicerContext[Any, Any], credentials: Credentials, mutual_tls: bool
) -> Call:
    """The call, with its identity from the caller's credential (AuthError when it has none)."""
    metadata = tuple((k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str))  # grpc's (key, value) namedtuples
    claimed = parent_id = authorization = ""
    for key, value in metadata:
        if key == PRINCIPAL_HEADER:
            claimed = value
        elif key == "authorization":
            authorization = value
        elif key == CALL_ID_HEADER and 0 < len(value) <= 64 and value.isascii() and value.isprintable():
            parent_id = value  # the caller's id correlates; it never names this call (callers may repeat it)
    # (where the caller is matters only to a caller without a bearer credential)
    loopback = not authorization and peer_is_loopback(context.peer())
    identity = credentials.identify(authorization, loopback, _certificate_name(context) if mutual_tls else "", claimed)
    remaining = context.time_remaining()
    return Call(
        id=new_call_id(),
        parent_id=parent_id,
        method=method,
        request=request,
        principal=identity.principal,
        metadata=tuple((k, v) for k, v in metadata if k != "authorization"),  # secrets go no further
        deadline=None if remaining is None else time.monotonic() + remaining,
        actor=identity.actor,
        scopes=identity.scopes,
        labels=request_labels(request, metadata),
    )


async def _identified_call(
    method: MethodInfo, raw: bytes, context: grpc.aio.ServicerContext[Any, Any], credentials: Credentials, mutual_tls: bool
) -> Call:
    request = await _parse(method, raw, context)
    try:
        return _make_call(method, request, context, credentials, mutual_tls)
    except AuthError as exc:
        log.warning("call.refused", method=method.path, peer=context.peer(), code=exc.code.name, reason=exc.message)
        await context.abort(exc.code, exc.message)


async def _parse(method: MethodInfo, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    try:
        return method.input.FromString(raw)
    except DecodeError as exc:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {method.input.DESCRIPTOR.full_name} message ({exc}); "
            f"send one built from the {method.service} .proto",
        )


def _unary_handler(router: Router, method: MethodInfo, credentials: Credentials, mutual_tls: bool) -> grpc.RpcMethodHandler[Any, Any]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = await _identified_call(method, raw, context, credentials, mutual_tls)
        async with router.load.slot(call, context):
            try:
                response = await router.unary(method, call.request, call)
            except RouterError as err:
                await context.abort(err.code(), err.details(), _trailers(call, err))
        context.set_trailing_metadata(_trailers(call))
        return response

    return grpc.unary_unary_rpc_method_handler(handle, response_serializer=_serialize)


def _stream_handler(router: Router, method: MethodInfo, credentials: Credentials, mutual_tls: bool) -> grpc.RpcMethodHandler[Any, Any]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        call = await _identified_call(method, raw, context, credentials, mutual_tls)
        async with router.load.slot(call, context, stream=True) as release:
            try:
                async for message in router.stream(method, call.request, call):
                    release()
                    yield message
            except RouterError as err:
                await context.abort(err.code(), err.details(), _trailers(call, err))
        context.set_trailing_metadata(_trailers(call))

    return grpc.unary_stream_rpc_method_handler(handle, response_serializer=_serialize)


def _refusing_handler(method: MethodInfo) -> grpc.RpcMethodHandler[Any, Any]:
    async def handle(request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{method.path} is client-streaming; the router does not route client-streaming methods yet",
        )

    if method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(handle)
    return grpc.stream_unary_rpc_method_handler(handle)


class LateContracts(grpc.GenericRpcHandler):
    """Serves the contracts registered after the server started (a plugin enabled or installed
    while the kernel runs), looked up in the registry per method path. Those served from the start
    have registered handlers (grpc's fast path); a plugin disabled live keeps them, and the router
    then answers UNIMPLEMENTED naming it."""

    def __init__(self, registry: ContractRegistry, router: Router, credentials: Credentials, mutual_tls: bool):
        self._registry, self._router, self._credentials, self._mutual_tls = registry, router, credentials, mutual_tls
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def refresh(self) -> None:
        self._handlers.clear()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        path = handler_call_details.method
        handler = self._handlers.get(path)
        if handler is None:
            method = self._registry.method(path)
            if method is None or not self._registry.providers.get(method.service):
                return None  # on to the handler that explains why nothing serves it
            handler = self._handlers[path] = _handler(self._router, method, self._credentials, self._mutual_tls)
        return handler


def _handler(router: Router, method: MethodInfo, credentials: Credentials, mutual_tls: bool) -> grpc.RpcMethodHandler[Any, Any]:
    if method.client_streaming:
        return _refusing_handler(method)
    if method.server_streaming:
        return _stream_handler(router, method, credentials, mutual_tls)
    return _unary_handler(router, method, credentials, mutual_tls)


class _LiveReflection(reflection.aio.ReflectionServicer):
    """Server reflection that lists what the registry serves now (plugins may be enabled or
    disabled while the kernel runs), plus the kernel's plumbing services. grpcio-reflection keeps
    the names in `_service_names`, set once; here it is read from the registry (grpcio-reflection
    is locked, and a test lists a live-enabled service through reflection)."""

    def __init__(self, registry: ContractRegistry, plumbing: list[str]):
        self._registry, self._plumbing = registry, tuple(plumbing)
        super().__init__(plumbing)

    @property
    def _service_names(self) -> tuple[str, ...]:
        return tuple(sorted({*self._plumbing, *(s.full_name for s in self._registry.served())}))

    @_service_names.setter
    def _service_names(self, _value: object) -> None:  # the base class's one assignment: the registry decides
        pass


class _UnknownMethodHandler(grpc.GenericRpcHandler):
    """Last in line: explains why a method is not served."""

    def __init__(self, explain: Callable[[str], str]):
        self._explain = explain

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        message = self._explain(handler_call_details.method)

        async def refuse(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        return grpc.unary_unary_rpc_method_handler(refuse)


def build_server(
    registry: ContractRegistry,
    router: Router,
    health_servicer: health.aio.HealthServicer,
    explain_unknown: Callable[[str], str],
    max_message_bytes: int,
    credentials: Credentials,
    mutual_tls: bool = False,
) -> tuple[grpc.aio.Server, LateContracts]:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second kernel on a taken port must fail, not share it
        ]
    )
    for service in registry.served():
        handlers = {method.name: _handler(router, method, credentials, mutual_tls) for method in service.methods.values()}
        # as generated add_XServicer_to_server does: a generic handler, plus the registered fast path
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
        server.add_registered_method_handlers(service.full_name, handlers)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # type: ignore[no-untyped-call]  # untyped in its stubs
        _LiveReflection(registry, [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]),
        server,
    )
    late = LateContracts(registry, router, credentials, mutual_tls)
    server.add_generic_rpc_handlers((late, _UnknownMethodHandler(explain_unknown)))
    return server, late
