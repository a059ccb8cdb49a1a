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
from typing import Any

import structlog

from .remote import is_loopback_host

log = structlog.get_logger("cortex.asgi")


def split_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:8080" / "[::1]:8080" / "localhost:0" -> (host, port); ValueError naming the problem."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {listen!r} must be HOST:PORT, e.g. 127.0.0.1:50080")
    return host.strip("[]"), int(port)


def require_loopback(listen: str, setting: str, what: str) -> None:
    """Refuse a non-loopback listener for an endpoint that has no authentication of its own."""
    host, _ = split_listen(listen)
    if not is_loopback_host(host):
        raise ValueError(
            f"{setting} = {listen!r}: {what} has no authentication here; listen on loopback (127.0.0.1) "
            "and put an authenticating proxy in front for remote clients"
        )


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


class AsgiServer:
    """`await start()`; or `await bind()` first when the app must know its own address (port 0),
    then `await serve(app)`."""

    def __init__(self, app: Any, listen: str, name: str, *, grace: float = 2.0):
        self.app, self.name, self.grace = app, name, grace
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
        config = uvicorn.Config(
            app or self.app, log_config=None, access_log=False, lifespan="auto",
            timeout_graceful_shutdown=self.grace, server_header=False,
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
