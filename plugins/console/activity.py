"""The kernel's activity over the last hour, for the console's charts: every routed call lands in
the sample of the interval it finished in (count, latency percentiles, allow/deny, errors, by
method and provider), and a sampler adds what only polling tells (circuits that opened, the
memory count). Kept in memory: a fixed ring of samples, each with bounded latency reservoir, so
the cost stays flat however busy the kernel is."""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field

import grpc

RESERVOIR = 2048  # latencies kept per sample for its percentiles (reservoir sampling beyond that)


@dataclass
class MethodCounts:
    calls: int = 0
    denied: int = 0
    errors: int = 0


@dataclass
class Sample:
    start: float
    calls: int = 0
    allowed: int = 0
    denied: int = 0
    errors: int = 0
    circuit_openings: int = 0
    shed: int = 0  # calls refused at capacity (never routed: not among `calls`)
    memories: int = -1
    latencies_ms: list[float] = field(default_factory=list)
    by_method: dict[tuple[str, str], MethodCounts] = field(default_factory=dict)
    _sorted: tuple[int, list[float]] = (-1, [])  # (calls when sorted, the latencies in order)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        if self._sorted[0] != self.calls:  # sorted once per change, not once per percentile and reader
            self._sorted = (self.calls, sorted(self.latencies_ms))
        ordered = self._sorted[1]
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Activity:
    """Samples of `interval` seconds, the newest `keep` of them (an hour by default)."""

    def __init__(self, interval: float = 10.0, keep_seconds: float = 3600.0, clock=time.time, rng=None):
        if interval <= 0 or keep_seconds < interval:
            raise ValueError("the activity interval must be > 0 and at most what is kept")
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=int(keep_seconds // interval) + 1)
        self.clock = clock
        self.rng = rng or random.Random(0)  # noqa: S311 - sampling latencies, not secrets
        self._circuits: dict[tuple[str, str], bool] = {}  # (service, provider) -> open at the last poll
        self._shed: int | None = None  # the kernel's count of shed calls at the last poll

    def current(self) -> Sample:
        now = self.clock()
        start = now - now % self.interval
        if not self.samples or self.samples[-1].start < start:
            memories = self.samples[-1].memories if self.samples else -1
            self.samples.append(Sample(start, memories=memories))
        return self.samples[-1]

    def observe(self, method: str, provider: str, code: grpc.StatusCode, allowed: bool, latency_s: float) -> None:
        """One finished call; `method` as the router names it ("/package.Service/Method")."""
        sample = self.current()
        sample.calls += 1
        counts = sample.by_method.setdefault((method, provider), MethodCounts())
        counts.calls += 1
        if allowed:
            sample.allowed += 1
        else:
            sample.denied += 1
            counts.denied += 1
        if allowed and code != grpc.StatusCode.OK:
            sample.errors += 1
            counts.errors += 1
        ms = latency_s * 1000
        if len(sample.latencies_ms) < RESERVOIR:
            sample.latencies_ms.append(ms)
        else:  # Vitter's algorithm R: every call equally likely to be kept
            slot = self.rng.randrange(sample.calls)
            if slot < RESERVOIR:
                sample.latencies_ms[slot] = ms

    def circuits(self, states: dict[tuple[str, str], bool]) -> None:
        """The providers' circuits now ((service, provider) -> open): count those newly open."""
        opened = sum(1 for key, is_open in states.items() if is_open and not self._circuits.get(key, False))
        self._circuits = dict(states)
        if opened:
            self.current().circuit_openings += opened

    def shed_total(self, total: int) -> None:
        """The kernel's count of calls shed since it started: those since the last poll land in
        this sample (the first poll only sets the mark; a smaller count: the kernel restarted)."""
        if self._shed is not None:
            self.current().shed += total - self._shed if total >= self._shed else total
        self._shed = total

    def memory_count(self, count: int) -> None:
        self.current().memories = count

    def since(self, minutes: int) -> list[Sample]:
        self.current()  # an idle minute is a sample of zeros, not a gap
        if not minutes:
            return list(self.samples)
        cutoff = self.clock() - minutes * 60
        return [s for s in self.samples if s.start + self.interval > cutoff]
