#!/usr/bin/env python3
"""Start-up and footprint: how long `cortex serve` (default plugins) takes from exec to SERVING on
gRPC health, and its RSS once idle, with an empty data dir and with a 100k-memory one; a bare
grpc.aio server with the health service (the floor for any Python gRPC server) measured in the
same run as the baseline.

Needs: the base install, on Linux (RSS is read from /proc); a temp folder, removed at the end.
Small: `python scripts/bench_startup.py --smoke` (1,000 memories, 1 run, 0.2 s idle: checks that it
runs and prints its ratios, not figures to quote).

    python scripts/bench_startup.py [--runs 3] [--memories 100000]

Target (issue #14): SERVING in under 1 s and under 100 MB RSS at idle.
"""

from __future__ import annotations

import argparse
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
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

BARE = """
import asyncio, grpc
from grpc_health.v1 import health, health_pb2_grpc

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_and_measure(cmd: list[str], env: dict[str, str], idle: float) -> tuple[float, float]:
    """(seconds from exec to SERVING on gRPC health, RSS in MB after `idle` seconds)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        target = None
        for line in proc.stdout:
            if match := re.search(r"serving on (\S+)", line):
                target = match.group(1)
                break
        if target is None:
            raise SystemExit(f"did not start: {' '.join(cmd)}")
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.005)
        serving = time.perf_counter() - started
        time.sleep(idle)
        return serving, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)


def fill_memories(data: Path, count: int) -> None:
    """A data dir whose store holds `count` embedded memories (random vectors: start-up does not read them)."""
    from cortex.plugins.memories.service import content_hash, new_id, now_ms
    from cortex.plugins.memories.store import COLUMNS, SqliteStore, vector_key

    store = SqliteStore(data / "memories" / "memories.db", "NORMAL")
    rng = np.random.default_rng(0)
    now = now_ms()
    for start in range(0, count, 20_000):
        vectors = rng.standard_normal((min(20_000, count - start), 384)).astype(np.float32)
        rows = []
        for i, v in enumerate(vectors, start=start):
            memory_id, text = new_id() + f"{i:07d}", f"memory {i} about the garden and the budget"
            rows.append((memory_id, "note", text, "[]", "{}", "bench", now, now, None, content_hash("note", text, []),
                         "all-MiniLM-L6-v2", (v / np.linalg.norm(v)).tobytes(), "default", vector_key(memory_id)))
        # as many placeholders as the store's columns (and vkey): the schema moves on, this follows it
        places = ", ".join("?" * (len(COLUMNS.split(",")) + 1))
        with store.db:
            store.db.execute("BEGIN")
            store.db.executemany(f"INSERT INTO memories ({COLUMNS}, vkey) VALUES ({places})", rows)  # noqa: S608 - columns and placeholders only
    store.meta("embedding_model", "all-MiniLM-L6-v2")
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=2.0, help="seconds idle before RSS is read")
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 run: that it runs (overrides the sizes)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.runs, opts.memories, opts.idle = 1, 1000, 0.2
    if not Path("/proc/self/status").exists():
        print(f"{Path(__file__).name} needs Linux: it reads RSS from /proc/PID/status", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="cortex-bench-start-"))
    try:
        return run(opts, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(opts: argparse.Namespace, root: Path) -> int:
    config = root / "none.toml"
    config.write_text("")
    env = {**os.environ, "CORTEX_CONFIG": str(config), "CORTEX_LOG_LEVEL": "warning"}
    full = root / "full"
    print(f"filling a data dir with {opts.memories:,} memories ...", flush=True)
    fill_memories(full, opts.memories)
    serve = [sys.executable, "-m", "cortex.kernel", "serve", "--listen", "127.0.0.1:0", "--data-dir"]
    cases = {"bare grpc.aio + health": [], "cortex serve, empty data dir": [], f"cortex serve, {opts.memories:,} memories": []}
    for run in range(opts.runs):
        cases["bare grpc.aio + health"].append(start_and_measure([sys.executable, "-c", BARE], env, opts.idle))
        cases["cortex serve, empty data dir"].append(start_and_measure([*serve, str(root / f"empty{run}")], env, opts.idle))
        cases[f"cortex serve, {opts.memories:,} memories"].append(start_and_measure([*serve, str(full)], env, opts.idle))
    print(f"\n{'':34s}{'SERVING after (s)':>20s}{'RSS idle (MB)':>16s}   runs")
    report = {}
    for name, samples in cases.items():
        seconds, rss = statistics.median(s for s, _ in samples), statistics.median(r for _, r in samples)
        report[name] = {"serving_s": seconds, "rss_mb": rss, "runs": samples}
        runs = ", ".join(f"{s:.2f}s/{r:.0f}MB" for s, r in samples)
        print(f"{name:34s}{seconds:20.2f}{rss:16.0f}   {runs}")
    bare = report["bare grpc.aio + health"]
    for name in list(cases)[1:]:
        r = report[name]
        print(f"{name}: x{r['serving_s'] / bare['serving_s']:.1f} the bare server's start, x{r['rss_mb'] / bare['rss_mb']:.1f} "
              f"its RSS; target < 1 s {'met' if r['serving_s'] < 1 else 'MISSED'}, < 100 MB {'met' if r['rss_mb'] < 100 else 'MISSED'}")
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
