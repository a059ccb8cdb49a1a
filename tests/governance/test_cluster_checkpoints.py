"""Governance across a cluster: every kernel keeps its own signed audit chain and publishes its
checkpoints on the shared bus (NATS JetStream here); `cortex proofs verify --chain A --chain B
--published` holds each chain to what it published. A kernel that rewrites its log with its own
signing key passes a check of its data dir alone, and fails this one."""

from __future__ import annotations

import json
import sqlite3

from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc
from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import cortex_env, run_cli, wait_for
from .test_checkpoints import resign_head, rewrite_a_proof, stolen_key


def on_nats(root, server, **extra):
    return cortex_env(root, CORTEX_PLUGINS__EVENTS__BACKEND="nats", CORTEX_PLUGINS__EVENTS__NATS_URL=server.url, **extra)


def published(stub) -> list[pb.Checkpoint]:
    request = events_pb2.SubscribeRequest(topics=["audit.checkpoint"], until_latest=True)
    return [json.loads(m.event.data) for m in stub.Subscribe(request, timeout=10)]


def rewrite_an_entry(data) -> None:
    """The worst case: the kernel's own key rewrites a proof and re-signs everything after it."""
    key = stolen_key(data)
    db = sqlite3.connect(data / "governance" / "audit.db")
    rewrite_a_proof(db, key, after=3)
    resign_head(db, key)


def test_each_chain_is_held_to_the_checkpoints_it_published(tmp_path, serve_process, channel_to, nats_server):
    kernels = {}
    for name in ("a", "b"):
        env = on_nats(tmp_path / name, nats_server, CORTEX_PLUGINS__GOVERNANCE__CHECKPOINT_EVERY="4")
        kernel = serve_process(env=env)
        echo = echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target))
        for i in range(12):
            echo.Echo(echo_pb2.EchoRequest(message=f"{name} {i}"), timeout=5)
        kernels[name] = (kernel, env)
    reader_env = on_nats(tmp_path / "reader", nats_server)
    reader = serve_process(env=reader_env)
    bus = events_pb2_grpc.EventServiceStub(channel_to(reader.target))
    wait_for(lambda: len({cp["public_key"] for cp in published(bus)}) == 2, "both kernels' checkpoints on the bus")
    for kernel, _ in kernels.values():
        kernel.stop()
    # someone publishes a "checkpoint" of their own: not a governance plugin's, so it is not trusted
    bus.Publish(events_pb2.PublishRequest(event=events_pb2.Event(type="audit.checkpoint", data='{"size": "1"}')), timeout=10)

    chains = ["--chain", str(tmp_path / "a"), "--chain", str(tmp_path / "b")]
    reader_env["CORTEX_TARGET"] = reader.target
    ok = run_cli("proofs", "verify", "--all", *chains, "--published", env=reader_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'a'}: OK:") and "checkpoints it published on the bus hold" in lines[0]
    assert lines[1].startswith(f"{tmp_path / 'b'}: OK:")
    assert "1 events that are not a governance plugin's checkpoint" in lines[2]

    rewrite_an_entry(tmp_path / "a")
    alone = run_cli("proofs", "verify", "--all", "--chain", str(tmp_path / "a"), env=reader_env)
    assert alone.returncode == 0, alone.stdout  # nothing inside its data dir can tell
    caught = run_cli("proofs", "verify", "--all", *chains, "--published", env=reader_env)
    assert caught.returncode == 1
    first, second = caught.stdout.splitlines()[:2]
    assert first.startswith(f"{tmp_path / 'a'}: BROKEN") and "entries up to it were rewritten" in first
    assert second.startswith(f"{tmp_path / 'b'}: OK:")
