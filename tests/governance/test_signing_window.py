"""Tree heads are signed on a timer, not with every append: within `sign_ms` of the first entry a
head does not cover, at once for a reader or a policy change, and at stop. What that window must
not open: an offline verifier that waits for a running kernel's head (under steady load too) and
then calls a tail no head signs what it is; a kernel killed inside the window that signs its tail
at start only if its tail tag says it wrote exactly that tail (not a tail added, edited, or
rewritten and re-hashed without the key); a head rolled back in the file, or an entry forged past
the kernel's head, that its own verify does not vouch for; a swapped key that signs nothing; a
signature that fails, failing calls closed until one succeeds."""

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
        pending = verify_chain(chain.path, signed_through=chain.head.size, checkpoints=[chain.head])
        assert str(pending) == "OK: 1 entries verified; 5 written since wait for the kernel's next signed tree head"
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
    kernels = verify_chain(chain.path, checkpoints=[held], signed_through=held.size)  # GovernanceService/VerifyChain
    assert not kernels.ok and "entries 22 to 41 are signed by no head" in kernels.problem


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


def test_verify_of_a_kernel_under_steady_load_passes(chain):
    """New entries keep coming after every head: what the first walk saw must be signed, and what
    came since may wait."""
    chain.append([proof_entry(0)], sign=False)
    stop = threading.Event()

    def kernel():  # an append every 5 ms, a head every 100 ms
        i = 1
        while not stop.is_set():
            chain.append([proof_entry(i)], sign=False)
            if i % 20 == 0:
                chain.sign()
            i += 1
            time.sleep(0.005)

    writer = threading.Thread(target=kernel)
    writer.start()
    try:
        verdicts = [verify_chain(chain.path, wait_s=1.0) for _ in range(3)]
    finally:
        stop.set()
        writer.join()
    assert all(v.ok for v in verdicts), [str(v) for v in verdicts]


def killed_with_an_unsigned_tail(tmp_path, entries: int = 3):
    folder = tmp_path / "governance"
    key = load_or_create_key(folder)
    chain = AuditChain(folder / "audit.db", key)
    chain.append([proof_entry(i) for i in range(entries)], sign=False)
    chain.close()
    return folder / "audit.db", key


def test_a_tail_rewritten_and_rehashed_without_the_key_is_not_signed_at_start(tmp_path):
    path, key = killed_with_an_unsigned_tail(tmp_path)
    db = sqlite3.connect(path)
    rewrite_a_proof(db, None, after=1)  # entries 2..4 re-hashed and re-linked: they verify as written
    db.close()
    with pytest.raises(ChainError, match="entries 2 to 4, written after the newest signed tree head, are not the ones"):
        AuditChain(path, key)
    assert verify_chain(path).unsigned == 3  # nothing was signed


def test_an_entry_forged_past_a_live_kernels_head_is_never_vouched_for(tmp_path):
    path, key = killed_with_an_unsigned_tail(tmp_path, 0)
    chain = AuditChain(path, key)
    chain.append([proof_entry(0)])
    forged = proof_entry(1)
    forged.seq, forged.prev_hash = 3, chain.head_hash
    from cortex.plugins.governance.chain import entry_hash

    forged.hash = entry_hash(forged)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO entries(seq, kind, call_id, body, hash) VALUES (3, 'proof', 'c1', ?, ?)",
               (forged.SerializeToString(), forged.hash))
    db.commit()
    db.close()
    chain.sign()  # what GovernanceService/VerifyChain does first: the kernel's head, without the forged entry
    verdict = verify_chain(path, checkpoints=[chain.head], signed_through=chain.head.size)
    assert verdict.ok and (verdict.checked, verdict.unsigned) == (2, 1)  # not counted as verified
    with pytest.raises(sqlite3.IntegrityError):  # the kernel's next append cannot go past it: calls fail closed
        chain.append([proof_entry(2)], sign=False)
    chain.close()
    with pytest.raises(ChainError, match="entries 3 to 3, written after the newest signed tree head, are not the ones"):
        AuditChain(path, key)


def test_a_swapped_key_signs_nothing_before_it_is_refused(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path, _ = killed_with_an_unsigned_tail(tmp_path)
    before = sqlite3.connect(path).execute("SELECT body FROM tree_head").fetchone()
    with pytest.raises(ChainError, match="is not the key this audit chain was started with"):
        AuditChain(path, Ed25519PrivateKey.generate())
    assert sqlite3.connect(path).execute("SELECT body FROM tree_head").fetchone() == before


def test_a_signature_that_fails_without_a_loop_waits_for_the_next_flush(chain, monkeypatch):
    writer = AuditWriter(chain, sign_ms=50)

    def refuse():
        raise OSError("disk full")

    monkeypatch.setattr(chain, "_sign_head", refuse)
    writer.add([proof_entry(0)])  # (no loop: written, and signing now fails)
    assert writer.failure.startswith("the audit log's tree head cannot be signed") and chain.unsigned == 1
    writer.flush(sign=True)  # tried again, once: no retry loop without an event loop
    monkeypatch.undo()
    writer.flush(sign=True)
    assert writer.failure == "" and chain.unsigned == 0
