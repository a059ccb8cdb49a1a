"""Faults against a real kernel in a subprocess: kill -9 under load, a hanging provider, a plugin
full of exceptions, garbage on the gRPC port. Each keeps well under a minute."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import grpc
import pytest

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from .conftest import cortex_env, make_dist, run_cli, write_config

ONLY_LOCAL = '["ollama", "openai"]'


def test_kill_9_under_load_then_restart_on_the_same_port(tmp_path, serve_process, unused_tcp_port):
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED=ONLY_LOCAL)
    listen = f"127.0.0.1:{unused_tcp_port}"
    kernel = serve_process("--listen", listen, env=env)
    channel = grpc.insecure_channel(listen)  # one client channel across the crash: it must reconnect
    stub = memories_pb2_grpc.MemoryServiceStub(channel)
    acked: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                acked.append(stub.Store(mem.StoreRequest(text=f"load {len(acked)} {os.urandom(4).hex()}"), timeout=5).id)
                stub.Search(mem.SearchRequest(query="load", top_k=3), timeout=5)
            except grpc.RpcError:
                time.sleep(0.05)

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    while len(acked) < 30:
        time.sleep(0.02)
    kernel.proc.send_signal(signal.SIGKILL)
    kernel.proc.wait(10)
    before = len(acked)
    restarted = serve_process("--listen", listen, env=env)
    deadline = time.monotonic() + 30
    while len(acked) < before + 10 and time.monotonic() < deadline:  # the same clients carry on
        time.sleep(0.05)
    stop.set()
    for w in workers:
        w.join(10)
    assert len(acked) >= before + 10
    for memory_id in acked:
        assert stub.Get(mem.GetRequest(id=memory_id), timeout=5).memory.id == memory_id
    restarted.stop()
    verdict = run_cli("proofs", "verify", "--all", env=env)
    assert verdict.returncode == 0 and verdict.stdout.startswith("OK:"), verdict.stdout
    channel.close()


HANGING = """
import asyncio
from cortex.kernel import hookimpl
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

class Hanging(echo_pb2_grpc.EchoServiceServicer):
    async def Echo(self, request, context):
        await asyncio.sleep(3600)
    async def EchoStream(self, request, context):
        await asyncio.sleep(3600)
        yield echo_pb2.EchoResponse()
    async def Now(self, request, context):
        await asyncio.sleep(3600)

@hookimpl
def cortex_register(registry):
    registry.add("cortex_echo.v1.EchoService", Hanging())
"""


def test_a_hanging_provider_times_out_its_circuit_opens_and_the_fallback_serves(tmp_path, serve_process, channel_to):
    site = make_dist(tmp_path / "site", "hanging", HANGING, "[cortex]\nhanging = hanging\n")
    config = write_config(tmp_path / "cortex.toml", """
        [routing."cortex_echo.v1.EchoService"]
        order = ["hanging", "echo"]
        [providers.hanging]
        timeout_seconds = 0.3
        [circuit]
        failure_threshold = 2
        reset_timeout_seconds = 60
        retries = 0
    """)
    env = cortex_env(tmp_path / "data", [site], CORTEX_CONFIG=str(config), CORTEX_PLUGINS__DISABLED=ONLY_LOCAL)
    kernel = serve_process(env=env)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target))
    routes = []
    for _ in range(4):
        reply, call = echo.Echo.with_call(echo_pb2.EchoRequest(message="hi"), timeout=5)
        assert reply.served_by == "echo"
        routes.append(dict(call.trailing_metadata())["x-cortex-route"])
    assert routes == ["hanging:UNAVAILABLE,echo:ok"] * 2 + ["hanging:skipped,echo:ok"] * 2
    contracts = kernel_pb2_grpc.KernelServiceStub(channel_to(kernel.target)).ListContracts(kernel_pb2.ListContractsRequest(), timeout=5)
    hanging = next(p for c in contracts.contracts for p in c.providers if p.name == "hanging")
    assert hanging.circuit == kernel_pb2.Provider.CIRCUIT_OPEN and "did not answer within 0.3s" in hanging.last_error


FLAKY = """
from cortex.kernel import hookimpl
from cortex_echo.v1 import echo_pb2_grpc

class Exploding(echo_pb2_grpc.EchoServiceServicer):
    async def Echo(self, request, context):
        raise RuntimeError("boom")
    async def EchoStream(self, request, context):
        raise RuntimeError("boom")
        yield
    async def Now(self, request, context):
        return {}

@hookimpl
def cortex_register(registry):
    registry.add("cortex_echo.v1.EchoService", Exploding())

@hookimpl
async def cortex_health():
    raise ValueError("health is broken too")

