"""Namespaces are walls on the event bus: each event carries the namespace of the call that
published it (set by the bus from the publisher's credential, never from the request), and a
subscriber that does not see every namespace gets only its own namespace's events, in a replay and
live; admin gets every event. Both logs, SQLite and NATS JetStream, alike. Events stored before
events had a namespace are the owner's ("default")."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from cortex.contracts.events.v1 import events_pb2 as pb
from cortex.contracts.events.v1 import events_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
from cortex.kernel.security.credentials import KeyStore

from ..conftest import bearer, callers, wait_for
from .test_events import backend  # noqa: F401 - the fixture: every test here runs on both logs

CONFIG = '[plugins]\ndisabled = ["ollama", "openai", "cerebrum", "a2a", "mcp", "http", "mlx"]\n'


@pytest.fixture
def bus(start_kernel, channel_to, data_dir, backend):  # noqa: F811 - the imported fixture
    """(events stub, memories stub, {who: call metadata}) of a kernel with keys alice and bob."""

    def start():
        target, _ = start_kernel(CONFIG + backend)
        who = callers(target, data_dir, "alice", "bob")
        channel = channel_to(target, as_admin=False)
        return events_pb2_grpc.EventServiceStub(channel), memories_pb2_grpc.MemoryServiceStub(channel), who

    return start


def replay(stub, metadata, **request) -> list[pb.Event]:
    request.setdefault("until_latest", True)
    return [m.event for m in stub.Subscribe(pb.SubscribeRequest(**request), timeout=10, metadata=metadata)]


def publish(stub, metadata, topic: str, **event) -> pb.PublishResponse:
    return stub.Publish(pb.PublishRequest(event=pb.Event(type=topic, **event)), timeout=10, metadata=metadata)


def test_a_subscriber_gets_only_its_own_namespaces_events(bus):
    events, memories, who = bus()
    stored = {name: memories.Store(memories_pb2.StoreRequest(text=f"{name}'s secret plan", tags=[name]), timeout=60,
                                   metadata=who[name]) for name in ("alice", "bob", "admin")}
    publish(events, who["alice"], "notes.made", subject="alice-note", namespace="key:bob")  # a claim: ignored
    publish(events, who["bob"], "notes.made", subject="bob-note")
    publish(events, who["admin"], "notes.made", subject="owner-note")
    wait_for(lambda: len([e for e in replay(events, who["admin"]) if e.type == "memory.stored"]) == 3,
             "the memories plugin's three memory.stored events")

    everything = replay(events, who["admin"])
    assert {(e.subject, e.namespace) for e in everything} == {
        (stored["alice"].id, "key:alice"), (stored["bob"].id, "key:bob"), (stored["admin"].id, "default"),
        ("alice-note", "key:alice"), ("bob-note", "key:bob"), ("owner-note", "default")}
    for name, namespace, owner, note in (("alice", "key:alice", "alice", "alice-note"),
                                         ("bob", "key:bob", "bob", "bob-note"),
                                         ("local", "default", "admin", "owner-note")):
        mine = replay(events, who[name], topics=["*"])
        assert {e.subject for e in mine} == {stored[owner].id, note}, (name, mine)
        assert {e.namespace for e in mine} == {namespace}
        others = [s.memory for n, s in stored.items() if s.memory.namespace != namespace]
        text = "".join(e.SerializeToString().decode("utf-8", "replace") for e in mine)
        assert not any(m.id in text or m.content_hash in text for m in others), name
        # a replay from a position, and a topic, keep to the namespace the same way
        after = replay(events, who[name], topics=["memory.*"], after_position=mine[0].position - 1)
        assert after and all(e.namespace == namespace for e in after)


def test_live_delivery_skips_other_namespaces_and_duplicates_are_per_namespace(bus):
    events, _, who = bus()
    received: list[pb.Event] = []
    stream = events.Subscribe(pb.SubscribeRequest(topics=["live.*"], from_latest=True), timeout=15,
                              metadata=who["alice"])

    def read():
        for message in stream:
            received.append(message.event)
            if message.event.subject == "done":
                return stream.cancel()

    reader = threading.Thread(target=read)
    reader.start()
    wait_for(lambda: received or (publish(events, who["alice"], "live.probe") and time.sleep(0.05)), "the subscription to go live")
    first = publish(events, who["alice"], "live.one", id="evt-1", source="tests", data=json.dumps({"n": 1}))
    # the same (source, id) from another namespace is another event: no position of alice's leaks
    bobs = publish(events, who["bob"], "live.one", id="evt-1", source="tests", data=json.dumps({"n": 2}))
    assert not bobs.duplicate and bobs.position != first.position
    assert publish(events, who["alice"], "live.one", id="evt-1", source="tests").duplicate
    publish(events, who["alice"], "live.end", subject="done")
    reader.join(10)
    assert all(e.namespace == "key:alice" for e in received)
    assert [json.loads(e.data)["n"] for e in received if e.type == "live.one"] == [1]


def test_events_stored_before_namespaces_are_the_owners(start_kernel, channel_to, data_dir):
    folder = data_dir / "events"
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "events.db")
    db.executescript(
        """
        CREATE TABLE events (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL, source TEXT NOT NULL, type TEXT NOT NULL, subject TEXT NOT NULL,
            time_ms INTEGER NOT NULL, datacontenttype TEXT NOT NULL, data TEXT NOT NULL,
            trace_id TEXT NOT NULL,
            UNIQUE (source, id)
        );
        CREATE INDEX events_type ON events (type, position);
        ALTER TABLE events ADD COLUMN publisher TEXT NOT NULL DEFAULT '';
        INSERT INTO events (id, source, type, subject, time_ms, datacontenttype, data, trace_id, publisher)
            VALUES ('old-1', 'cortex/memories', 'memory.stored', 'm-old', 1, 'application/json', '{}', '', 'plugin:memories');
        PRAGMA user_version = 2;
        """
    )
    db.close()
    target, _ = start_kernel(CONFIG)
    keys = KeyStore(data_dir)
    alice = bearer(keys.create("alice", []))
    events = events_pb2_grpc.EventServiceStub(channel_to(target, as_admin=False))
    assert [(e.subject, e.namespace) for e in replay(events, ())] == [("m-old", "default")]
    assert replay(events, alice) == []
    # the old event keeps its position, and positions go on after it
    assert publish(events, alice, "after.upgrade", id="old-1", source="cortex/memories").position == 2
