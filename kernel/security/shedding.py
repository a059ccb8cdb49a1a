"""Load shedding: past what the kernel can serve, a call is refused at once, not queued.

A kernel driven past its capacity by an open-loop load (clients that send at their own rate)
queued every call: the event loop, the readers and the model all ran behind, and every client's
call waited into its 10 s deadline (loadtest.py at 150 RPS: p50 5 s, 1 in 15 calls
DEADLINE_EXCEEDED). Here a call from outside is admitted only while fewer than
`kernel.max_in_flight` calls from outside are being served; the rest get RESOURCE_EXHAUSTED at
once, before the kernel spends anything on them, with a retry hint in the trailer gRPC defines for
it (`grpc-retry-pushback-ms`, which gRPC's retry policy honours) and in the message. By Little's
law the limit bounds the time an admitted call waits: limit / throughput (64 at 100 calls/s:
0.64 s).

One caller must not take every slot from the rest: at the limit, a caller holding less than its
share (the limit shared among the callers holding slots) is still admitted, into SPARE more
slots kept for them, while a caller holding its share or more is shed. So a client that floods
the kernel cannot lock the others out, and a lone client still has the whole limit (keeping a
quarter of the limit apart instead shed loadtest.py's single client from 48 of 64 slots, and
its knee fell from 100 to 80 RPS).

The admin's calls (and calls the admin makes for someone) are never shed: the operator must be
able to see and mend an overloaded kernel; nor are the calls plugins make while serving (they
belong to a call already admitted). A stream holds its slot until its first message, at most
STREAM_HOLD_S: a subscription may wait hours for its first event, and 64 of them holding their
slots would refuse every other call.
`shed` counts the refusals (GetInfo's calls_shed; the console's activity page charts them).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from ..call import CALL_ID_HEADER, Call
from .credentials import ADMIN

PUSHBACK_HEADER = "grpc-retry-pushback-ms"  # gRPC's retry throttling trailer (gRFC A6)
STREAM_HOLD_S = 1.0
SPARE = 0.125  # past the limit, this share of it more is kept for callers holding less than their share


class Shedder:
    def __init__(self, limit: int):
        self.limit = limit  # 0: no limit
        self.in_flight = 0
        self.shed = 0  # calls refused since the kernel started
        self.held: Counter[str] = Counter()  # slots each caller holds (the admin's are not counted)
        self.spare = max(1, int(limit * SPARE)) if limit else 0
        self._latency_s = 0.05  # a moving average of admitted calls' time in the kernel

    def refusal(self, principal: str, actor: str = "") -> str:
        """'' when a call from `principal` may take a slot now, else why not (the call is counted shed)."""
        why = ""
        if self.limit and ADMIN not in (principal, actor):
            mine = self.held[principal]
            if self.in_flight >= self.limit + self.spare:
                why = (f"it is serving its limit of {self.limit} calls at once (kernel.max_in_flight), and the "
                       f"{self.spare} more it keeps for callers holding less than their share")
            elif self.in_flight >= self.limit and mine >= self.limit / (len(self.held) + (mine == 0)):
                why = (f"it is serving its limit of {self.limit} calls at once (kernel.max_in_flight), "
                       f"{mine} of them {principal!r}'s: its share or more")
        if why:
            self.shed += 1
            return why
        self.in_flight += 1
        if ADMIN not in (principal, actor):
            self.held[principal] += 1
        return ""

    def done(self, principal: str, actor: str, started: float | None) -> None:
        """A slot free again; `started`: a unary call's start, for the retry hint (a stream's time says nothing)."""
        self.in_flight -= 1
        if ADMIN not in (principal, actor):
            self.held[principal] -= 1
            if not self.held[principal]:
                del self.held[principal]
        if started is not None:
            self._latency_s = 0.9 * self._latency_s + 0.1 * (time.monotonic() - started)

    def retry_after_ms(self) -> int:
        """When a slot is likely free again: about one call's time in the kernel now."""
        return max(10, min(10_000, round(self._latency_s * 1000)))

    @asynccontextmanager
    async def slot(self, call: Call, context: Any, stream: bool = False) -> AsyncIterator[Callable[[], None]]:
        """Serve `call` in a slot, or end it with RESOURCE_EXHAUSTED (and the retry hint). Gives
        the slot's early release, for a stream's first message (and a stream's slot is let go
        after STREAM_HOLD_S in any case)."""
        why = self.refusal(call.principal, call.actor)
        if why:
            wait = self.retry_after_ms()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the kernel is at capacity: {why}; retry in about {wait} ms",
                ((PUSHBACK_HEADER, str(wait)), (CALL_ID_HEADER, call.id)),
            )
            raise AssertionError("context.abort returned")  # (it raises: the slot is never entered)
        started, held = time.monotonic(), True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.done(call.principal, call.actor, None if stream else started)

        timer = asyncio.get_running_loop().call_later(STREAM_HOLD_S, release) if stream else None
        try:
            yield release
        finally:
            if timer is not None:
                timer.cancel()
            release()
