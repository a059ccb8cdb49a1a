"""EventService through the kernel: durable, ordered publish/subscribe with replay from a
position, plugins' cortex_event hooks, and memory.stored from the memories plugin. Every test
runs against both logs, SQLite and NATS JetStream (a real nats-server), so they cannot drift."""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest

from cortex.contracts.events.v1 import events_pb2 as pb
from cortex.contracts.events.v1 import events_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
from cortex.kernel import hookimpl

from ..conftest import wait_for

CONFIG = '[plugins]\ndisabled = ["ollama", "openai", "cerebrum", "a2a", "mcp", "http"]\n'


def publish(stub, topic: str, **kw) -> pb.PublishResponse:
    return stub.Publish(pb.PublishRequest(event=pb.Event(type=topic, **kw)), timeout=10)


def take(stream, n: int) -> list[pb.Event]:
    got = []
    for message in stream:
        got.append(message.event)
        if len(got) == n:
            break
    stream.cancel()
    return got


@pytest.fixture(params=["sqlite", "nats"])
def backend(request) -> str:
    """The events section for each log: the embedded SQLite file, or a NATS stream."""
    if request.param == "sqlite":
        return ""
    server = request.getfixturevalue("nats_server")
    return f'[plugins.events]\nbackend = "nats"\nnats_url = "{server.url}"\n'


@pytest.fixture
def events(start_kernel, channel_to, backend):
    def start(config: str = CONFIG, **kw):
        target, kt = start_kernel(config + backend, **kw)
        return events_pb2_grpc.EventServiceStub(channel_to(target)), target, kt

    return start


def test_reconnect_from_last_position_misses_nothing_and_keeps_order(events):
    stub, _, _ = events()
    for i in range(30):
        publish(stub, "orders.created" if i % 2 else "orders.paid", data=json.dumps({"n": i}))
    first = take(stub.Subscribe(pb.SubscribeRequest(topics=["orders.*"]), timeout=10), 12)
    last = first[-1].position
    # while this subscriber is away, more events arrive, some on a topic it does not follow
    for i in range(30, 40):
        publish(stub, "orders.created", data=json.dumps({"n": i}))
        publish(stub, "audit.noise", data="x")
    rest = take(stub.Subscribe(pb.SubscribeRequest(topics=["orders.*"], after_position=last), timeout=10), 28)
    seen = [json.loads(e.data)["n"] for e in first + rest]
    assert seen == list(range(40))
    positions = [e.position for e in first + rest]
    assert positions == sorted(positions) and len(set(positions)) == 40
    assert all(e.id and e.time.seconds > 0 and e.datacontenttype == "application/json" for e in rest)


def test_a_position_past_any_event_waits_for_none(events):
    stub, _, kt = events()
    publish(stub, "a.b")
    stream = stub.Subscribe(pb.SubscribeRequest(after_position=2**64 - 1), timeout=1)
    with pytest.raises(grpc.RpcError) as err:  # nothing comes, and nothing breaks: the deadline ends it
        next(stream)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert next(p for p in kt.kernel.registry.all_providers() if p.name == "events").failures == 0


def test_live_delivery_topic_globs_and_from_latest(events):
    stub, _, _ = events()
    publish(stub, "memory.old")
    received: list[pb.Event] = []
    stream = stub.Subscribe(pb.SubscribeRequest(topics=["memory.*"], from_latest=True), timeout=10)

    def read():
        for message in stream:
            received.append(message.event)
            if message.event.type == "memory.deleted":
                return stream.cancel()

    reader = threading.Thread(target=read)
    reader.start()
    # from_latest: events before the subscription is live are not for it. It is live once a probe
    # published now comes back (one probe per 50 ms until one does)
    wait_for(lambda: received or (publish(stub, "memory.probe") and time.sleep(0.05)), "the subscription to go live")
    publish(stub, "plans.made")
    publish(stub, "memory.stored", subject="m1")
    publish(stub, "memory.deleted", subject="m1")
    reader.join(10)
    assert [e.type for e in received if e.type != "memory.probe"] == ["memory.stored", "memory.deleted"]


