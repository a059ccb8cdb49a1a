"""The approvals store: calls waiting for a person (a rule with effect "ask" matched them), and
how each was decided. SQLite in the governance folder (`<data dir>/governance/approvals.db`, beside
the audit log), so that a pending approval survives a restart of the kernel.

One row per approval; its body is the `Approval` message, and the columns beside it (state,
principal, service, method, request hash, pinned provider, expiry, use) are what the store looks
rows up by. While an approval is pending, a call asking again for exactly the same thing (same
principal, service, method, request hash and pinned provider) gets the same approval: a partial
unique index holds that even for two calls at once. A decided approval is never decided again, and
an approved one is used by one call only (`use`: the call that presents it first; the router
re-authorizes that same call when it fails over to another provider, so the same call id may use
it again), and only until it expires (`expires_unix_nanos`, set on approval to the decision's time
plus the timeout): unused by then, it is EXPIRED, swept as a pending one is.

Bounds: one principal has at most `max_pending` approvals pending at once (`request` refuses the
next with TooMany, storing nothing), and a decided or expired row is deleted RETENTION_S after it
expired (`purge`; the audit log keeps the record of every decision and expiry).

The store holds what a person approves: the request's `summary` and the whole request (its
serialization, for `cortex approvals show`). It is opened through at_rest.connect, so in an
encrypted data dir (`cortex memories encrypt`) it is a SQLCipher database like the others. Neither
ever goes to the audit log: `for_audit` is the copy gate.py hands it, without the summary.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.kernel.sdk import at_rest

DB_FILE = "approvals.db"
SUMMARY_CHARS = 600  # what a person reads to decide (the whole request: GetApproval)
MAX_PENDING = 20  # per principal, by default (`approval_max_pending`)
RETENTION_S = 7 * 24 * 3600.0  # a decided or expired row is kept this long after its expiry
PURGE_EVERY_S = 60.0
PENDING, APPROVED, DENIED, EXPIRED = (
    pb.Approval.STATE_PENDING, pb.Approval.STATE_APPROVED, pb.Approval.STATE_DENIED, pb.Approval.STATE_EXPIRED,
)
STATE_NAMES = {PENDING: "pending", APPROVED: "approved", DENIED: "denied", EXPIRED: "expired"}
# a pending approval, or an approved one not used yet: what expires at expires_ns
LIVE = "(state = 1 OR (state = 2 AND used_by = ''))"


class NotDecidable(Exception):
    """Why an approval cannot be decided (or used); `code` names the gRPC status it is."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def new_id() -> str:
    return "ap-" + secrets.token_hex(8)


class TooMany(NotDecidable):
    """A principal asking for one more approval while `max_pending` of its own wait."""

    def __init__(self, principal: str, waiting: int, ids: list[str], most: int):
        shown = ", ".join(ids) + (", ..." if waiting > len(ids) else "")
        super().__init__("RESOURCE_EXHAUSTED",
                         f"{waiting} approvals of yours are waiting: {shown} (at most {most} per principal, "
                         "`approval_max_pending`): ask again once they are decided or have expired")
        self.principal = principal


def for_audit(approval: pb.Approval) -> pb.Approval:
    """The copy of `approval` that the audit log holds: everything but the request's summary (the
    request's content stays in this store, encrypted with the data dir; the log has its hash)."""
    copy = pb.Approval()
    copy.CopyFrom(approval)
    copy.ClearField("summary")
    return copy


