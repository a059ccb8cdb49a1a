"""GovernanceService.VerifyChain: the whole chain verified through the kernel (the console's Audit
page uses it), where it breaks when an entry was altered, and one walk however many ask at once."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.plugins.governance import service as governance_service

from ..conftest import plugin_of


@pytest.fixture
def governed(start_kernel):
    _, kt = start_kernel('[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp"]\n', governance=True)
    return kt, governance_pb2_grpc.GovernanceServiceStub(kt.channel())


def test_the_chain_holds_and_then_says_where_it_breaks(governed):
    kt, stub = governed
    for _ in range(3):
        stub.GetCheckpoint(pb.GetCheckpointRequest())
    verdict = stub.VerifyChain(pb.VerifyChainRequest())
    assert verdict.valid and verdict.checked >= 4 and verdict.broken_at == 0 and not verdict.problem
    kt.run(_flushed(plugin_of(kt, "governance")))
    db = sqlite3.connect(kt.data_dir / "governance" / "audit.db")
    try:
        (body,) = db.execute("SELECT body FROM entries WHERE seq = 2").fetchone()
        db.execute("UPDATE entries SET body = ? WHERE seq = 2", (bytes(body).replace(b"cortex", b"xortex", 1),))
        db.commit()
    finally:
        db.close()
    broken = stub.VerifyChain(pb.VerifyChainRequest())
    assert not broken.valid and broken.broken_at == 2 and broken.checked == 1 and broken.problem


async def _flushed(governance):
    governance.flush()


def test_callers_at_once_share_one_walk(governed, monkeypatch):
    _, stub = governed
    walks = []
    real = governance_service.verify_chain

    def slow_walk(*args, **kwargs):
        walks.append(time.monotonic())
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(governance_service, "verify_chain", slow_walk)
    verdicts = []
    callers = [threading.Thread(target=lambda: verdicts.append(stub.VerifyChain(pb.VerifyChainRequest(), timeout=30)))
               for _ in range(6)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(verdicts) == 6 and all(v.valid for v in verdicts)
    assert len(walks) <= 2  # those that came while a walk ran shared it
    stub.VerifyChain(pb.VerifyChainRequest())
    assert len(walks) >= 2  # a later request walks again: the chain has grown since
