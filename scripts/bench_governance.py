#!/usr/bin/env python3
"""Governance costs: the authorize hook per call with 10 and 1,000 rules, the observe hook
(the call's proof, with its decision, queued, then appended with a signed tree head), Ed25519 sign/verify rates,
proofs in a large log, and the time to verify a large log (one entry per call).

Needs: the base install only (no kernel, no model; a temp folder, removed at the end).
Small: `python scripts/bench_governance.py --smoke` (500 calls, a 2,000-entry log: checks that it
runs and prints its ratios, not figures to quote).

    python scripts/bench_governance.py [--chain 1000000] [--calls 20000]

Baselines in the same run: the authorize hook with the built-in rules only; for verification,
a bare loop that only parses every stored entry and hashes its body (the least any verifier
does). Targets: < 100 us p99 per decision with 1,000 rules (issue #5); a 1M-entry log verified
in < 10 s (issue #14).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
import typing
from pathlib import Path

import grpc

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.kernel.call import ALLOW_BY_DEFAULT, Attempt, Call, Outcome, ProviderInfo, new_call_id
from cortex.kernel.method import MethodInfo
from cortex.plugins.governance.chain import AuditChain, load_or_create_key, verify_chain, verify_entry
from cortex.plugins.governance.plugin import Governance

SERVICES = [f"acme.area{i}.v1.Service{i}" for i in range(100)]
METHODS = ["Get", "List", "Create", "Update", "Delete", "Search"]
PRINCIPALS = ["cli:me", "mcp:editor", "grpc:ipv4:127.0.0.1:5000", "plugin:cerebrum", "a2a:agent-7"]


def rules_toml(count: int, rng: random.Random) -> str:
    blocks = []
    for i in range(count):
        effect = "deny" if i % 3 == 0 else "allow"
        service = rng.choice(SERVICES)
        blocks.append(
            f'[[rule]]\nid = "r{i}"\neffect = "{effect}"\nservices = ["{service.rsplit(".", 1)[0]}.*"]\n'
            f'methods = ["{rng.choice(METHODS)}*"]\nprincipals = ["{rng.choice(PRINCIPALS).split(":")[0]}:*"]\n'
            + (f'provider = "{rng.choice(["local", "remote"])}"\n' if i % 2 else "")
            + (f'labels = ["{rng.choice(["private", "work", "health"])}"]\n' if i % 5 == 0 else "")
        )
    return "\n".join(blocks)


class _Method:
    """Enough of MethodInfo for authorize/observe."""

    def __init__(self, service: str, name: str):
        self.service, self.name, self.path = service, name, f"/{service}/{name}"


def make_governance(folder: Path, rules: int, rng: random.Random) -> Governance:
    (folder / "policies").mkdir(parents=True, exist_ok=True)
    if rules:
        (folder / "policies" / "bench.toml").write_text(rules_toml(rules, rng))

    class Ctx:
        name = "governance"
        privacy_mode = False
        plugins: typing.ClassVar[dict] = {}
        data_dir = folder
        channel = None

    gov = Governance()
    gov.cortex_configure({}, Ctx())
    return gov


def calls(count: int, rng: random.Random) -> list[Call]:
    request = pb.EvaluateRequest(call=pb.CallDescription(service="x", method="y"))
    out = []
    for _ in range(count):
        call = Call(
            id=new_call_id(),
            method=_Method(rng.choice(SERVICES), rng.choice(METHODS)),  # type: ignore[arg-type]
            request=request,
            principal=rng.choice(PRINCIPALS),
            metadata=(("x-cortex-labels", "private"),) if rng.random() < 0.1 else (),
        )
        call.provider = ProviderInfo("p", "p", "", rng.random() < 0.7)
        out.append(call)
    return out


def time_authorize(gov: Governance, batch: list[Call]) -> list[float]:
    for call in batch[:500]:  # warm the static-match cache a little
        gov.cortex_authorize(call)
    gov._pending.clear()
    samples = []
    for call in batch:
        t0 = time.perf_counter()
        gov.cortex_authorize(call)
        samples.append(time.perf_counter() - t0)
    gov._pending.clear()
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--chain", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: that it runs (overrides the sizes)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.calls, opts.chain = 500, 2000
    tmp = Path(tempfile.mkdtemp(prefix="cortex-bench-gov-"))
    try:
        return run(opts, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(opts: argparse.Namespace, tmp: Path) -> int:
    rng = random.Random(7)
    batch = calls(opts.calls, rng)

    print(f"authorize hook, {opts.calls} calls over {len(SERVICES)} services x {len(METHODS)} methods x {len(PRINCIPALS)} principals")
    results = {}
    for rules in (0, 10, 1000):
        gov = make_governance(tmp / f"rules{rules}", rules, rng)
        samples = time_authorize(gov, batch)
        results[rules] = (pct(samples, 0.5) * 1e6, pct(samples, 0.99) * 1e6)
        label = "built-in rules only" if rules == 0 else f"{rules} rules + built-in"
        print(f"  {label:24s} p50 {results[rules][0]:7.1f} us   p99 {results[rules][1]:7.1f} us")
    print(f"  1000 rules vs built-in only: p50 x{results[1000][0] / results[0][0]:.2f}, p99 x{results[1000][1] / results[0][1]:.2f}")

    gov = make_governance(tmp / "observe", 10, rng)
    method = MethodInfo("acme.area1.v1.Service1", "Get", "/acme.area1.v1.Service1/Get", pb.EvaluateRequest,
                        pb.EvaluateResponse, False, False, True)
    observe = []
    for call in batch[:5000]:
        call.method = method
        gov.cortex_authorize(call)
        outcome = Outcome(grpc.StatusCode.OK, "", "p", [Attempt("p", "ok")], ALLOW_BY_DEFAULT, 0.001, pb.EvaluateResponse())
        t0 = time.perf_counter()
        gov.cortex_observe(call, outcome)
        observe.append(time.perf_counter() - t0)
    gov.flush()
    print(f"observe hook (no event loop: each call its own batch, appended, head signed, committed): p50 {pct(observe, .5) * 1e6:.0f} us, "
          f"p99 {pct(observe, .99) * 1e6:.0f} us -> {1 / statistics.mean(observe):.0f} calls/s on one core")

    key = load_or_create_key(tmp / "keys")
    sample = gov.chain.get(1)  # the genesis entry: signed itself
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        key.sign(sample.hash)
    sign_rate = n / (time.perf_counter() - t0)
    public = gov.chain.public_key()
    t0 = time.perf_counter()
    for _ in range(n):
        verify_entry(sample, public)
    verify_rate = n / (time.perf_counter() - t0)
    print(f"proofs: sign {sign_rate:,.0f}/s, verify (hash + signature) {verify_rate:,.0f}/s")

    print(f"building a {opts.chain:,}-entry log (a call's proof per entry, 1,000 entries a batch) ...", flush=True)
    chain = AuditChain(tmp / "big" / "audit.db", load_or_create_key(tmp / "big"))
    t0 = time.perf_counter()
    block = []
    decision = pb.Decision(effect=pb.EFFECT_ALLOW, reasons=["allowed by rule r1"], rule_ids=["r1"])
    for i in range(opts.chain - 1):
        call_id = f"0f3a9c1e-{i:08x}"
        block.append(pb.AuditEntry(call_id=call_id, call=pb.CallDescription(
            service="cortex.memories.v1.MemoryService", method="Search", principal="key:notes-app", provider="memories",
            provider_local=True), proof=pb.Proof(
            call_id=call_id, service="cortex.memories.v1.MemoryService", method="Search", principal="key:notes-app",
            provider="memories", status="OK", request_sha256=bytes(32), response_sha256=bytes(32), decision=decision,
            latency_ms=1.5)))
        if len(block) == 1000:
            chain.append(block)
            block = []
            if chain.head_seq % 100_000 < 1000:
                print(f"  {chain.head_seq:,} entries", flush=True)
    if block:
        chain.append(block)
    built = time.perf_counter() - t0
    print(f"  built in {built:.1f}s ({opts.chain / built:,.0f} entries/s appended)")
    rng_entries = [chain.get(rng.randint(1, chain.head_seq)) for _ in range(200)]
    t0 = time.perf_counter()
    for entry in rng_entries:
        chain.inclusion(entry, chain.head)
    proof_ms = (time.perf_counter() - t0) / len(rng_entries) * 1000
    t0 = time.perf_counter()
    for _ in range(50):
        chain.consistency(rng.randint(1, chain.head_seq), chain.head_seq)
    consistency_ms = (time.perf_counter() - t0) / 50 * 1000
    chain.close()
    print(f"  inclusion proof in a {opts.chain:,}-entry log: {proof_ms:.2f} ms; consistency proof: {consistency_ms:.2f} ms")

    import hashlib
    import sqlite3

    db = sqlite3.connect(tmp / "big" / "audit.db")
    t0 = time.perf_counter()
    for (body,) in db.execute("SELECT body FROM entries ORDER BY seq"):
        pb.AuditEntry.FromString(body)
        hashlib.sha256(body).digest()
    baseline = time.perf_counter() - t0
    db.close()
    t0 = time.perf_counter()
    verdict = verify_chain(tmp / "big" / "audit.db")
    full = time.perf_counter() - t0
    assert verdict.ok, verdict
    print(f"  verify_chain: {full:.2f}s for {verdict.checked:,} entries (target < 10 s); "
          f"bare parse-and-hash loop: {baseline:.2f}s; x{full / baseline:.2f} the bare loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
