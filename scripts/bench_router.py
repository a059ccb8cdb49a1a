#!/usr/bin/env python3
"""The router's overhead: a trivial contract through the kernel vs the same servicer on a bare
grpc.aio server, measured in the same run; the same kernel with governance (policies plus
an audit entry per call, batched under signed tree heads) switched on, as it is by default; and the cost of security: that
governed kernel called with an API key over TLS (required credentials) vs over plaintext loopback.

Needs: the example plugin cortex-echo pip-installed (`.venv/bin/pip install --no-deps
--no-build-isolation ./examples/cortex-echo`; the tests install it too); otherwise the base install.
Small: `python scripts/bench_router.py --smoke` (20 calls, 0.3 s of load at 4 in flight, 1 round:
checks that it runs and prints its ratios, not figures to quote).

    python scripts/bench_router.py [--seconds 4] [--concurrency 32] [--rounds 3] [--json out.json]

Each server runs in its own subprocess; the client is this process (on 2 cores the client takes
a good share of the CPU, so calls/s is a floor for what a server can do).
Two measurements per server, alternated over several rounds (noise hits both alike):
  latency:    one call at a time -> p50 / p99 of a single call
  throughput: `concurrency` calls in flight -> calls/s (and the p50 / p99 under that load)
The ratios are kernel / bare, governed / kernel (the cost of governance), and TLS+key / plaintext
(the cost of security). Targets (issue #14): the kernel within 20% of bare grpc.aio p50 at >= 0.85x
its calls/s; governance-on p50 within 10% of governance-off at >= 0.90x its calls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from cortex.kernel.security.credentials import KeyStore, read_admin_token
from cortex.kernel.security.dial import Dial
from cortex.kernel.security.tls import init_ca

BARE_SERVER = """
import asyncio, grpc, sys
from cortex_echo.plugin import EchoServicer
from cortex_echo.v1 import echo_pb2_grpc

async def main():
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoServicer("bare"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


def start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"serving on (\S+)", line)
        if match:
            return proc, match.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(target: str, dial: Dial, calls: int) -> list[float]:
    from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

    async with dial.aio_channel(target) as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        request = echo_pb2.EchoRequest(message="ping")
        metadata = dial.metadata()
        for _ in range(200):  # warm-up
            await stub.Echo(request, metadata=metadata)
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await stub.Echo(request, metadata=metadata)
            samples.append(time.perf_counter() - t0)
        return samples


async def throughput(target: str, dial: Dial, seconds: float, concurrency: int) -> tuple[float, list[float], int]:
    from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

    async with dial.aio_channel(target) as channel:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        request = echo_pb2.EchoRequest(message="ping")
        metadata = dial.metadata()
        samples: list[float] = []
        errors = 0
        stop_at = 0.0

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    await stub.Echo(request, metadata=metadata)
                except grpc.aio.AioRpcError:
                    errors += 1
                samples.append(time.perf_counter() - t0)

        stop_at = time.perf_counter() + 0.5  # warm-up
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        samples.clear()
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        return len(samples) / elapsed, samples, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="throughput window per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", dest="json_out", help="also write the figures to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: that it runs (overrides the sizes)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.seconds, opts.concurrency, opts.latency_calls, opts.rounds = 0.3, 4, 20, 1
    needs()
    data = tempfile.mkdtemp(prefix="cortex-bench-")
    procs: list[subprocess.Popen] = []  # the servers, stopped however the run ends
    try:
        return run(opts, data, procs)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)


def needs() -> None:
    """Exit 2 with one line saying how to get what this benchmark needs, when it is missing."""
    from importlib import metadata

    import needs as check

    try:
        metadata.version("cortex-echo")
    except metadata.PackageNotFoundError:
        check.missing(__file__, "needs the example plugin", ".venv/bin/pip install --no-deps --no-build-isolation ./examples/cortex-echo")


