"""The embedded HTTP server's socket and listen-address rules."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from cortex.kernel.sdk.asgi import AsgiServer, _bind, split_listen
from cortex.kernel.security.exposure import Exposure


def test_listening_socket_is_tcp_so_asyncio_sets_nodelay():
    """asyncio sets TCP_NODELAY only on sockets created as IPPROTO_TCP; without it each small
    HTTP response waited ~40 ms for a delayed ACK (measured by scripts/bench_bridges.py)."""
    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_listen_addresses():
    assert split_listen("127.0.0.1:50080") == ("127.0.0.1", 50080)
    assert split_listen("[::1]:0") == ("::1", 0)
    for bad in ("50080", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ValueError, match="must be HOST:PORT"):
            split_listen(bad)
    Exposure().check("localhost:1", "[plugins.x] listen")
    with pytest.raises(ValueError, match=r"\[plugins.x\] listen = '0.0.0.0:1' is not loopback, so it needs TLS and credentials"):
        Exposure().check("0.0.0.0:1", "[plugins.x] listen")
    with pytest.raises(ValueError, match=r"kernel.require_credentials = true") as refused:
        Exposure(tls_cert="c.pem", tls_key="k.pem").check("10.1.2.3:1", "[plugins.x] listen")
    assert "tls_cert" not in str(refused.value)
    Exposure(tls_cert="c.pem", tls_key="k.pem", require_credentials=True).check("0.0.0.0:1", "[plugins.x] listen")


def test_a_taken_port_is_a_clear_error_and_the_server_stops_cleanly():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})

    async def scenario():
        server = AsgiServer(app, "127.0.0.1:0", "test")
        address = await server.start()
        with pytest.raises(ValueError, match=r"cannot listen on 127\.0\.0\.1"):
            await AsgiServer(app, address, "second").start()
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://{address}/")).text == "hello"
        await server.stop()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as client:
                await client.get(f"http://{address}/")

    asyncio.run(scenario())
