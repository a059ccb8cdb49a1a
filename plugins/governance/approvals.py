"""The approvals store: calls waiting for a person (a rule with effect "ask" matched them), and
how each was decided. SQLite in the governance folder (`<data dir>/governance/approvals.db`, beside
the audit log), so that a pending approval survives a restart of the kernel.

One row per approval; its body is the `Approval` message, and the columns beside it (state,
principal, service, method, request hash, expiry) are what the store looks rows up by. While an
approval is pending, a call asking again for exactly the same thing (same principal, service,
method and request hash) gets the same approval: a partial unique index holds that even for two
calls at once. A decided approval is never decided again, and an approved one is used by one call
only (`use`: the call that presents it first; the router re-authorizes that same call when it
fails over to another provider, so the same call id may use it again).

The store is plain SQLite, not encrypted: it holds the request's `summary`, which is what a person
approves. It is kept short (SUMMARY_CHARS) for that reason; the request itself is never stored, only
its SHA-256. Nothing here writes the audit log: gate.py does, for every decision and expiry.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cortex.contracts.governance.v1 import governance_pb2 as pb

DB_FILE = "approvals.db"
SUMMARY_CHARS = 600  # what a person reads to decide; no more of the request is kept
PENDING, APPROVED, DENIED, EXPIRED = (
    pb.Approval.STATE_PENDING, pb.Approval.STATE_APPROVED, pb.Approval.STATE_DENIED, pb.Approval.STATE_EXPIRED,
)
STATE_NAMES = {PENDING: "pending", APPROVED: "approved", DENIED: "denied", EXPIRED: "expired"}


class NotDecidable(Exception):
    """Why an approval cannot be decided (or used); `code` names the gRPC status it is."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def new_id() -> str:
    return "ap-" + secrets.token_hex(8)


