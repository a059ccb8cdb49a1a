#!/usr/bin/env python3
"""The cost of redaction before a remote model call: `Redactor.redact` of a GenerateRequest holding
a realistic prompt (notes text with dates, versions, amounts, order numbers and a few emails and
phone numbers) plus `Redacted.restore` of an answer naming some of the placeholders, against a
plain `CopyFrom` copy of the same request, measured in the same run.

Needs: the base install only (no kernel, no model).
Small: `python scripts/bench_redaction.py --smoke` (2 KB prompts, 5 calls, 1 adversarial call each:
checks that it runs and prints its ratios, not figures to quote).

    python scripts/bench_redaction.py [--calls 300] [--sizes 2000,20000] [--json out.json]

Also measured: the same prompt with no personal data (redact returns None and copies nothing:
the common case), and redact+restore "warm": a chat resends its history every turn, and the phone
matcher's verdicts on runs it has seen are cached (the other figures clear that cache before each
call). Each figure is the p50 of `calls` timed calls after a warm-up; the ratio is redact+restore
(cold) / copy.

Then "adversarial": `Redactor.find` of texts built to be slow (one long run of digits and
separators, thousands of SSN-shaped values, dotted number pairs), cold, p50 of 5 calls, next to the
baseline of ordinary notes of the same size with nothing to find, with the ratio. Before the phone
finder cut runs into bounded windows and capped its work per text, `"1 " * 20000` alone took 9 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable

from cortex.contracts.models.v1 import models_pb2 as pb
from cortex.kernel.security.redaction import Redactor

# the sentences of a person's notes: numbers of every kind that must NOT be redacted ...
PLAIN = [
    "Met with the platform team on 2024-03-15 at 10:30 to go over the Q2 roadmap.",
    "Upgraded the cluster to v1.28.4 and the ingress controller to 4.10.1 without downtime.",
    "The invoice came to €1,234.56 (order 112-3456789-1234567), paid on 15.03.2024.",
    "Read chapter 7 of ISBN 978-3-16-148410-0; pages 120-145 cover the storage engine.",
    "In 2023 we served 1,500,000 requests a day with a p99 of 230 ms on 12 nodes.",
    "Remember: the backup window runs 02:00-04:00 UTC, retention 30 days, 3 copies.",
    "Ticket #48291 is blocked on the vendor; next review in week 14, room 3.12.",
    "The budget for 2025 is 85000 EUR, up 12% from last year's 75,892.",
    "Server 10.20.30.40 answers on port 8443; the health check takes 250 ms.",
    "Draft the retro notes, then move the sprint board to the new project space.",
]
# ... and the few that carry personal data
PERSONAL = [
    "Anna's new address is anna.de.vries@example.nl, her mobile 06 12345678.",
    "Call the landlord on +44 20 7946 0958 about the boiler before Friday.",
    "Bob (bob.smith@example.com) says the US office line is (212) 555-0123.",
]


def notes(size: int, personal: bool, rng: random.Random) -> str:
    """About `size` characters of notes; with `personal`, one sentence in ten carries personal data."""
    out: list[str] = []
    length = 0
    while length < size:
        pool = PERSONAL if personal and rng.random() < 0.1 else PLAIN
        sentence = rng.choice(pool)
        out.append(sentence)
        length += len(sentence) + 1
    return " ".join(out)[:size]


def request(text: str) -> pb.GenerateRequest:
    return pb.GenerateRequest(model="remote-model", messages=[
        pb.ChatMessage(role="system", content="Answer from the user's notes only; cite them."),
        pb.ChatMessage(role="user", content=f"My notes:\n{text}\n\nWho do I need to call this week, and how?"),
    ])


def p50_us(fn: Callable[[], object], calls: int) -> float:
    for _ in range(min(20, calls)):  # warm-up
        fn()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2] * 1e6


def measure(redactor: Redactor, size: int, calls: int, rng: random.Random) -> dict[str, float]:
    req = request(notes(size, True, rng))
    clean = request(notes(size, False, rng))
    redacted = redactor.redact(req)
    assert redacted is not None and redactor.redact(clean) is None
    answer = "Call <PHONE_1> (the landlord) and mail <EMAIL_1>; <EMAIL_2> has the office line."

    def copy() -> None:
        pb.GenerateRequest().CopyFrom(req)

    def redact_restore() -> None:
        done = redactor.redact(req)
        assert done is not None
        done.restore(pb.GenerateResponse(text=answer))

    def cold(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            redactor.clear_cache()  # the phone matcher's verdicts: a first sight of this text
            return fn()
        return run

    figures = {
        "copy_us": p50_us(copy, calls),
        "redact_restore_us": p50_us(cold(redact_restore), calls),
        "redact_restore_warm_us": p50_us(redact_restore, calls),
        "nothing_found_us": p50_us(cold(lambda: redactor.redact(clean)), calls),
    }
    figures["ratio"] = figures["redact_restore_us"] / figures["copy_us"]
    figures["spans"] = sum(redacted.counts.values())
    return figures


ADVERSARIAL = {
    '"1 " * 100000': "1 " * 100000,
    '"536-22-8726 " * 5000': "536-22-8726 " * 5000,
    '"1.2 " * 50000': "1.2 " * 50000,
}


def adversarial(redactor: Redactor, rng: random.Random, calls: int = 5) -> dict[str, dict[str, float]]:
    figures = {}
    for name, text in ADVERSARIAL.items():
        baseline = notes(len(text), False, rng)

        def cold(t: str) -> Callable[[], object]:
            def run() -> object:
                redactor.clear_cache()
                return redactor.find(t)
            return run

        figures[name] = {
            "chars": len(text),
            "find_ms": p50_us(cold(text), calls) / 1000,
            "baseline_ms": p50_us(cold(baseline), calls) / 1000,
        }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--sizes", default="2000,20000", help="prompt sizes in characters, comma-separated")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: that it runs (overrides the sizes)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.calls, opts.sizes = 5, "2000"
    rng = random.Random(7)
    redactor = Redactor()  # every kind, the default regions
    results: dict[object, object] = {}
    for size in (int(s) for s in opts.sizes.split(",")):
        f = results[size] = measure(redactor, size, opts.calls, rng)
        print(f"{size:>6} chars ({f['spans']:.0f} spans): copy p50 {f['copy_us']:6.1f} us   redact+restore p50 "
              f"{f['redact_restore_us']:8.1f} us (x{f['ratio']:.0f})   warm {f['redact_restore_warm_us']:8.1f} us   "
              f"nothing found p50 {f['nothing_found_us']:8.1f} us")
    results["adversarial"] = adv = adversarial(redactor, rng, 1 if opts.smoke else 5)
    for name, a in adv.items():
        print(f"adversarial {name:<24} {a['chars']:>7.0f} chars: find p50 {a['find_ms']:7.1f} ms   "
              f"baseline (notes, same size) {a['baseline_ms']:7.1f} ms (x{a['find_ms'] / a['baseline_ms']:.1f})")
    if opts.json:
        with open(opts.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
