"""The HTTP/JSON API as a Starlette app: every contract method from the gateway, no per-method
code. POST /v1/<package.Service>/<Method> (JSON in, JSON out, or Server-Sent Events for
server-streaming methods), /openapi.json, /health, /ready and /metrics."""

from __future__ import annotations

import json
from typing import Any

import grpc
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from cortex.contracts.kernel.v1 import kernel_pb2
from cortex.kernel import LOCAL, AuthError, MethodInfo
from cortex.kernel.sdk import IDENTITY, BadJson, headers_of, identify_request, parse_json, read_json, rpc_status, to_json

from . import openapi
from .errors import HTTP_STATUS, error_body
from .guard import RateLimiter, retry_after
from .metrics import Metrics

OPEN_PATHS = {"/health", "/ready"}  # probes: no credential, no rate limit
API_PATHS = {*OPEN_PATHS, "/", "/openapi.json", "/metrics"}  # never a plugin page's, whatever prefix it claims
ROUTE_LABELS = {"call", "openapi.json", "health", "ready", "metrics", "page"}  # cortex_http_requests' route label

log = structlog.get_logger("cortex.http")


def _error(code: grpc.StatusCode, message: str, headers: dict[str, str] | None = None, status: int | None = None) -> JSONResponse:
    body = error_body(code, message)
    if status is not None:
        body["error"]["http_status"] = status
    return JSONResponse(body, status_code=status or HTTP_STATUS.get(code, 500), headers=headers)


def _too_large(limit: int) -> JSONResponse:
    return _error(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the request body is over {limit} bytes ([plugins.http] max_body_bytes)",
                  status=413)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def page_app(pages: dict[str, Any], path: str) -> tuple[str, Any] | None:
    """The plugin pages (`cortex_web_pages`) serving `path`: (prefix, ASGI app), or None."""
    for prefix, app in pages.items():
        if path == prefix or path.startswith(prefix + "/"):
            return prefix, app
    return None


