"""Tree heads are signed on a timer, not with every append: within `sign_ms` of the first entry a
head does not cover, at once for a reader or a policy change, and at stop. What that window must
not open: an offline verifier that waits for a running kernel's head and then calls a tail no head
signs what it is; a kernel killed inside the window that checks its unsigned tail before signing
it; a head rolled back in the file that hides nothing from the kernel's own verify; a signature
that fails, failing calls closed until one succeeds."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from cortex.plugins.governance.audit_writer import AuditWriter
from cortex.plugins.governance.chain import AuditChain, ChainError, load_or_create_key, verify_chain

from .test_checkpoints import rewrite_a_proof
from .test_tree_log import fill, proof_entry


def count_signatures(chain, monkeypatch) -> list[int]:
    signed: list[int] = []
    real = chain._sign_head

    def counted():
        signed.append(chain.frontier.size)
        return real()

    monkeypatch.setattr(chain, "_sign_head", counted)
    return signed


def test_appends_within_sign_ms_share_one_signed_head(chain, monkeypatch):
    signed = count_signatures(chain, monkeypatch)
    writer = AuditWriter(chain, sign_ms=300)

    async def calls():
        for i in range(5):  # five appends, the loop idle between them
            writer.add([proof_entry(i)])
            await asyncio.sleep(0.02)
        assert (writer.writes, chain.unsigned, signed) == (5, 5, [])
        # inside the window the newest entries are written, linked, and not yet signed
        strict = verify_chain(chain.path)
        assert not strict.ok and strict.unsigned == 5
        assert "entries 2 to 6 are signed by no head (added without the key, or written by a kernel killed" in strict.problem
        pending = verify_chain(chain.path, unsigned_ok=True, checkpoints=[chain.head])
        assert pending.ok and pending.unsigned == 5 and "the newest 5 link and hash as written" in str(pending)
        await asyncio.sleep(0.45)

    asyncio.run(calls())
    assert signed == [6] and chain.unsigned == 0 and chain.stored_head() == chain.head
    assert str(verify_chain(chain.path)) == "OK: 6 entries verified"


def test_sign_ms_0_signs_every_append_and_a_reader_gets_a_head_at_once(chain, monkeypatch):
    signed = count_signatures(chain, monkeypatch)
    every = AuditWriter(chain, sign_ms=0)
    every.add([proof_entry(0)])  # (no loop: written at once)
    every.add([proof_entry(1)])
    assert signed == [2, 3] and chain.unsigned == 0

    windowed = AuditWriter(chain, sign_ms=10_000)

    async def read_after_a_call():
        windowed.add([proof_entry(2)])
        await asyncio.sleep(0.02)
        assert chain.unsigned == 1
        windowed.flush(sign=True)  # what GovernanceService does before it reads
        assert chain.unsigned == 0 and chain.head.size == 4

    asyncio.run(read_after_a_call())
    assert signed == [2, 3, 4]


def test_a_kernel_killed_inside_the_window_checks_its_tail_then_signs_it(tmp_path):
    folder = tmp_path / "governance"
    key = load_or_create_key(folder)
    chain = AuditChain(folder / "audit.db", key)
    chain.append([proof_entry(i) for i in range(3)], sign=False)
    chain.close()  # as a kill -9 leaves it: three entries written, no head over them
    assert verify_chain(folder / "audit.db").unsigned == 3

    again = AuditChain(folder / "audit.db", key)
    assert again.unsigned == 0 and again.head.size == 4 and again.head == again.stored_head()
    again.append([proof_entry(3)], sign=False)
    again.close()
    assert verify_chain(folder / "audit.db", wait_s=0.2).unsigned == 1

    db = sqlite3.connect(folder / "audit.db")  # the unsigned entry altered while the kernel was down
    body = db.execute("SELECT body FROM entries WHERE seq = 5").fetchone()[0]
    db.execute("UPDATE entries SET body = ? WHERE seq = 5", (body.replace(b"c3", b"c9"),))
    db.commit()
    db.close()
    with pytest.raises(ChainError, match=r"entry 5, written after the newest signed tree head \(4 entries\), does not hash"):
        AuditChain(folder / "audit.db", key)


def test_verify_waits_for_a_running_kernels_head_and_not_longer(chain):
    chain.append([proof_entry(0)], sign=False)
    signer = threading.Timer(0.2, chain.sign)  # the kernel's timer, while the verifier waits
    signer.start()
    started = time.monotonic()
    assert verify_chain(chain.path, wait_s=3).ok
    assert time.monotonic() - started < 2
    signer.join()

    chain.append([proof_entry(1)], sign=False)  # nobody signs this one
    started = time.monotonic()
    verdict = verify_chain(chain.path, wait_s=0.3)
    assert not verdict.ok and verdict.seq == 3 and "entry 3 is signed by no head" in verdict.problem
    assert time.monotonic() - started >= 0.3


def test_a_head_rolled_back_in_the_file_hides_no_rewrite(chain):
    fill(chain, 20)
    old_head = chain.db.execute("SELECT body, frontier FROM tree_head").fetchone()
    fill(chain, 20)
    held = chain.head  # what the running kernel signed last, in its memory
    # without the key: put an older (genuinely signed) head back, and rewrite an entry after it,
    # re-hashing and re-linking everything after: every entry past the old head looks "not yet signed"
    db = sqlite3.connect(chain.path)
    db.execute("UPDATE tree_head SET body = ?, frontier = ?", old_head)
    rewrite_a_proof(db, None, after=25)
    db.close()
    offline = verify_chain(chain.path, wait_s=0.2)
    assert not offline.ok and "are signed by no head" in offline.problem
    kernels = verify_chain(chain.path, checkpoints=[held], unsigned_ok=True)  # GovernanceService/VerifyChain
    assert not kernels.ok and "no longer have the Merkle root the checkpoint you gave signed" in kernels.problem


def test_a_signature_that_fails_fails_calls_closed_until_one_succeeds(chain, monkeypatch):
    writer = AuditWriter(chain, sign_ms=50)
    real = chain._sign_head
    broken = True

    def sign():
        if broken:
            raise OSError("disk full")
        return real()

    monkeypatch.setattr(chain, "_sign_head", sign)

    async def calls():
        nonlocal broken
        writer.add([proof_entry(0)])
        await asyncio.sleep(0.15)
        assert writer.failure == "the audit log's tree head cannot be signed (OSError: disk full)"
        assert chain.unsigned == 1  # written, and kept: nothing is lost
        broken = False
        await asyncio.sleep(0.15)  # tried again on the timer
        assert writer.failure == "" and chain.unsigned == 0

    asyncio.run(calls())
    assert verify_chain(chain.path).ok


@pytest.mark.parametrize("value", ["-1", "10001", "true", '"1s"'])
def test_sign_ms_out_of_range_is_refused(start_kernel, value):
    with pytest.raises(Exception, match="sign_ms must be a number of milliseconds from 0"):
        start_kernel(f"[plugins.governance]\nsign_ms = {value}\n", governance=True)
