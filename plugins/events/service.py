"""EventService over an EventBus: validation, publish (durable before acknowledged, then handed
to plugins' cortex_event hooks in order), and subscribe (replay, then live).

Namespaces are walls: an event is the namespace's of the call that published it (the kernel's
`context.namespace`, like `publisher` never taken from the request), and a subscriber that does
not see every namespace (`context.sees_every_namespace`: admin and the kernel's own parts do) is
sent only its own namespace's events, in a replay as live. Plugins' cortex_event hooks get every
event, with its namespace."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import grpc

from cortex.contracts.events.v1 import events_pb2 as pb

from .bus import BusUnavailable, EventBus, StoredEvent, Wakeup

TYPE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")
MAX_TOPICS = 32
BATCH = 256


def to_message(event: StoredEvent) -> pb.Event:
    message = pb.Event(
        id=event.id, source=event.source, type=event.type, subject=event.subject,
        datacontenttype=event.datacontenttype, data=event.data, trace_id=event.trace_id, position=event.position,
        publisher=event.publisher, namespace=event.namespace,
    )
    message.time.FromMilliseconds(event.time_ms)
    return message


class EventServicer:
    """Registered at start-up; serves once `open` has given it the log (UNAVAILABLE before)."""

    def __init__(self, max_data_bytes: int):
        self.bus: EventBus | None = None
        self.max_data_bytes = max_data_bytes
        self.closing = False
        self._wakeup = Wakeup()
        self._hooks: asyncio.Queue[pb.Event] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []

    async def open(self, bus: EventBus, deliver: Any, stopping: Any) -> None:
        """Serve `bus`; hand new events published here to `deliver` (the plugins' cortex_event
        hooks) in order; end subscriptions when `stopping` is set."""
        await bus.start(self._wakeup.notify)  # events another kernel appends wake subscribers here too
        self.bus = bus
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run_hooks(deliver), name="cortex-event-hooks"),
            loop.create_task(self._end_streams_on(stopping), name="cortex-event-close"),
        ]

    async def _unavailable(self, context) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the event log is not open (starting or stopping)")

    async def _end_streams_on(self, stopping: Any) -> None:
        """When the kernel stops, subscriptions end (OK): clients resume from their last position."""
        if not stopping:
            return
        await stopping.wait()
        self.closing = True
        self._wakeup.notify()

    async def _bus(self, context, call, *args):
        """A call of the log; UNAVAILABLE (retry) when it cannot be reached now."""
        try:
            return await call(*args)
        except BusUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the event log cannot be reached: {exc}")

    # -- Publish ---------------------------------------------------------------------------------
    async def Publish(self, request: pb.PublishRequest, context) -> pb.PublishResponse:
        if self.bus is None:
            await self._unavailable(context)
        event = request.event
        problem = self._invalid(event)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        when = event.time.ToMilliseconds() if event.HasField("time") else int(time.time() * 1000)
        stored = StoredEvent(
            position=0,
            id=event.id or str(uuid.uuid4()),
            source=event.source or getattr(context, "principal", "") or "unknown",
            type=event.type,
            subject=event.subject,
            time_ms=when,
            datacontenttype=event.datacontenttype or ("application/json" if event.data[:1] in ("{", "[") else "text/plain"),
            data=event.data,
            trace_id=event.trace_id or getattr(context, "call_id", ""),
            publisher=getattr(context, "principal", ""),  # never what the request says
            # nor this, unless the caller may write every namespace (admin, a plugin's own work): then
            # the event is about data it keeps in another's (admin's Store into key:alice's); a
            # context that cannot say is nobody's
            namespace=event.namespace if event.namespace and getattr(context, "sees_every_namespace", False)
            else getattr(context, "namespace", ""),
        )
        position, duplicate = await self._bus(context, self.bus.append, stored)
        if not duplicate:
            stored.position = position
            self._wakeup.notify()
            self._hooks.put_nowait(to_message(stored))
        return pb.PublishResponse(id=stored.id, position=position, duplicate=duplicate)

    def _invalid(self, event: pb.Event) -> str:
        if not event.type:
            return "event.type is required: the topic, e.g. 'memory.stored'"
        if not TYPE_PATTERN.match(event.type):
            return f"event.type {event.type[:80]!r} must be 1-200 letters, digits and . _ : / - (e.g. 'memory.stored')"
        if len(event.id) > 200 or len(event.source) > 500 or len(event.subject) > 500 or len(event.trace_id) > 200:
            return "event id, trace_id (200) or source, subject (500 characters) too long"
        if "\0" in event.id or "\0" in event.source:  # (they are joined with NUL to tell repeats apart)
            return "event id and source may not hold a NUL character"
        if event.position:
            return "event.position is assigned by the bus; leave it unset"
        size = len(event.data.encode("utf-8"))
        if size > self.max_data_bytes:
            return f"event.data is {size} bytes; the limit is {self.max_data_bytes} ([plugins.events] max_data_bytes)"
        return ""

    async def _run_hooks(self, deliver: Any) -> None:
        while True:
            event = await self._hooks.get()
            if deliver is not None:
                await deliver(event)

    # -- Subscribe -------------------------------------------------------------------------------
    async def Subscribe(self, request: pb.SubscribeRequest, context):
        if self.bus is None:
            await self._unavailable(context)
        topics = list(request.topics)
        if len(topics) > MAX_TOPICS or any(not t or len(t) > 200 for t in topics):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"give 0 to {MAX_TOPICS} topic globs of 1 to 200 characters each"
            )
        if request.from_latest and request.until_latest:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "from_latest and until_latest together would send nothing: choose one")
        topics = [] if "*" in topics else topics
        namespace = None if getattr(context, "sees_every_namespace", False) else getattr(context, "namespace", "")
        position = await self._bus(context, self.bus.latest_position) if request.from_latest else request.after_position
        end = await self._bus(context, self.bus.latest_position) if request.until_latest else None
        while not self.closing and (end is None or position < end):
            wakeup = self._wakeup.current
            events = await self._bus(context, self.bus.read_after, position, topics, BATCH, namespace)
            for event in events:
                if end is not None and event.position > end:
                    return
                yield pb.SubscribeResponse(event=to_message(event))
                position = event.position
            if len(events) < BATCH:
                if end is not None:
                    return  # every event up to `end` that matches has been sent
                await wakeup.wait()

    async def close(self) -> None:
        self.closing = True
        self._wakeup.notify()
        for task in self._tasks:
            task.cancel()
        if self.bus is not None:
            bus, self.bus = self.bus, None
            await bus.close()
