"""An ASGI app (the HTTP/JSON API, MCP over streamable HTTP, the A2A endpoint) served by uvicorn
inside the kernel's event loop, next to the gRPC server.

The socket is bound here, before uvicorn starts, so a taken port fails the plugin at once with
a clear message and port 0 gives a real port to report. Signals stay the kernel's: uvicorn's
own handlers would swallow the kernel's SIGTERM.

Every listener shares HostGuard (a caller without a credential is served only by a loopback name:
the guard against DNS rebinding and cross-site requests); JSON-RPC listeners use JsonBodies, and
every JSON body is parsed with `read_json` (a 400 with a sentence, never a traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import structlog

from ..call import PRINCIPAL_HEADER
from ..security.credentials import AuthError, Credentials, Identity
from ..security.exposure import Exposure
from ..security.remote import is_loopback_host

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

IDENTITY = "cortex.identity"  # where a bridge finds its caller's Identity in the ASGI scope

log = structlog.get_logger("cortex.asgi")


def split_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:8080" / "[::1]:8080" / "localhost:0" -> (host, port); ValueError naming the problem."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {listen!r} must be HOST:PORT, e.g. 127.0.0.1:50080")
    return host.strip("[]"), int(port)


def headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def identify_request(credentials: Credentials, scope: Scope, headers: dict[str, str] | None = None) -> Identity:
    """An HTTP request's identity, exactly as a gRPC call's: its bearer credential, else `local`
    from loopback; x-cortex-principal only from a credential that may act for others."""
    headers = headers_of(scope) if headers is None else headers
    host = (scope.get("client") or ("", 0))[0]
    return credentials.identify(headers.get("authorization", ""), is_loopback_host(host), "",
                                headers.get(PRINCIPAL_HEADER, ""))


def refusal_body(exc: AuthError) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
    """The HTTP answer to a refused credential: 401 (with WWW-Authenticate) or 403, JSON."""
    import json

    unauthenticated = exc.code.name == "UNAUTHENTICATED"
    body = json.dumps({"error": {"code": exc.code.name, "message": exc.message}}).encode()
    headers = [(b"content-type", b"application/json")]
    if unauthenticated:
        headers.append((b"www-authenticate", b'Bearer realm="cortex"'))
    return body, 401 if unauthenticated else 403 if exc.code.name == "PERMISSION_DENIED" else 400, headers


class Authenticate:
    """ASGI middleware for a bridge's listener (MCP over HTTP, A2A): identifies each request with
    the kernel's credentials and leaves the Identity in the scope, or refuses it."""

    def __init__(self, app: Any, credentials: Credentials):
        self.app, self.credentials = app, credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                scope[IDENTITY] = identify_request(self.credentials, scope)
            except AuthError as exc:
                log.info("http.refused", peer=(scope.get("client") or ("", 0))[0], reason=exc.message)
                body, status, headers = refusal_body(exc)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNSPECIFIED = ("0.0.0.0", "::")  # noqa: S104 - addresses to leave out, not to bind


