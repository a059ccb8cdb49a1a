"""What the console's charts need that no call tells: which circuits are open, how many calls the
kernel shed at capacity, how many memories are stored. Asked through the kernel like any
plugin's call (and so governed)."""

from __future__ import annotations

import grpc

from cortex.contracts.kernel.v1 import kernel_pb2

from .activity import Activity

CONTRACTS = "/cortex.kernel.v1.KernelService/ListContracts"
INFO = "/cortex.kernel.v1.KernelService/GetInfo"
STATS = "/cortex.memories.v1.MemoryService/Stats"


async def poll_once(channel, activity: Activity, log) -> None:
    try:
        info, _ = await channel.call(INFO, kernel_pb2.GetInfoRequest(), timeout=5)
        activity.shed_total(info.calls_shed)
    except grpc.RpcError as exc:  # (the circuits and memories are still worth asking)
        log.debug("console.sample_failed", what="calls shed", code=exc.code().name)
    try:
        contracts, _ = await channel.call(CONTRACTS, kernel_pb2.ListContractsRequest(), timeout=5)
        activity.circuits({(c.service, p.name): p.circuit == kernel_pb2.Provider.CIRCUIT_OPEN
                           for c in contracts.contracts for p in c.providers})
    except grpc.RpcError as exc:
        log.debug("console.sample_failed", what="circuits", code=exc.code().name)
        return
    if not any(c.service == "cortex.memories.v1.MemoryService" for c in contracts.contracts):
        return
    from cortex.contracts.memories.v1 import memories_pb2

    try:
        stats, _ = await channel.call(STATS, memories_pb2.StatsRequest(), timeout=5)
    except grpc.RpcError as exc:
        log.debug("console.sample_failed", what="memories", code=exc.code().name)
        return
    activity.memory_count(stats.total)
