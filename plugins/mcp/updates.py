"""Resource update notifications: which cortex:// resources an event on the bus changes, and the
connections that subscribed to them.

The bridge watches the event bus through the gateway (EventService/Subscribe, as the bridge's
principal, so policy and audit see it), from the moment it starts and for as long as it runs: a
subscription made later misses nothing published after it. An event names what changed and never
its contents; a subscriber reads the resource again, as itself, through the router.

    memory.stored / memory.updated / memory.deleted   cortex://memories/{id}, cortex://memories,
                                                      and every cortex://memories?query=... search
    trace.finished                                    cortex://traces/{id}, cortex://traces
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog

from cortex.kernel.sdk import parse_json, rpc_status

from .resources import SCHEME, memory_uri, trace_uri

log = structlog.get_logger("cortex.mcp")

SUBSCRIBE = "/cortex.events.v1.EventService/Subscribe"
TOPICS = ["memory.*", "trace.*"]
SEARCHES = f"{SCHEME}://memories?"
RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)  # between attempts to (re)open the watch, then every 30 s


def changed_uris(event_type: str, subject: str) -> tuple[str, ...]:
    """The concrete resources an event changes (searches aside: see `Subscriptions.matching`)."""
    if event_type.startswith("memory.") and subject:
        return (memory_uri(subject), f"{SCHEME}://memories")
    if event_type == "trace.finished" and subject:
        return (trace_uri(subject), f"{SCHEME}://traces")
    return ()


class Subscriptions:
    """The URIs each client connection subscribed to (resources/subscribe), forgotten with the
    connection."""

    def __init__(self) -> None:
        self._by_connection: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def add(self, connection: Any, uri: str) -> None:
        self._by_connection.setdefault(connection, set()).add(uri)

    def remove(self, connection: Any, uri: str) -> None:
        self._by_connection.get(connection, set()).discard(uri)

    def of(self, connection: Any) -> set[str]:
        return set(self._by_connection.get(connection, ()))

    def matching(self, event_type: str, subject: str) -> list[tuple[Any, str]]:
        """(connection, uri) for every subscription the event changes."""
        changed = set(changed_uris(event_type, subject))
        memory = event_type.startswith("memory.")
        return [(connection, uri) for connection, uris in list(self._by_connection.items()) for uri in sorted(uris)
                if uri in changed or (memory and uri.startswith(SEARCHES))]


async def watch(gateway: Any, principal: Any, on_event: Callable[[Any], Awaitable[None]]) -> None:
    """Follow the bus's memory and trace events until cancelled, handing each to `on_event`;
    reconnect after the position last seen when the stream breaks (the bus restarted, the kernel
    is not up yet), so nothing in between is missed."""
    after, attempt = 0, 0
    while True:
        method = gateway.method(SUBSCRIBE)
        try:
            if method is None:
                raise LookupError(gateway.explain(SUBSCRIBE))
            request = parse_json(method, {"topics": TOPICS, "from_latest": after == 0, "after_position": after})
            async for message in gateway.stream(method, request, principal, timeout=None):
                attempt = 0
                after = max(after, message.event.position)
                await on_event(message.event)
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            code, details = rpc_status(exc)
            log.warning("mcp.watch_broken", code=code.name, details=details, after_position=after)
        except LookupError as exc:
            log.info("mcp.watch_waiting", reason=str(exc))
        await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
        attempt += 1