def test_publish_is_idempotent_and_bad_events_are_refused(events):
    stub, _, _ = events()
    first = publish(stub, "a.b", id="evt-1", source="tests", data="hello")
    again = publish(stub, "a.b", id="evt-1", source="tests", data="hello")
    assert (again.position, again.duplicate, first.duplicate) == (first.position, True, False)
    for event, words in [
        (pb.Event(), "event.type is required"),
        (pb.Event(type="has space"), "must be 1-200 letters"),
        (pb.Event(type="a.b", position=7), "assigned by the bus"),
        (pb.Event(type="a.b", data="x" * ((1 << 20) + 1)), "the limit is"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Publish(pb.PublishRequest(event=event), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        take(stub.Subscribe(pb.SubscribeRequest(topics=[""]), timeout=5), 1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # nothing refused was stored
    stored = take(stub.Subscribe(pb.SubscribeRequest(), timeout=5), 1)
    assert stored[0].id == "evt-1"


def test_events_survive_a_restart(events, start_kernel):
    stub, _, kt = events()
    for i in range(5):
        publish(stub, "durable.event", data=str(i))
    kt.stop()
    stub, _, _ = events()
    replay = take(stub.Subscribe(pb.SubscribeRequest(topics=["durable.*"]), timeout=10), 5)
    assert [e.data for e in replay] == ["0", "1", "2", "3", "4"]


class Listener:
    """A plugin reacting to events through the cortex_event hook."""

    def __init__(self):
        self.seen: list[tuple[str, int]] = []

    @hookimpl
    def cortex_event(self, event):
        if event.type == "boom":
            raise RuntimeError("a listener bug must not stop delivery")
        self.seen.append((event.type, event.position))


def test_plugins_receive_events_in_order_through_the_hook(events):
    listener = Listener()
    stub, _, _ = events(plugins=[("listener", listener)])
    publish(stub, "one")
    publish(stub, "boom")
    publish(stub, "two")
    wait_for(lambda: len(listener.seen) >= 2, "the hook to see two events", timeout=5)
    assert [t for t, _ in listener.seen] == ["one", "two"]
    assert listener.seen[0][1] < listener.seen[1][1]


def test_memories_publish_memory_stored(events, channel_to):
    stub, target, _ = events('[plugins]\ndisabled = ["ollama", "openai", "cerebrum", "a2a", "mcp", "http"]\n')
    memories = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    stored = memories.Store(memories_pb2.StoreRequest(text="the boiler was serviced in May", tags=["home", "private"]), timeout=60)
    event = take(stub.Subscribe(pb.SubscribeRequest(topics=["memory.stored"]), timeout=10), 1)[0]
    data = json.loads(event.data)
    assert (event.subject, event.source, data["id"], data["tags"]) == (stored.id, "cortex/memories", stored.id, ["home", "private"])
    assert "text" not in data  # events may leave the machine (webhooks): they name memories, never their text


def test_subscriptions_end_when_the_kernel_stops_and_resume_after(events):
    stub, _, kt = events()
    publish(stub, "shutdown.test", data="before")
    seen: list[pb.Event] = []
    ended: list[object] = []

    def follow():
        try:
            seen.extend(m.event for m in stub.Subscribe(pb.SubscribeRequest(topics=["shutdown.*"]), timeout=30))
            ended.append("ok")
        except grpc.RpcError as exc:
            ended.append(exc.code())

    reader = threading.Thread(target=follow)
    reader.start()
    wait_for(lambda: seen, "the subscription's first event", timeout=5)
    started = time.monotonic()
    kt.stop(grace=10.0)  # a live subscription must not hold the shutdown for the whole grace period
    reader.join(10)
    assert time.monotonic() - started < 5 and ended == ["ok"]
    stub, _, _ = events()
    publish(stub, "shutdown.test", data="after")
    rest = take(stub.Subscribe(pb.SubscribeRequest(topics=["shutdown.*"], after_position=seen[-1].position), timeout=10), 1)
    assert [e.data for e in seen + rest] == ["before", "after"]


def test_until_latest_replays_what_the_log_holds_and_ends(events):
    stub, _, _ = events()
    for i in range(6):
        publish(stub, "ledger.entry" if i % 2 else "ledger.noise", data=str(i))
    replay = list(stub.Subscribe(pb.SubscribeRequest(topics=["ledger.entry"], until_latest=True), timeout=10))
    assert [m.event.data for m in replay] == ["1", "3", "5"]  # and the stream ended by itself (no deadline)
    assert not list(stub.Subscribe(pb.SubscribeRequest(after_position=replay[-1].event.position + 1, until_latest=True),
                                   timeout=10))
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Subscribe(pb.SubscribeRequest(from_latest=True, until_latest=True), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
