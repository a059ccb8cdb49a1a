"""Events on NATS JetStream across kernels: two `cortex serve` processes on one stream are one
event log (an event published through A reaches B's subscribers, live and in order, and a repeat
through B is the same event); a NATS server that goes away makes publishes UNAVAILABLE, not
lost, and when it comes back everything acknowledged is still there."""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest

from cortex.contracts.events.v1 import events_pb2 as pb
from cortex.contracts.events.v1 import events_pb2_grpc

from ..conftest import cortex_env, wait_for

DISABLED = '["ollama", "openai", "cerebrum", "a2a", "mcp", "http", "memories"]'


def kernel(serve_process, channel_to, root, server, **settings):
    env = cortex_env(root, CORTEX_PLUGINS__DISABLED=DISABLED, CORTEX_PLUGINS__EVENTS__BACKEND="nats",
                     CORTEX_PLUGINS__EVENTS__NATS_URL=server.url, **settings)
    proc = serve_process(env=env)
    return events_pb2_grpc.EventServiceStub(channel_to(proc.target)), proc


def publish(stub, topic: str, **kw) -> pb.PublishResponse:
    return stub.Publish(pb.PublishRequest(event=pb.Event(type=topic, **kw)), timeout=10)


def test_two_kernels_on_one_stream_are_one_event_log(serve_process, channel_to, nats_server, tmp_path):
    a, _ = kernel(serve_process, channel_to, tmp_path / "a", nats_server)
    b, _ = kernel(serve_process, channel_to, tmp_path / "b", nats_server)
    received: list[pb.Event] = []
    stream = b.Subscribe(pb.SubscribeRequest(topics=["orders.*"], from_latest=True), timeout=30)

    def follow():
        for message in stream:
            received.append(message.event)
            if message.event.type == "orders.done":
                return

    reader = threading.Thread(target=follow)
    reader.start()
    wait_for(lambda: received or (publish(a, "orders.probe") and time.sleep(0.05)), "B's subscription to see A's events")
    for n in range(20):  # published through A, live on B, in order
        publish(a, "orders.created", data=json.dumps({"n": n}))
    publish(a, "orders.done")
    reader.join(15)
    created = [json.loads(e.data)["n"] for e in received if e.type == "orders.created"]
    assert created == list(range(20))
    assert [e.position for e in received] == sorted(e.position for e in received)
    # the same event (source and id) published through either kernel is one event
    first = publish(a, "orders.paid", id="pay-1", source="shop")
    again = publish(b, "orders.paid", id="pay-1", source="shop")
    assert (again.duplicate, again.position) == (True, first.position)
    # and B replays what A published, from any position
    replay = []
    for message in b.Subscribe(pb.SubscribeRequest(topics=["orders.paid"]), timeout=10):
        replay.append(message.event)
        break
    assert (replay[0].id, replay[0].position, replay[0].source) == ("pay-1", first.position, "shop")


def test_a_lost_nats_server_makes_publish_unavailable_and_loses_nothing_acknowledged(
        serve_process, channel_to, nats_server, tmp_path):
    stub, _proc = kernel(serve_process, channel_to, tmp_path / "a", nats_server)
    kept = [publish(stub, "ledger.entry", data=str(n)).position for n in range(5)]
    nats_server.stop()
    with pytest.raises(grpc.RpcError) as err:
        publish(stub, "ledger.entry", data="while down")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "event log cannot be reached" in err.value.details()
    nats_server.start()  # same port, same store: the client reconnects by itself

    def published() -> bool:
        try:
            return publish(stub, "ledger.entry", data="after").position > kept[-1]
        except grpc.RpcError:
            time.sleep(0.5)  # (as a client should: hammering an unavailable provider opens its circuit)
            return False

    wait_for(published, "publishing again once NATS is back", timeout=20)
    replay = []
    for message in stub.Subscribe(pb.SubscribeRequest(topics=["ledger.*"]), timeout=10):
        replay.append(message.event)
        if message.event.data == "after":
            break
    assert [e.data for e in replay] == ["0", "1", "2", "3", "4", "after"]
    assert [e.position for e in replay[:5]] == kept


def test_a_nats_server_beyond_loopback_needs_tls_and_a_token():
    from cortex.plugins.events.nats_bus import check_url, filter_of, subject_of

    check_url("nats://127.0.0.1:4222", "", "")
    for url, ca, token in [("nats://10.0.0.5:4222", "", ""), ("tls://10.0.0.5:4222", "", ""),
                           ("nats://10.0.0.5:4222", "", "secret"), ("http://127.0.0.1:4222", "", "")]:
        with pytest.raises(ValueError, match=r"beyond loopback|use nats://"):
            check_url(url, ca, token)
    check_url("tls://nats.example:4222", "", "secret")
    # topic globs become subjects where they mean the same; else the server sends all and we match
    assert filter_of(["memory.stored"]) == "cortex.events.memory.stored"
    assert filter_of(["memory.*"]) == "cortex.events.memory.>"
    assert filter_of(["mem*"]) == filter_of(["a.b", "c.d"]) == filter_of([]) == "cortex.events.>"
    assert subject_of("a..b") == subject_of("trailing.") == "cortex.events._"


@pytest.mark.timeout(240)
def test_nats_restarted_under_load_subscribers_resume_from_their_position(serve_process, channel_to, nats_server, tmp_path):
    """A publisher that retries what was not acknowledged (same id: one event), a subscriber that
    follows from its last position after the stream breaks: with NATS killed and restarted in the
    middle, the subscriber sees every acknowledged event once, in order. (The events provider's
    circuit opens while NATS is away; it is set to probe again after 2 s, not 30.)"""
    stub, _ = kernel(serve_process, channel_to, tmp_path / "a", nats_server, CORTEX_CIRCUIT__RESET_TIMEOUT_SECONDS="2")
    acknowledged: list[int] = []
    seen: list[tuple[int, int]] = []  # (n, position)
    refusals: list[str] = []
    done = threading.Event()

    def publisher() -> None:
        for n in range(150):
            while True:
                try:
                    publish(stub, "load.tick", id=f"tick-{n}", source="loadtest", data=str(n))
                    acknowledged.append(n)
                    break
                except grpc.RpcError as exc:
                    refusals.append(f"{exc.code().name}: {exc.details()}")
                    time.sleep(0.5)  # not acknowledged: the same event again (its id makes it one)
        done.set()

    def subscriber() -> None:
        position = 0
        while not (done.is_set() and len(seen) >= len(acknowledged)):
            try:
                for message in stub.Subscribe(pb.SubscribeRequest(topics=["load.*"], after_position=position), timeout=5):
                    seen.append((int(message.event.data), message.event.position))
                    position = message.event.position
            except grpc.RpcError:
                time.sleep(0.2)  # the stream broke, or waited its deadline out: follow again from here

    threads = [threading.Thread(target=publisher), threading.Thread(target=subscriber)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) >= 40, "a first part of the load", timeout=30)
    nats_server.stop()
    time.sleep(1.0)
    nats_server.start()
    for thread in threads:
        thread.join(180)
    assert acknowledged == list(range(150)), refusals[-3:]
    assert [n for n, _ in seen] == list(range(150))  # each once, in order
    assert [p for _, p in seen] == sorted({p for _, p in seen})