class HttpApi:
    def __init__(self, gateway: Any, channel: Any, metrics: Metrics, credentials: Any, limiter: RateLimiter,
                 *, max_body_bytes: int, timeout: float, version: str, pages: Any = None):
        self.pages = pages or dict  # () -> {prefix: ASGI app}: the plugins' pages, asked per request
        self.gateway, self.channel, self.metrics = gateway, channel, metrics
        self.credentials, self.limiter = credentials, limiter
        self.max_body_bytes, self.timeout, self.version = max_body_bytes, timeout, version
        self._served: Any = None  # the kernel's list of served methods these were made from
        self._methods: dict[str, MethodInfo] = {}
        self._openapi: tuple[dict, dict] | None = None  # (the methods it describes, the document)

    @property
    def methods(self) -> dict[str, MethodInfo]:
        """The served methods now (plugins may be enabled and disabled while the kernel runs),
        rebuilt only when the kernel's list changes (it is the same object until then)."""
        served = self.channel.methods()
        if served is not self._served:
            self._served, self._methods = served, {f"{m.service}/{m.name}": m for m in self.gateway.methods()}
        return self._methods

    def app(self) -> Starlette:
        routes = [
            Route("/v1/{service}/{method}", self.call, methods=["POST"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/", self.root, methods=["GET"]),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(_Guard, api=self)
        return app

    # -- contract calls ---------------------------------------------------------------------------
    async def call(self, request: Request) -> Response:
        key = f"{request.path_params['service']}/{request.path_params['method']}"
        method = self.methods.get(key)
        if method is None:  # the kernel says why: a disabled or broken plugin, or a typo
            why = self.channel.explain(f"/{key}")
            return _error(grpc.StatusCode.NOT_FOUND, f"{why} (GET /openapi.json lists what is served)")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            # a web page can send a cross-origin "simple" POST (text/plain, form) without asking:
            # insisting on JSON makes browsers ask first (CORS preflight), which this API never grants
            return _error(grpc.StatusCode.INVALID_ARGUMENT, "send the request as Content-Type: application/json",
                          status=415)
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        principal = request.scope[IDENTITY]
        try:
            message = parse_json(method, body)
            if method.server_streaming:
                return await self._stream(method, message, principal)
            response = await self.gateway.unary(method, message, principal, timeout=self.timeout)
        except grpc.RpcError as exc:
            return _error(*rpc_status(exc))
        return JSONResponse(to_json(response))

    async def _body(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            return _too_large(self.max_body_bytes)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                return _too_large(self.max_body_bytes)
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw:
            return {}  # no body at all: the empty request, as the OpenAPI document says (body not required)
        try:
            return read_json(raw)
        except BadJson as exc:  # the client's error: one line in the log, no traceback
            log.info("http.bad_body", peer=(request.client or ("", 0))[0], path=request.url.path, error=str(exc))
            return _error(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _stream(self, method: MethodInfo, message: Any, principal: Any) -> Response:
        stream = aiter(self.gateway.stream(method, message, principal))
        try:  # the first message decides the HTTP status: an immediate failure is a JSON error
            first = await anext(stream)
        except StopAsyncIteration:
            first = None

        async def events():
            if first is not None:
                yield _sse("message", to_json(first))
                try:
                    async for item in stream:
                        yield _sse("message", to_json(item))
                except grpc.RpcError as exc:
                    yield _sse("error", error_body(*rpc_status(exc)))
                    return
            yield _sse("end", {})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # -- documents and probes -----------------------------------------------------------------
    async def openapi(self, request: Request) -> Response:
        methods = self.methods
        if self._openapi is None or self._openapi[0] is not methods:
            self._openapi = (methods, openapi.build(list(methods.values()), self.version))
        return JSONResponse(self._openapi[1])

    async def root(self, request: Request) -> Response:
        """A person who opens the API's address in a browser lands on the first plugin page (the
        console), else on the API's description."""
        pages = sorted(self.pages())
        return RedirectResponse(f"{pages[0]}/" if pages else "/openapi.json", status_code=307)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _contracts(self) -> kernel_pb2.ListContractsResponse:
        response, _ = await self.channel.call(
            "/cortex.kernel.v1.KernelService/ListContracts", kernel_pb2.ListContractsRequest(), timeout=5
        )
        return response

    async def ready(self, request: Request) -> Response:
        try:
            contracts = await self._contracts()
        except grpc.RpcError as exc:
            code, details = rpc_status(exc)
            return JSONResponse({"status": "not ready", "reason": f"{code.name}: {details}"}, status_code=503)
        down = [
            c.service for c in contracts.contracts
            if not any(p.health == kernel_pb2.Provider.HEALTH_SERVING and p.circuit != kernel_pb2.Provider.CIRCUIT_OPEN
                       for p in c.providers)
        ]
        if down:
            return JSONResponse({"status": "not ready", "not_serving": down}, status_code=503)
        return JSONResponse({"status": "ready", "contracts": len(contracts.contracts)})

    async def prometheus(self, request: Request) -> Response:
        try:
            self.metrics.update_providers(await self._contracts())
        except grpc.RpcError:
            pass  # call metrics are still worth serving
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


class _Guard:
    """ASGI middleware: who (the kernel's credentials), how often, from where; then the route.
    Counts every response."""

    def __init__(self, app: Any, api: HttpApi):
        self.app, self.api = app, api

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = "call" if path.startswith("/v1/") else path.strip("/") or "root"
        status_seen = {}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            await send(message)

        # the API's own paths never ask the plugins (the hook runs per request: plugins come and go)
        page = None if path.startswith("/v1/") or path in API_PATHS else page_app(self.api.pages(), path)
        if page is not None:  # a plugin's pages: public by the hook's rule, their data comes from /v1/ calls
            prefix, app = page
            route = "page"
            await app({**scope, "root_path": scope.get("root_path", "") + prefix}, receive, counting_send)
        elif (refusal := None if path in OPEN_PATHS or path == "/" else self._refusal(scope)) is not None:
            await refusal(scope, receive, counting_send)
        else:
            await self.app(scope, receive, counting_send)
        self.api.metrics.http_requests.labels(route if route in ROUTE_LABELS else "other", str(status_seen.get("status", 0))).inc()

    def _refusal(self, scope) -> Response | None:
        host = (scope.get("client") or ("", 0))[0]
        headers = headers_of(scope)
        try:
            identity = identify_request(self.api.credentials, scope, headers)
        except AuthError as exc:
            # a failed authentication is limited by the client's address: guessing keys costs
            # requests like anything else (rotating junk credentials does not escape it)
            return self._limited(f"address:{host}") or _error(
                exc.code, exc.message, {"WWW-Authenticate": 'Bearer realm="cortex"'}
                if exc.code == grpc.StatusCode.UNAUTHENTICATED else None,
            )
        # (a rebound name or a foreign origin never gets here: the kernel's HostGuard, in front of
        # every listener, refused it)
        limited = self._limited(f"address:{host}" if identity.principal == LOCAL else identity.principal)
        if limited is not None:
            return limited
        scope[IDENTITY] = identity
        return None

    def _limited(self, key: str) -> Response | None:
        wait = self.api.limiter.check(key)
        if not wait:
            return None
        return _error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"rate limit of {self.api.limiter.rate:g} requests/s exceeded; retry after {retry_after(wait)} s",
                      {"Retry-After": retry_after(wait)})
