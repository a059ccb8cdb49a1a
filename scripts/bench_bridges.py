#!/usr/bin/env python3
"""What a bridge costs: the same contract calls over gRPC (the baseline), the HTTP/JSON API and
MCP over streamable HTTP, against one kernel, in one run, with the ratios to gRPC.

Needs: the base install and the default embedding model (`scripts/setup.sh`, or
`.venv/bin/cortex models install`); nothing more (a temp data dir, loopback ports).
Small: `python scripts/bench_bridges.py --smoke` (20 memories, 5 calls each, 1 round: checks that
it runs and prints its ratios, not figures to quote).

    python scripts/bench_bridges.py [--calls 400] [--rounds 3] [--memories 200] [--json out.json]

The kernel runs in a subprocess (temp data dir, governance on as by default; MLX embeddings for
Search). Calls are sequential, one at a time, so the figures are per-call latency; the three
transports are alternated over rounds so that noise on this shared machine hits all alike.
Two calls: KernelService.GetInfo (tiny: the bridge's own cost dominates) and
MemoryService.Search (a real call: embedding + search over 200 memories).

The HTTP clients set TCP_NODELAY, as curl and browsers do: without it a client that writes the
headers and the body separately waits for the server's delayed ACK (~40 ms per call on Linux),
which measures the client, not the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
import httpx
import httpx2

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
CALLS = {
    "GetInfo": ("cortex.kernel.v1.KernelService/GetInfo", "kernel_get_info", {}),
    "Search": ("cortex.memories.v1.MemoryService/Search", "memory_search", {"query": "garden budget", "top_k": 5}),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_kernel(data_dir: str) -> tuple[subprocess.Popen, str, str, str]:
    http, mcp = free_port(), free_port()
    env = {**os.environ, "CORTEX_DATA_DIR": data_dir, "CORTEX_LOG_LEVEL": "warning",
           "CORTEX_PLUGINS__DISABLED": '["ollama", "openai", "echo"]',
           "CORTEX_PLUGINS__HTTP__LISTEN": f"127.0.0.1:{http}", "CORTEX_PLUGINS__HTTP__RATE_LIMIT": "0",
           "CORTEX_PLUGINS__MCP__HTTP_LISTEN": f"127.0.0.1:{mcp}", "CORTEX_PLUGINS__A2A__LISTEN": ""}
    proc = subprocess.Popen([sys.executable, "-m", "cortex.kernel", "serve", "--listen", "127.0.0.1:0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"serving on (\S+)", line)
        if match:
            return proc, match.group(1), f"http://127.0.0.1:{http}", f"http://127.0.0.1:{mcp}/mcp"
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("the kernel did not start")


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50_ms": statistics.median(ms), "p99_ms": ms[int(len(ms) * 0.99) - 1], "calls_per_s": len(ms) / (sum(ms) / 1000)}


def time_calls(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


async def time_mcp(url: str, tool: str, args: dict, n: int) -> list[float]:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    out = []
    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(socket_options=NODELAY), timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        await client.call_tool(tool, args)  # warm the session
        for _ in range(n):
            t0 = time.perf_counter()
            result = await client.call_tool(tool, args)
            out.append(time.perf_counter() - t0)
            assert not result.is_error, result.content
    return out


def needs() -> None:
    """Exit 2 with one line saying how to get what this benchmark needs, when it is missing."""
    import needs as check

    check.embedding_model(__file__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memories", type=int, default=200, help="memories stored before Search is timed")
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: that it runs (overrides the sizes)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.calls, opts.rounds, opts.memories = 5, 1, 20
    needs()
    with tempfile.TemporaryDirectory() as data:
        proc, target, http_url, mcp_url = start_kernel(data)
        try:
            channel = grpc.insecure_channel(target)
            kernel = kernel_pb2_grpc.KernelServiceStub(channel)
            memories = memories_pb2_grpc.MemoryServiceStub(channel)
            print(f"seeding {opts.memories} memories ...", flush=True)
            for i in range(opts.memories):
                memories.Store(memories_pb2.StoreRequest(text=f"note {i}: the garden budget line {i % 17} is {i * 3} euros"), timeout=60)
            grpc_calls = {
                "GetInfo": lambda: kernel.GetInfo(kernel_pb2.GetInfoRequest(), timeout=10),
                "Search": lambda: memories.Search(memories_pb2.SearchRequest(query="garden budget", top_k=5), timeout=30),
            }
            http = httpx.Client(base_url=http_url, timeout=30, transport=httpx.HTTPTransport(socket_options=NODELAY))
            samples: dict[str, dict[str, list[float]]] = {c: {"grpc": [], "http": [], "mcp": []} for c in CALLS}
            for fn in grpc_calls.values():
                fn()  # warm up (model load, index)
            for round_ in range(opts.rounds):
                for call, (path, tool, body) in CALLS.items():
                    samples[call]["grpc"] += time_calls(grpc_calls[call], opts.calls)

                    def post(path=path, body=body):
                        reply = http.post(f"/v1/{path}", json=body)
                        reply.raise_for_status()

                    samples[call]["http"] += time_calls(post, opts.calls)
                    samples[call]["mcp"] += asyncio.run(time_mcp(mcp_url, tool, body, opts.calls))
                print(f"round {round_ + 1}/{opts.rounds} done", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    results = {}
    for call, by_transport in samples.items():
        base = summary(by_transport["grpc"])
        results[call] = {}
        for transport, values in by_transport.items():
            s = summary(values)
            s["p50_ratio_to_grpc"] = s["p50_ms"] / base["p50_ms"]
            results[call][transport] = s
            print(f"{call:8} {transport:5} p50 {s['p50_ms']:7.2f} ms  p99 {s['p99_ms']:7.2f} ms  "
                  f"{s['calls_per_s']:7.0f} calls/s  p50 x{s['p50_ratio_to_grpc']:.2f} of gRPC")
    if opts.json_out:
        with open(opts.json_out, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