@hookimpl
def cortex_observe(call, outcome):
    raise KeyError("observers fail as well")
"""


def test_a_plugin_full_of_exceptions_does_not_stop_the_rest(tmp_path, serve_process, channel_to):
    site = make_dist(tmp_path / "site", "flaky", FLAKY, "[cortex]\nflaky = flaky\n")
    env = cortex_env(tmp_path / "data", [site], CORTEX_PLUGINS__DISABLED='["ollama", "openai", "echo"]')
    kernel = serve_process(env=env)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target))
    for method, request in ((echo.Echo, echo_pb2.EchoRequest()), (echo.Now, echo_pb2.NowRequest())):
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as err:
                method(request, timeout=5)
            assert err.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
    memories = memories_pb2_grpc.MemoryServiceStub(channel_to(kernel.target))
    assert memories.Store(mem.StoreRequest(text="still fine"), timeout=30).created
    checked = run_cli("health", "--json", "--target", kernel.target, env=env)
    assert checked.stdout, checked.stderr
    health = json.loads(checked.stdout)
    assert health["(overall)"] == "SERVING" and health["cortex.memories.v1.MemoryService"] == "SERVING"
    assert health["cortex_echo.v1.EchoService"] == "NOT_SERVING"


def send_garbage(host: str, port: int, payloads: list[bytes]) -> None:
    for payload in payloads:
        with socket.create_connection((host, port), timeout=5) as sock:
            try:
                sock.sendall(payload)
                sock.recv(1024)
            except OSError:
                pass


def test_garbage_on_the_grpc_port_does_not_crash_the_kernel(tmp_path, serve_process, channel_to):
    kernel = serve_process(env=cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED=ONLY_LOCAL))
    host, port = kernel.target.rsplit(":", 1)
    payloads = [
        os.urandom(4096),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512),  # a valid preface, then noise
        b"PRI * HTTP/2.0\r\n",  # cut short
        b"\x00" * 100_000,
    ]
    send_garbage(host, int(port), payloads)
    assert kernel.proc.poll() is None
    info = kernel_pb2_grpc.KernelServiceStub(channel_to(kernel.target)).GetInfo(kernel_pb2.GetInfoRequest(), timeout=5)
    assert info.listen == kernel.target


def test_garbage_on_the_http_ports_does_not_crash_the_kernel(tmp_path, serve_process, unused_tcp_port):
    http_port = unused_tcp_port
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED=ONLY_LOCAL,
                     CORTEX_PLUGINS__HTTP__LISTEN=f"127.0.0.1:{http_port}")
    kernel = serve_process(env=env)
    payloads = [
        os.urandom(4096),
        b"POST /v1/cortex.memories.v1.MemoryService/Store HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n{",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",  # an oversized request line
        b"POST /v1/x/y HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n",
        b"\x00" * 100_000,
    ]
    send_garbage("127.0.0.1", http_port, payloads)
    assert kernel.proc.poll() is None
    import httpx

    reply = httpx.post(f"http://127.0.0.1:{http_port}/v1/cortex.kernel.v1.KernelService/GetInfo", json={}, timeout=10)
    assert reply.status_code == 200 and reply.json()["listen"] == kernel.target


def test_doctor_reports_what_to_fix(tmp_path, serve_process):
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED=ONLY_LOCAL)
    with socket.socket() as taken:  # something else holds the HTTP API's port
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        held = f"127.0.0.1:{taken.getsockname()[1]}"
        cold = run_cli("doctor", "--json", env={**env, "CORTEX_LISTEN": "127.0.0.1:9", "CORTEX_PLUGINS__HTTP__LISTEN": held},
                       timeout=120)
    checks = {c["name"]: c for c in json.loads(cold.stdout)}
    assert checks["port (http)"]["state"] == "fail" and "[plugins.http] listen" in checks["port (http)"]["fix"]
    assert checks["config"]["state"] == "ok" and checks["data dir"]["state"] == "ok"
    assert checks["embedding model"]["state"] == "ok" and checks["plugin memories"]["state"] == "ok"
    assert checks["live health"]["state"] == "warning"
    key = tmp_path / "data" / "governance" / "signing_key.pem"
    kernel = serve_process(env=env)
    key.chmod(0o644)
    warm = run_cli("doctor", env={**env, "CORTEX_LISTEN": kernel.target}, timeout=120)
    assert warm.returncode == 1
    assert f"✗ signing key: {key} is mode 644" in warm.stdout and f"fix: chmod 600 {key}" in warm.stdout
    assert f"✓ port: a kernel is serving on {kernel.target}" in warm.stdout
    assert "✓ ModelService via mlx" in warm.stdout
