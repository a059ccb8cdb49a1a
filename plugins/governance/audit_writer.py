"""The audit writer: what the observe hook records reaches the audit log in batches.

Calls queue their entries and go on; everything queued is appended in one transaction (chain.py)
as soon as the event loop has nothing else ready, and at the latest `batch_ms` after the first of
the batch (or at once when `batch_entries` are waiting). So a lone call's entry is written while
its caller reads the answer (no latency added), and under load many calls share a commit. The
tree head is signed `sign_ms` after the first append it does not cover (one signature for every
append in that window: signing was a third of an append's cost), at once when someone reads the
log (`flush`) or a policy changes (`record`), and at close; `sign_ms = 0` signs with every append.
It runs on the event loop, between calls: a writer thread was measured and lost (it contends for
the GIL with the loop on every call), and so did a fixed delay (a write then lands in the middle
of a later call).

A write that fails puts its entries back at the front of the queue, in order, and sets
`failure`: the governance plugin refuses every call (UNAVAILABLE) until a write succeeds, so no
call goes unrecorded; a signature that fails does the same until a signature succeeds (tried
again every `sign_ms`). A kill -9 loses at most the queued batch, never the log's consistency.
Readers (GovernanceService) call `flush(sign=True)` first, so that what was observed is in the
log, under a signed head, before anyone reads it. The lock keeps a reader's flush and a policy
change's `record` from interleaving with a batch, should either come from another thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

import structlog

from cortex.contracts.governance.v1 import governance_pb2 as pb

from .chain import AuditChain

log = structlog.get_logger("cortex.governance")

SIGN_MS = 1000  # how long a written entry may wait for a signed tree head, by default
MAX_SIGN_MS = 10_000  # and at most (`cortex proofs verify` waits as long, and a second, for a live kernel's head)


class AuditWriter:
    def __init__(
        self,
        chain: AuditChain,
        *,
        batch_ms: float = 5,
        batch_entries: int = 512,
        sign_ms: float = SIGN_MS,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 10,
        announce: Callable[[pb.Checkpoint], None] = lambda checkpoint: None,
    ):
        self.chain = chain
        self.failure = ""  # why the log cannot be written, while it cannot
        self._batch_s = batch_ms / 1000
        self._batch_entries = batch_entries
        self._sign_s = sign_ms / 1000
        self._signing: asyncio.TimerHandle | None = None  # the signature due, while one is, and its loop
        self._signing_loop: asyncio.AbstractEventLoop | None = None
        self._checkpoint_every = checkpoint_every
        self._checkpoint_seconds = checkpoint_seconds
        self._checkpointed_at = time.monotonic()
        self._announce = announce
        self._queue: deque[pb.AuditEntry] = deque()  # appends and pops are atomic across threads
        self._lock = threading.Lock()  # one append at a time, whichever thread asks
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline = 0.0
        self.writes = self.written = 0  # appends, and entries in them: their ratio is the batch size

    def add(self, entries: list[pb.AuditEntry]) -> None:
        """Queue a call's entries (together: another call's never come between them)."""
        self._queue.extend(entries)
        if len(self._queue) >= self._batch_entries:
            self.flush()
            return
        if self._scheduled:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a direct call): write now
            self.flush()
            return
        self._scheduled = True
        self._deadline = self._loop.time() + self._batch_s
        self._loop.call_soon(self._write_when_idle)

    def _write_when_idle(self) -> None:
        """Write once the loop has nothing else ready (a lone call's entries are written while
        its caller reads the answer), or at the batch's deadline while calls keep coming."""
        ready = getattr(self._loop, "_ready", None)  # asyncio's own loop; another loop: the deadline alone
        busy = len(ready) if ready is not None else 1
        if busy and self._loop.time() < self._deadline and len(self._queue) < self._batch_entries:
            if ready is not None:
                self._loop.call_soon(self._write_when_idle)
            else:
                self._loop.call_at(self._deadline, self._write_when_idle)
            return
        self._scheduled = False
        self.flush()

    def flush(self, *, sign: bool = False) -> None:
        """Append everything queued now, in this thread; with `sign`, sign the head at once too
        (a reader's flush: what it reads is covered)."""
        with self._lock:
            if self._queue:
                batch = [self._queue.popleft() for _ in range(len(self._queue))]
                try:
                    self.chain.append(batch, sign=self._sign_s == 0)
                except Exception as exc:  # noqa: BLE001 - any failure to record: fail closed, say why
                    self._queue.extendleft(reversed(batch))
                    self._failed("governance.audit_write_failed", "the audit log cannot be written", exc)
                    return
                self.writes, self.written = self.writes + 1, self.written + len(batch)
            if sign or self.failure or self._checkpoint_due():  # (failing: recovered once a signature succeeds)
                self._sign()
            elif self.chain.unsigned:
                self._sign_later()
            try:  # (the log is written and signed: keeping a checkpoint is extra)
                kept = self.chain.checkpoint() if self._checkpoint_due() and not self.failure else None
            except Exception as exc:  # noqa: BLE001 - the next due checkpoint tries again
                log.error("governance.checkpoint_failed", error=repr(exc))
                kept = None
        if kept is not None:
            self._checkpointed_at = time.monotonic()
            if self._loop is not None and self._loop.is_running():
                self._loop.call_soon_threadsafe(self._announce, kept)
            else:
                self._announce(kept)

    def record(self, entries: list[pb.AuditEntry]) -> list[pb.AuditEntry]:
        """Append `entries` now, after everything queued (a policy change), under a signed head, and
        return them completed."""
        with self._lock:
            queued = [self._queue.popleft() for _ in range(len(self._queue))]
            try:
                self.chain.append([*queued, *entries])
            except Exception:
                self._queue.extendleft(reversed(queued))
                raise
            return entries

    def _sign(self) -> None:
        """Sign the head now (under the lock); a failure refuses calls until a signature succeeds."""
        if self._signing is not None:
            self._signing.cancel()
            self._signing = None
        try:
            self.chain.sign()
        except Exception as exc:  # noqa: BLE001 - any failure to sign: fail closed, say why, try again
            self._failed("governance.audit_sign_failed", "the audit log's tree head cannot be signed", exc)
            self._sign_later(now_without_loop=False)  # (without a loop: the next flush tries again)
            return
        if self.failure and not self._queue:  # everything is written and signed again
            log.info("governance.audit_recovered")
            self.failure = ""

    def _sign_later(self, now_without_loop: bool = True) -> None:
        """Sign `sign_ms` from now, on the event loop; with none running, now (a signature due on a
        loop that has since stopped would never come)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if now_without_loop:
                self._sign()
            return
        if self._signing is None or self._signing_loop is not loop:
            self._signing, self._signing_loop = loop.call_later(self._sign_s, self._signed_later), loop

    def _signed_later(self) -> None:
        with self._lock:
            self._signing = None
            self._sign()

    def _failed(self, event: str, what: str, exc: Exception) -> None:
        if not self.failure:
            log.error(event, error=repr(exc), queued=len(self._queue))
        self.failure = f"{what} ({type(exc).__name__}: {exc})"

    def _checkpoint_due(self) -> bool:
        grown = self.chain.frontier.size - self.chain.checkpointed_size
        waited = time.monotonic() - self._checkpointed_at >= self._checkpoint_seconds
        return grown >= self._checkpoint_every or (grown > 0 and waited)

    def close(self) -> None:
        """Write what is queued, sign it, keep the log's last head as a checkpoint, and close the log."""
        self.flush(sign=True)
        log.info("governance.audit_closed", appends=self.writes, entries=self.written, head=self.chain.head_seq)
        with self._lock:
            if self._signing is not None:
                self._signing.cancel()
                self._signing = None
            if not self.failure:
                self.chain.checkpoint()
            self.chain.close()