def _name_of(host: str) -> str:
    """The name in a Host header: "evil.example:8080" -> "evil.example", "[::1]:80" -> "::1"."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostGuard:
    """ASGI middleware in front of every HTTP listener of the kernel (AsgiServer puts it there, so
    the HTTP/JSON API with the console, MCP over HTTP and A2A share it): the guard against DNS
    rebinding and cross-site requests.

    A caller without a credential is trusted as `local` because it is on loopback; but a web page
    whose name was rebound to 127.0.0.1 reaches the port from the owner's own browser, on loopback,
    and a page of any site can POST to it. Such a request still names the page's site: its Host
    (rebinding) or its Origin (any cross-site request; `null` from a sandboxed frame). So a request
    that would be `local` is served only when its Host names this machine (a loopback name or
    address, the listener's own host, `allowed_hosts`) and its Origin, if any, does too (`null`
    only for reads). A request with a credential is the credential's to judge, by any name; with
    `kernel.require_credentials` there is no `local` to abuse and nothing is refused here."""

    def __init__(self, app: Any, names: Iterable[str] = (), *, trust_loopback: bool = True, server: str = ""):
        self.app, self.server, self.trust_loopback = app, server, trust_loopback
        # an unspecified address (0.0.0.0, ::) is no name: a browser reaching it is on loopback
        self.names = {n.strip("[]").lower().rstrip(".") for n in names if n and n.strip("[]") not in UNSPECIFIED}

    def allowed(self, name: str) -> bool:
        name = name.strip("[]").lower().rstrip(".")
        return bool(name) and (is_loopback_host(name) or name in self.names)

    def foreign(self, scope: Scope, headers: dict[str, str]) -> str | None:
        """For a request that would be `local`: the Host or Origin naming another site, else None."""
        if not self.trust_loopback or headers.get("authorization"):
            return None
        if not is_loopback_host((scope.get("client") or ("", 0))[0]):
            return None  # not `local` whatever it names: the credentials refuse it
        host = headers.get("host", "")
        if not self.allowed(_name_of(host)):
            return f"Host {host!r}"
        origin = headers.get("origin")
        if origin is None:
            return None
        if origin == "null":  # a sandboxed frame, a file: page: any site's
            return None if scope.get("method", "GET") in SAFE_METHODS else "Origin 'null'"
        try:
            name = urlsplit(origin).hostname or ""
        except ValueError:
            name = ""
        return None if self.allowed(name) else f"Origin {origin!r}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            foreign = self.foreign(scope, headers_of(scope))
            if foreign is not None:
                message = (
                    f"{foreign} is not this machine: without a credential this listener answers only to a loopback "
                    "name such as localhost or 127.0.0.1 (a guard against DNS rebinding and cross-site requests); "
                    "open it by that name, or send an API key (Authorization: Bearer) to call it by another name"
                )
                log.info("http.foreign_name_refused", server=self.server, peer=(scope.get("client") or ("", 0))[0],
                         path=scope.get("path", ""), refused=foreign)
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
                    return
                body = json.dumps({"error": {"code": "PERMISSION_DENIED", "http_status": 403, "message": message}}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class BadJson(ValueError):
    """A request body the JSON parser refuses; its message says what to fix, in one sentence."""


MAX_DIGITS = 308  # an integer of more digits fits no protobuf field: not a float (nor any int, from 21)


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_DIGITS:  # checked before int(), whose time grows with the digits
        raise BadJson(f"the body's JSON has an integer of {len(digits.lstrip('-'))} digits, more than any field takes "
                      f"(at most {MAX_DIGITS}): send a number that fits the field")
    return int(digits)


def _constant(name: str) -> Any:
    raise BadJson(f"{name} is not JSON: send such a number as a string (\"{name.lstrip('-')}\") where a field takes one")


def read_json(raw: bytes) -> Any:
    """A request body as JSON, else BadJson saying why in a sentence a person can act on: bytes that
    are not UTF-8, NaN or Infinity (Python's parser takes them, JSON has none), an integer longer
    than any field takes (Python would spend time on it, refuse it past sys.get_int_max_str_digits,
    or fail to make it a float), nesting deeper than the parser goes, or no JSON at all."""
    try:
        return json.loads(raw, parse_constant=_constant, parse_int=_integer)
    except BadJson:
        raise
    except json.JSONDecodeError as exc:
        raise BadJson(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise BadJson(f"the body is not UTF-8 text (byte {exc.start} is {raw[exc.start:exc.start + 1]!r}): send JSON "
                      "encoded as UTF-8") from None
    except RecursionError:
        raise BadJson("the body's JSON nests arrays or objects too deep to parse: send flatter JSON") from None
    except ValueError as exc:  # any other refusal of Python's parser: still the body's fault
        raise BadJson(f"the body is not JSON this kernel takes: {str(exc)[:200]}") from None


class JsonBodies:
    """ASGI middleware for a JSON-RPC listener (MCP, A2A): a POST body that `read_json` refuses is
    answered here, 400 with a JSON-RPC parse error (-32700) and one log line, before the SDK behind
    it parses the body its own way (which may answer 500, or 200, and log a traceback); a body over
    `max_bytes` is 413. Other bodies reach the app as they came."""

    def __init__(self, app: ASGIApp, max_bytes: int = 8 << 20, server: str = ""):
        self.app, self.max_bytes, self.server = app, max_bytes, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(scope, send, 413, -32600, f"the request body is over {self.max_bytes} bytes")
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        if raw.strip():
            try:
                read_json(raw)
            except BadJson as exc:
                return await self._refuse(scope, send, 400, -32700, f"Parse error: {exc}")
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, status: int, code: int, message: str) -> None:
        log.info("http.bad_body", server=self.server, peer=(scope.get("client") or ("", 0))[0],
                 path=scope.get("path", ""), status=status, error=message)
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP
    # (accepted ones inherit it), and without it every small response waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror} (is another process using it?)") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class LazyApp:
    """An ASGI app built on its first request, not at start-up: the listener is bound and
    accepting from the start, while what the app imports (an SDK, a framework) waits for a caller
    that needs it. `build` returns the app. Lifespan events are answered here (the app is built
    later, so it must not need its own lifespan)."""

    def __init__(self, build: Any):
        self._build = build
        self._app: Any = None
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]  # lifespan.startup / lifespan.shutdown
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if self._app is None:
            async with self._lock:
                if self._app is None:
                    started = time.monotonic()
                    self._app = self._build()
                    log.info("http.app_built", seconds=round(time.monotonic() - started, 3))
        await self._app(scope, receive, send)


class AsgiServer:
    """`await start()`; or `await bind()` first when the app must know its own address (port 0),
    then `await serve(app)`."""

    def __init__(
        self, app: Any, listen: str, name: str, *, grace: float = 2.0, exposure: Exposure | None = None,
        credentials: Credentials | None = None, allowed_hosts: Iterable[str] = (),
    ):
        """`exposure`: the kernel's listener rule and TLS (context.exposure); TLS is served when
        the kernel has a certificate. `credentials` (context.credentials): every request is
        identified (Authenticate) before the app sees it. Every request passes the HostGuard first:
        without a credential, only by a loopback name, the listener's own host or `allowed_hosts`."""
        self.app, self.name, self.grace = app, name, grace
        self.exposure = exposure or Exposure()
        self.credentials = credentials
        self.allowed_hosts = tuple(allowed_hosts)
        self.exposure.check(listen, f"the {name} listener")
        self._host, self._requested_port = split_listen(listen)
        self._sock: socket.socket | None = None
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self.address = listen

    async def bind(self) -> str:
        self._sock = _bind(self._host, self._requested_port)
        port = self._sock.getsockname()[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.address = f"{host}:{port}"
        return self.address

    async def start(self) -> str:
        await self.bind()
        await self.serve()
        return self.address

    async def serve(self, app: Any = None) -> None:
        import uvicorn

        class _EmbeddedServer(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the kernel owns SIGINT/SIGTERM
                yield

        if self._sock is None:
            await self.bind()
        app = app or self.app
        if self.credentials is not None:
            app = Authenticate(app, self.credentials)
        app = HostGuard(app, (self._host, *self.allowed_hosts), server=self.name,
                        trust_loopback=not self.exposure.require_credentials
                        and not getattr(self.credentials, "require_credentials", False))
        tls: dict[str, Any] = self.exposure.uvicorn_settings()  # (uvicorn.Config keywords)
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="auto",
            # (uvicorn annotates int; it is a wait_for timeout there, where a float serves)
            timeout_graceful_shutdown=self.grace,  # type: ignore[arg-type]
            server_header=False, **tls,
        )
        self._server = _EmbeddedServer(config)
        sock = cast(socket.socket, self._sock)  # bound above
        self._task = asyncio.create_task(self._serve(sock), name=f"cortex-{self.name}-http")
        while not self._server.started:
            if self._task.done():
                error = self._task.exception() or RuntimeError("stopped during start-up")
                raise ValueError(f"{self.name} HTTP server failed to start: {error!r}")
            await asyncio.sleep(0.01)
        log.info("http.serving", server=self.name, address=self.address)

    async def _serve(self, sock: socket.socket) -> None:
        try:
            await self._server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits when the app's lifespan start-up fails
            raise RuntimeError(f"the app failed during start-up (exit {exc.code})") from None
        finally:
            sock.close()

    async def stop(self) -> None:
        if self._task is None:
            if self._sock is not None:
                self._sock.close()
            return
        if self._task.done():
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.grace + 3)
        except (TimeoutError, Exception) as exc:  # noqa: BLE001 - stopping anyway
            log.warning("http.stop_incomplete", server=self.name, error=repr(exc))
            self._task.cancel()
