"""ConsoleService: who the caller is, and the kernel's sampled activity."""

from __future__ import annotations

import grpc

from cortex.contracts.console.v1 import console_pb2 as pb

from .activity import Activity

MAX_MINUTES = 24 * 60


class ConsoleServicer:
    def __init__(self, activity: Activity):
        self.activity = activity

    async def WhoAmI(self, request: pb.WhoAmIRequest, context) -> pb.WhoAmIResponse:
        principal = context.principal  # from the caller's credential, never from what it says
        return pb.WhoAmIResponse(principal=principal, admin=principal == "admin")

    async def GetActivity(self, request: pb.GetActivityRequest, context) -> pb.GetActivityResponse:
        if request.minutes > MAX_MINUTES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"minutes is at most {MAX_MINUTES} (one day); {request.minutes} was asked")
        samples = []
        for s in self.activity.since(request.minutes):
            samples.append(pb.Sample(
                start=s.start, calls=s.calls, p50_ms=round(s.percentile(0.50), 3), p99_ms=round(s.percentile(0.99), 3),
                allowed=s.allowed, denied=s.denied, errors=s.errors, circuit_openings=s.circuit_openings,
                memories=s.memories, shed=s.shed,
                by_method=[pb.Breakdown(method=m.lstrip("/"), provider=p, calls=c.calls, denied=c.denied, errors=c.errors)
                           for (m, p), c in sorted(s.by_method.items())],
            ))
        return pb.GetActivityResponse(interval_seconds=self.activity.interval, samples=samples)