class ApprovalStore:
    """One SQLite database, used from the kernel's event loop (and the CLI never opens it: it asks
    the kernel). `check_same_thread=False` as the audit log's: a hook may run on another thread."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():  # owner-only from its first byte (the summaries are requests' contents)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS approvals (
                id TEXT PRIMARY KEY,
                state INTEGER NOT NULL,
                principal TEXT NOT NULL,
                service TEXT NOT NULL,
                method TEXT NOT NULL,
                request_sha256 BLOB NOT NULL,
                requested_ns INTEGER NOT NULL,
                expires_ns INTEGER NOT NULL,
                body BLOB NOT NULL
            );
            CREATE UNIQUE INDEX IF NOT EXISTS approvals_one_pending
                ON approvals(principal, service, method, request_sha256) WHERE state = 1;
            CREATE INDEX IF NOT EXISTS approvals_expiry ON approvals(expires_ns) WHERE state = 1;
            """
        )
        self._lock = threading.Lock()

    # -- asking -------------------------------------------------------------------------------------
    def request(self, approval: pb.Approval, timeout_s: float) -> tuple[pb.Approval, bool]:
        """The pending approval for this call's (principal, service, method, request hash): the
        one waiting already, else `approval` stored as new (with its id and times). Returns it and
        whether it is new."""
        call = approval.call
        key = (call.principal, call.service, call.method, approval.request_sha256)
        with self._lock:
            existing = self._pending(key)  # (the gate expires what is due first: expiry is audited)
            if existing is not None:
                return existing, False
            fresh = pb.Approval()
            fresh.CopyFrom(approval)
            now = time.time_ns()
            fresh.id, fresh.state = new_id(), PENDING
            fresh.summary = fresh.summary[:SUMMARY_CHARS]
            fresh.requested_unix_nanos, fresh.expires_unix_nanos = now, now + int(timeout_s * 1e9)
            try:
                self.db.execute(
                    "INSERT INTO approvals(id, state, principal, service, method, request_sha256, requested_ns, expires_ns, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (fresh.id, PENDING, *key, now, fresh.expires_unix_nanos, fresh.SerializeToString()),
                )
            except sqlite3.IntegrityError:  # one pending per call shape (an expired one not yet swept)
                return self._pending(key), False
            return fresh, True

    def _pending(self, key: tuple) -> pb.Approval | None:
        row = self.db.execute(
            "SELECT body FROM approvals WHERE principal = ? AND service = ? AND method = ? AND request_sha256 = ? AND state = 1",
            key,
        ).fetchone()
        return pb.Approval.FromString(row[0]) if row else None

    # -- reading ------------------------------------------------------------------------------------
    def get(self, approval_id: str) -> pb.Approval | None:
        row = self.db.execute("SELECT body FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return pb.Approval.FromString(row[0]) if row else None

    def list(self, pending_only: bool = False, limit: int = 100) -> list[pb.Approval]:
        """Pending first (oldest first: who has waited longest), then the decided, newest first."""
        rows = self.db.execute(
            "SELECT body FROM approvals WHERE state = 1 OR NOT ? "
            "ORDER BY state = 1 DESC, CASE WHEN state = 1 THEN requested_ns ELSE -requested_ns END LIMIT ?",
            (pending_only, limit),
        )
        return [pb.Approval.FromString(b) for (b,) in rows]

    def next_expiry(self) -> int | None:
        """When the next pending approval expires (unix nanos), if any is pending."""
        row = self.db.execute("SELECT MIN(expires_ns) FROM approvals WHERE state = 1").fetchone()
        return row[0] if row and row[0] is not None else None

    # -- deciding -----------------------------------------------------------------------------------
    def decide(self, approval_id: str, approve: bool, by: str, note: str,
               audit: Callable[[pb.Approval], None] = lambda approval: None) -> pb.Approval:
        """Approve or deny a pending approval; NotDecidable when it is unknown or decided already.
        `audit` records the decision first: one the audit log cannot hold is not made."""
        with self._lock:
            approval = self.get(approval_id)
            if approval is None:
                raise NotDecidable("NOT_FOUND", f"no approval {approval_id!r}; `cortex approvals list` shows them")
            if approval.state != PENDING or approval.expires_unix_nanos <= time.time_ns():
                state = STATE_NAMES.get(approval.state, "?") if approval.state != PENDING else "expired"
                by_whom = f" by {approval.decided_by}" if approval.decided_by else ""
                raise NotDecidable("FAILED_PRECONDITION",
                                   f"approval {approval_id} is {state}{by_whom} already: a decision is final")
            approval.state = APPROVED if approve else DENIED
            approval.decided_by, approval.note, approval.decided_unix_nanos = by, note, time.time_ns()
            audit(approval)
            self._save(approval)
            return approval

    def expire_due(self, audit: Callable[[list[pb.Approval]], None] = lambda expired: None) -> list[pb.Approval]:
        """Expire (deny) every pending approval past its time, recorded by `audit` first; returns them."""
        now_ns = time.time_ns()
        with self._lock:
            rows = self.db.execute("SELECT body FROM approvals WHERE state = 1 AND expires_ns <= ?", (now_ns,)).fetchall()
            expired = []
            for (body,) in rows:
                approval = pb.Approval.FromString(body)
                approval.state, approval.decided_unix_nanos = EXPIRED, now_ns
                expired.append(approval)
            if expired:
                audit(expired)
                with self.db:  # one transaction
                    self.db.execute("BEGIN")
                    for approval in expired:
                        self._save(approval)
            return expired

    def use(self, approval_id: str, call_id: str) -> pb.Approval:
        """Mark an approved approval used by `call_id` (once: the same call again is allowed, a
        failover re-authorizes it), and return it. NotDecidable when another call used it."""
        with self._lock:
            approval = self.get(approval_id)
            if approval is None or approval.state != APPROVED:
                raise NotDecidable("FAILED_PRECONDITION", f"approval {approval_id} is not approved")
            if approval.used_by_call_id and approval.used_by_call_id != call_id:
                raise NotDecidable("PERMISSION_DENIED",
                                   f"approval {approval_id} was used already, by call {approval.used_by_call_id}: "
                                   "an approval lets one call through; the call asks again for a new one")
            if not approval.used_by_call_id:
                approval.used_by_call_id = call_id
                self._save(approval)
            return approval

    def _save(self, approval: pb.Approval) -> None:
        self.db.execute("UPDATE approvals SET state = ?, body = ? WHERE id = ?",
                        (approval.state, approval.SerializeToString(), approval.id))

    def close(self) -> None:
        self.db.close()
