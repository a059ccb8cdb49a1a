"""An ASGI app (the HTTP/JSON API, MCP over streamable HTTP, the A2A endpoint) served by uvicorn
inside the kernel's event loop, next to the gRPC server.

The socket is bound here, before uvicorn starts, so a taken port fails the plugin at once with
a clear message and port 0 gives a real port to report. Signals stay the kernel's: uvicorn's
own handlers would swallow the kernel's SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import structlog

from .call import PRINCIPAL_HEADER
from .credentials import AuthError, Credentials, Identity
from .exposure import Exposure
from .remote import is_loopback_host

IDENTITY = "cortex.identity"  # where a bridge finds its caller's Identity in the ASGI scope

log = structlog.get_logger("cortex.asgi")


def split_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:8080" / "[::1]:8080" / "localhost:0" -> (host, port); ValueError naming the problem."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {listen!r} must be HOST:PORT, e.g. 127.0.0.1:50080")
    return host.strip("[]"), int(port)


def headers_of(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def identify_request(credentials: Credentials, scope: dict, headers: dict[str, str] | None = None) -> Identity:
    """An HTTP request's identity, exactly as a gRPC call's: its bearer credential, else `local`
    from loopback; x-cortex-principal only from a credential that may act for others."""
    headers = headers_of(scope) if headers is None else headers
    host = (scope.get("client") or ("", 0))[0]
    identity = credentials.identify(headers.get("authorization", ""), is_loopback_host(host))
    return identity.acting_for(headers.get(PRINCIPAL_HEADER, ""))


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

    async def __call__(self, scope, receive, send) -> None:
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

    async def __call__(self, scope, receive, send) -> None:
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
        credentials: Credentials | None = None,
    ):
        """`exposure`: the kernel's listener rule and TLS (context.exposure); TLS is served when
        the kernel has a certificate. `credentials` (context.credentials): every request is
        identified (Authenticate) before the app sees it."""
        self.app, self.name, self.grace = app, name, grace
        self.exposure = exposure or Exposure()
        self.credentials = credentials
        self.exposure.check(listen, f"the {name} listener")
        self._host, self._requested_port = split_listen(listen)
        self._sock: socket.socket | None = None
        self._server: Any = None
        self._task: asyncio.Task | None = None
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
            def capture_signals(self):  # the kernel owns SIGINT/SIGTERM
                yield

        if self._sock is None:
            await self.bind()
        app = app or self.app
        if self.credentials is not None:
            app = Authenticate(app, self.credentials)
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="auto",
            timeout_graceful_shutdown=self.grace, server_header=False, **self.exposure.uvicorn_settings(),
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._serve(self._sock), name=f"cortex-{self.name}-http")
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