class ApprovalStore:
    """One SQLite database, used from the kernel's event loop (and the CLI never opens it: it asks
    the kernel). `check_same_thread=False` as the audit log's: a hook may run on another thread."""

    def __init__(self, path: Path, data_dir: Path | None = None, max_pending: int = MAX_PENDING,
                 retention_s: float = RETENTION_S):
        self.path, self.max_pending, self.retention_s = path, max_pending, retention_s
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():  # owner-only from its first byte (the requests' contents)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        # SQLCipher when the data dir is encrypted (at_rest.py): its errors are classes of its own
        self.db = at_rest.connect(path, data_dir if data_dir is not None else path.parent.parent,
                                  isolation_level=None, check_same_thread=False)
        self._integrity = at_rest.errors("IntegrityError")
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
            """
        )
        have = {row[1] for row in self.db.execute("PRAGMA table_info(approvals)")}
        for column, kind in (("pinned", "TEXT NOT NULL DEFAULT ''"), ("used_by", "TEXT NOT NULL DEFAULT ''"),
                             ("request_type", "TEXT NOT NULL DEFAULT ''"), ("request", "BLOB")):
            if column not in have:  # (a store made before these were kept)
                self.db.execute(f"ALTER TABLE approvals ADD COLUMN {column} {kind}")
        self.db.executescript(
            """
            DROP INDEX IF EXISTS approvals_one_pending;
            DROP INDEX IF EXISTS approvals_expiry;
            CREATE UNIQUE INDEX IF NOT EXISTS approvals_pending_call
                ON approvals(principal, service, method, request_sha256, pinned) WHERE state = 1;
            CREATE INDEX IF NOT EXISTS approvals_by_expiry ON approvals(expires_ns);
            CREATE INDEX IF NOT EXISTS approvals_by_principal ON approvals(principal, state, requested_ns);
            """
        )
        self._lock = threading.Lock()
        self._purged_at = 0.0

    # -- asking -------------------------------------------------------------------------------------
    def request(self, approval: pb.Approval, timeout_s: float, request_type: str = "",
                request: bytes = b"") -> tuple[pb.Approval, bool]:
        """The pending approval for this call's (principal, service, method, request hash, pinned
        provider): the one waiting already, else `approval` stored as new (with its id and times,
        and the whole request beside it). Returns it and whether it is new. TooMany when its
        principal has `max_pending` approvals pending already."""
        call = approval.call
        key = (call.principal, call.service, call.method, approval.request_sha256, approval.pinned_provider)
        with self._lock:
            existing = self._pending(key)  # (the gate expires what is due first: expiry is audited)
            if existing is not None:
                return existing, False
            waiting = self.db.execute("SELECT count(*) FROM approvals WHERE principal = ? AND state = 1",
                                      (call.principal,)).fetchone()[0]
            if waiting >= self.max_pending:
                ids = [i for (i,) in self.db.execute(
                    "SELECT id FROM approvals WHERE principal = ? AND state = 1 ORDER BY requested_ns LIMIT 5",
                    (call.principal,))]
                raise TooMany(call.principal, waiting, ids, self.max_pending)
            fresh = pb.Approval()
            fresh.CopyFrom(approval)
            now = time.time_ns()
            fresh.id, fresh.state = new_id(), PENDING
            fresh.requested_unix_nanos, fresh.expires_unix_nanos = now, now + int(timeout_s * 1e9)
            try:
                self.db.execute(
                    "INSERT INTO approvals(id, state, principal, service, method, request_sha256, pinned, requested_ns,"
                    " expires_ns, body, request_type, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (fresh.id, PENDING, *key, now, fresh.expires_unix_nanos, fresh.SerializeToString(),
                     request_type, request),
                )
            except self._integrity:  # one pending per call shape (an expired one not yet swept)
                return self._pending(key), False
            return fresh, True

    def _pending(self, key: tuple) -> pb.Approval | None:
        row = self.db.execute(
            "SELECT body FROM approvals WHERE principal = ? AND service = ? AND method = ? AND request_sha256 = ?"
            " AND pinned = ? AND state = 1",
            key,
        ).fetchone()
        return pb.Approval.FromString(row[0]) if row else None

    # -- reading ------------------------------------------------------------------------------------
    def get(self, approval_id: str) -> pb.Approval | None:
        row = self.db.execute("SELECT body FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return pb.Approval.FromString(row[0]) if row else None

    def request_of(self, approval_id: str) -> tuple[str, bytes]:
        """The whole request an approval was asked for: (its message type, its serialization)."""
        row = self.db.execute("SELECT request_type, request FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return (row[0], bytes(row[1] or b"")) if row else ("", b"")

    def principals(self) -> list[str]:
        """Every principal an approval is kept for (for a caller that sees a namespace of several)."""
        return [p for (p,) in self.db.execute("SELECT DISTINCT principal FROM approvals")]

    def list(self, pending_only: bool = False, limit: int = 100, principals: list[str] | None = None,
             after: str = "") -> tuple[list[pb.Approval], str]:
        """The pending first, then the others, each newest first; only those of `principals` when
        given (None: everyone's). `after` is the token a previous page returned; returns the page and
        the token of the next one ('' at the end)."""
        where, args = ["(state = 1 OR NOT ?)"], [pending_only]
        if principals is not None:
            if not principals:
                return [], ""
            where.append(f"principal IN ({', '.join('?' * len(principals))})")
            args += principals
        if after:
            try:
                pending, requested, after_id = after.split(":", 2)
                position = (int(pending), int(requested), after_id)
            except ValueError:
                raise NotDecidable("INVALID_ARGUMENT", f"page_token {after!r} is not one this kernel gave") from None
            where.append("(state = 1, requested_ns, id) < (?, ?, ?)")
            args += position
        rows = self.db.execute(
            f"SELECT state = 1, requested_ns, id, body FROM approvals WHERE {' AND '.join(where)} "  # noqa: S608 - placeholders only
            "ORDER BY state = 1 DESC, requested_ns DESC, id DESC LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        page = [pb.Approval.FromString(body) for *_, body in rows[:limit]]
        token = f"{rows[limit - 1][0]}:{rows[limit - 1][1]}:{rows[limit - 1][2]}" if len(rows) > limit else ""
        return page, token

    def next_expiry(self) -> int | None:
        """When the next pending (or approved, unused) approval expires (unix nanos), if any."""
        row = self.db.execute(f"SELECT MIN(expires_ns) FROM approvals WHERE {LIVE}").fetchone()  # noqa: S608
        return row[0] if row and row[0] is not None else None

    # -- deciding -----------------------------------------------------------------------------------
    def decide(self, approval_id: str, approve: bool, by: str, note: str,
               audit: Callable[[pb.Approval], None] = lambda approval: None, use_within_s: float = 300.0) -> pb.Approval:
        """Approve or deny a pending approval; NotDecidable when it is unknown or decided already.
        An approval approved may be used for `use_within_s` from now (its new expiry). `audit`
        records the decision first: one the audit log cannot hold is not made."""
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
            if approve:
                approval.expires_unix_nanos = approval.decided_unix_nanos + int(use_within_s * 1e9)
            audit(approval)
            self._save(approval)
            return approval

    def expire_due(self, audit: Callable[[list[pb.Approval]], None] = lambda expired: None) -> list[pb.Approval]:
        """Expire every pending approval past its time (denied), and every approved one not used
        by then, recorded by `audit` first; returns them. Purges old rows, once a minute at most."""
        now_ns = time.time_ns()
        with self._lock:
            rows = self.db.execute(f"SELECT body FROM approvals WHERE {LIVE} AND expires_ns <= ?",  # noqa: S608
                                   (now_ns,)).fetchall()
            expired = []
            for (body,) in rows:
                approval = pb.Approval.FromString(body)
                if approval.state == PENDING:  # (an approved one keeps who approved it, and when)
                    approval.decided_unix_nanos = now_ns
                approval.state = EXPIRED
                expired.append(approval)
            if expired:
                audit(expired)
                with self.db:  # one transaction
                    self.db.execute("BEGIN")
                    for approval in expired:
                        self._save(approval)
            if time.monotonic() - self._purged_at >= PURGE_EVERY_S:
                self.purge(now_ns)
            return expired

    def purge(self, now_ns: int | None = None) -> int:
        """Delete the decided and expired approvals that expired more than `retention_s` ago (the
        audit log keeps their record); returns how many."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        self._purged_at = time.monotonic()
        gone = self.db.execute(f"DELETE FROM approvals WHERE NOT {LIVE} AND expires_ns < ?",  # noqa: S608
                               (now_ns - int(self.retention_s * 1e9),))
        return gone.rowcount

    def use(self, approval_id: str, call_id: str) -> pb.Approval:
        """Mark an approved approval used by `call_id` (once: the same call again is allowed, a
        failover re-authorizes it), and return it. NotDecidable when another call used it, or it
        expired before any did."""
        with self._lock:
            approval = self.get(approval_id)
            if approval is None or approval.state != APPROVED:
                raise NotDecidable("FAILED_PRECONDITION", f"approval {approval_id} is not approved")
            if approval.used_by_call_id and approval.used_by_call_id != call_id:
                raise NotDecidable("PERMISSION_DENIED",
                                   f"approval {approval_id} was used already, by call {approval.used_by_call_id}: "
                                   "an approval lets one call through; the call asks again for a new one")
            if not approval.used_by_call_id:
                if approval.expires_unix_nanos <= time.time_ns():
                    raise NotDecidable("PERMISSION_DENIED",
                                       f"approval {approval_id} expired unused: an approval lets its call through "
                                       "until it expires; the call asks again for a new one")
                approval.used_by_call_id = call_id
                self._save(approval)
            return approval

    def _save(self, approval: pb.Approval) -> None:
        self.db.execute("UPDATE approvals SET state = ?, expires_ns = ?, used_by = ?, body = ? WHERE id = ?",
                        (approval.state, approval.expires_unix_nanos, approval.used_by_call_id,
                         approval.SerializeToString(), approval.id))

    def close(self) -> None:
        self.db.close()