def run(opts: argparse.Namespace, data: str, procs: list[subprocess.Popen]) -> int:
    env = {**os.environ, "CORTEX_DATA_DIR": data, "CORTEX_LOG_LEVEL": "warning", "CORTEX_CONFIG": str(Path(data) / "none.toml")}
    Path(env["CORTEX_CONFIG"]).write_text("")
    serve = [sys.executable, "-m", "cortex.kernel", "serve", "--listen", "127.0.0.1:0"]

    def server(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
        proc, target = start(cmd, env)
        procs.append(proc)
        return proc, target

    _, bare_target = server([sys.executable, "-c", BARE_SERVER], env)
    ungoverned = {**env, "CORTEX_PLUGINS__DISABLED": '["governance"]', "CORTEX_KERNEL__REQUIRED_PLUGINS": "[]"}
    _, kernel_target = server([*serve, "--data-dir", f"{data}/k1"], ungoverned)
    _, governed_target = server([*serve, "--data-dir", f"{data}/k2"], env)
    # the governed kernel again, as it must run beyond loopback: TLS, credentials required, a key
    k3 = Path(data) / "k3"
    tls = init_ca(k3)
    key = KeyStore(k3).create("bench", [])
    secured = {**env, "CORTEX_KERNEL__TLS_CERT": str(tls["cert"]), "CORTEX_KERNEL__TLS_KEY": str(tls["key"]),
               "CORTEX_KERNEL__REQUIRE_CREDENTIALS": "true"}
    _, secure_target = server([*serve, "--data-dir", str(k3)], secured)
    servers = (
        ("bare", bare_target, Dial()),
        ("kernel", kernel_target, Dial()),
        ("governed", governed_target, Dial(token=read_admin_token(Path(data) / "k2"))),
        ("tls+key", secure_target, Dial(tls_ca=str(tls["ca"]), token=key)),
    )
    results: dict[str, dict[str, list[float]]] = {name: {"lat": [], "rps": [], "load": []} for name, _, _ in servers}
    errors = 0
    for round_no in range(1, opts.rounds + 1):
        for name, target, dial in servers:
            results[name]["lat"] += asyncio.run(latency(target, dial, opts.latency_calls))
            rps, samples, errs = asyncio.run(throughput(target, dial, opts.seconds, opts.concurrency))
            results[name]["rps"].append(rps)
            results[name]["load"] += samples
            errors += errs
            print(f"round {round_no}/{opts.rounds} {name:8s}: {rps:8.0f} calls/s", flush=True)

    def summary(name: str) -> dict[str, float]:
        r = results[name]
        return {
            "p50_ms": percentile(r["lat"], 0.50) * 1000,
            "p99_ms": percentile(r["lat"], 0.99) * 1000,
            "calls_per_s": statistics.median(r["rps"]),
            "loaded_p50_ms": percentile(r["load"], 0.50) * 1000,
            "loaded_p99_ms": percentile(r["load"], 0.99) * 1000,
        }

    bare_s, kernel_s, governed_s, secure_s = summary("bare"), summary("kernel"), summary("governed"), summary("tls+key")
    report = {
        "bare": bare_s,
        "kernel": kernel_s,
        "governed": governed_s,
        "tls_key": secure_s,
        "ratio": {k: kernel_s[k] / bare_s[k] for k in bare_s},
        "ratio_governed": {k: governed_s[k] / bare_s[k] for k in bare_s},
        "ratio_governance": {k: governed_s[k] / kernel_s[k] for k in bare_s},
        "ratio_tls_key": {k: secure_s[k] / governed_s[k] for k in bare_s},
        "errors": errors,
        "concurrency": opts.concurrency,
        "rounds": opts.rounds,
    }
    print()
    print(f"{'':24s}{'bare grpc.aio':>15s}{'kernel':>10s}{'ratio':>7s}{'+governance':>13s}{'ratio':>7s}")
    labels = {
        "p50_ms": "p50 latency (ms)",
        "p99_ms": "p99 latency (ms)",
        "calls_per_s": f"calls/s (c={opts.concurrency})",
        "loaded_p50_ms": "p50 under load (ms)",
        "loaded_p99_ms": "p99 under load (ms)",
    }
    for key, label in labels.items():
        print(
            f"{label:24s}{bare_s[key]:15.3f}{kernel_s[key]:10.3f}{report['ratio'][key]:7.2f}"
            f"{governed_s[key]:13.3f}{report['ratio_governed'][key]:7.2f}"
        )
    r, g = report["ratio"], report["ratio_governance"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print(f"\nkernel / bare:        p50 x{r['p50_ms']:.2f} (target <= 1.20: {verdict(r['p50_ms'] <= 1.2)}), "
          f"calls/s x{r['calls_per_s']:.2f} (target >= 0.85: {verdict(r['calls_per_s'] >= 0.85)})")
    print(f"governed / ungoverned: p50 x{g['p50_ms']:.2f} (target <= 1.10: {verdict(g['p50_ms'] <= 1.1)}), "
          f"calls/s x{g['calls_per_s']:.2f} (target >= 0.90: {verdict(g['calls_per_s'] >= 0.9)}); errors: {errors}")
    print(f"\n{'cost of security (governed)':28s}{'plaintext+admin':>16s}{'TLS+API key':>13s}{'ratio':>7s}")
    for key, label in labels.items():
        print(f"{label:28s}{governed_s[key]:16.3f}{secure_s[key]:13.3f}{report['ratio_tls_key'][key]:7.2f}")
    t = report["ratio_tls_key"]
    print(f"\nTLS+key / plaintext:  p50 x{t['p50_ms']:.2f}, calls/s x{t['calls_per_s']:.2f}")
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
