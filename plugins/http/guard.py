"""How often a client may call the HTTP API (a token bucket per principal, or per address before
it has one: 429 with Retry-After). Who a client is, is the kernel's to say (`context.credentials`),
and so is the guard against DNS rebinding (`cortex.kernel.HostGuard`, in front of every listener)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """`rate` requests per second per client, bursts up to `burst`; rate 0 turns it off."""

    rate: float
    burst: float
    max_clients: int = 10_000
    clock: Callable[[], float] = time.monotonic  # tests hand in a fake one
    _buckets: dict[str, Bucket] = field(default_factory=dict)

    def check(self, client: str, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = self.clock() if now is None else now
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:  # bounded memory under many clients
                self._evict(now)
            bucket = self._buckets[client] = Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def _evict(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
