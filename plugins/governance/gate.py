"""Approval gates: what a call that a rule with effect "ask" matched gets, and how a person's
decision reaches it.

A call without an approval is refused whole with FAILED_PRECONDITION, the approval's id in its
`x-cortex-approval` trailer (the kernel's Decision.approval), and waits in the store
(approvals.py) as pending, the same approval for the same call asked again. An admin approves or
denies it (DecideApproval: `cortex approvals approve ID`, the console); the same call retried with
`x-cortex-approval: ID` then proceeds when the approval is approved, matches it (principal,
service, method, request hash) and was not used by another call; its proof carries the approval.
Nobody deciding within `approval_timeout_seconds` expires it: denied; an approved one not used
within as long after its approval expires too. Every decision and every expiry is an `approval`
entry of the audit log, written before the store changes, so what the store says was decided the
log proves; the log's copy (and the proof's) has no summary: the request's content stays in the
store, encrypted with the data dir.

What the person sees (`summary_of`) is the request's fields in the contract's order, each long one
shortened so that every field shows, with the provider the call was about to reach (local or
remote); past SUMMARY_CHARS it says how many fields it left out, and GetApproval (`cortex approvals
show ID`) has the whole request. An approval binds the pinned provider (x-cortex-provider) of the
call that asked, and one asked for a local provider does not let the call through to a remote one.
A principal has at most `approval_max_pending` approvals waiting: past them a call is refused with
RESOURCE_EXHAUSTED, and nothing is stored.

Waiting (WaitApproval, a plan step) is on an asyncio.Event per approval, set when it is decided or
expires; a sweeper task expires what is due at its time, so waiters and the log hear of an
expiry when it happens, not when someone next looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog
from google.protobuf import json_format

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.kernel import APPROVAL_HEADER, PROVIDER_HEADER, Decision

from .approvals import APPROVED, EXPIRED, PENDING, SUMMARY_CHARS, ApprovalStore, NotDecidable, TooMany, for_audit

log = structlog.get_logger("cortex.governance")

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
SWEEP_AT_MOST_S = 60.0
FIELD_AT_LEAST = 24  # a shortened field keeps this many characters at least; past that, fields are left out


def when(unix_nanos: int) -> str:
    return dt.datetime.fromtimestamp(unix_nanos / 1e9, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def route_of(description: pb.CallDescription, pinned: str = "") -> str:
    """Where the call was about to go, as the person reads it: "to counter (local)"."""
    if not description.provider:
        return ""
    where = "local" if description.provider_local else "REMOTE"
    return f"to {description.provider} ({where}{', pinned' if pinned else ''}) "


def summary_of(request: Any, route: str = "") -> tuple[str, bool]:
    """The request as a person reads it, at most SUMMARY_CHARS: its fields in the contract's order
    (field numbers), each long one shortened so that the others still show (a field padded long
    hides nothing after it), and "(truncated: N fields not shown)" when even that does not fit.
    Returns it and whether it leaves anything out (GetApproval has the whole request)."""
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return route.strip(), False
    values = json_format.MessageToDict(request, preserving_proto_field_name=True)
    fields = [(f'"{f.name}": ', json.dumps(values[f.name], ensure_ascii=False, sort_keys=True))
              for f in sorted(request.DESCRIPTOR.fields, key=lambda f: f.number) if f.name in values]
    mark = " (truncated: {} fields not shown)"
    budget = SUMMARY_CHARS - len(route) - 2 - len(mark) - 4  # braces, the mark with its count
    shown, hidden = list(fields), 0
    while shown and sum(len(name) + 2 + min(len(value), FIELD_AT_LEAST) for name, value in shown) > budget:
        shown.pop()  # (the last fields, by number, go first when even the shortest shortening is too long)
        hidden += 1
    room = budget - sum(len(name) + 2 for name, _ in shown)
    cap = _cap([len(value) for _, value in shown], room)
    shortened = any(len(value) > cap for _, value in shown)
    text = ", ".join(name + (value if len(value) <= cap else value[: cap - 1] + "…") for name, value in shown)
    summary = f"{route}{{{text}}}"
    if hidden:
        summary += mark.format(hidden)
    elif shortened:
        summary += " (truncated: long fields shortened)"
    return summary, bool(hidden or shortened)


def _cap(lengths: list[int], room: int) -> int:
    """The largest length each value may keep so that all of them fit in `room` (those shorter
    keep theirs): the shortening falls on the long ones only."""
    if sum(lengths) <= room:
        return max(lengths, default=0)
    low, high = FIELD_AT_LEAST, max(lengths)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= room:
            low = mid
        else:
            high = mid - 1
    return low


def decided_text(approval: pb.Approval) -> str:
    if approval.state == EXPIRED and approval.decided_by:
        return (f"approval {approval.id} was approved by {approval.decided_by} at {when(approval.decided_unix_nanos)} "
                f"but expired unused at {when(approval.expires_unix_nanos)}: an approval lets its call through only "
                "until it expires; retry without it to ask again")
    if approval.state == EXPIRED:
        return f"approval {approval.id} expired at {when(approval.decided_unix_nanos)}: nobody decided in time, so it is denied"
    note = f" ({approval.note})" if approval.note else ""
    return f"approval {approval.id} was denied by {approval.decided_by} at {when(approval.decided_unix_nanos)}{note}"


class ApprovalGate:
    def __init__(self, store: ApprovalStore, timeout_s: float, record: Callable[[list[pb.AuditEntry]], Any]):
        self.store, self.timeout_s, self._record = store, timeout_s, record
        self._events: dict[str, asyncio.Event] = {}  # waiters, by approval id
        self._proofs: dict[str, pb.Approval] = {}  # call id -> the approval its proof carries
        self._wake: asyncio.Event | None = None
        self._sweeper: asyncio.Task | None = None

    # -- the authorize hook ---------------------------------------------------------------------------
    def judge(self, call, description: pb.CallDescription, decision: pb.Decision) -> tuple[Decision, pb.Decision]:
        """The answer to a call that a rule asks for: (the kernel's Decision, the decision recorded)."""
        self.sweep()
        presented = next((v for k, v in call.metadata if k == APPROVAL_HEADER), "")
        pinned = next((v for k, v in call.metadata if k == PROVIDER_HEADER), "")
        request_sha = _sha(call.request)
        rules = list(decision.rule_ids)
        if not presented:
            summary, truncated = summary_of(call.request, route_of(description, pinned))
            asked = pb.Approval(call=description, request_sha256=request_sha, summary=summary, summary_truncated=truncated,
                                rule_ids=rules, reasons=list(decision.reasons), call_id=call.id, pinned_provider=pinned)
            request = call.request
            try:
                approval, new = self.store.request(
                    asked, self.timeout_s, request.DESCRIPTOR.full_name if request is not None else "",
                    request.SerializeToString(deterministic=True) if request is not None else b"")
            except TooMany as over:  # nothing stored, nothing to expire: the call alone is refused (and proven)
                log.warning("governance.approvals_over_quota", principal=over.principal)
                return (Decision(False, [str(over)], rules, code=grpc.StatusCode.RESOURCE_EXHAUSTED),
                        _recorded(decision, pb.EFFECT_DENY, str(over)))
            if new:
                log.info("governance.approval_requested", approval=approval.id, principal=description.principal,
                         method=f"{description.service}/{description.method}", rules=rules)
                if self._wake is not None:
                    self._wake.set()  # its expiry may be the next one
            self._proofs[call.id] = approval
            why = (f"{description.service}/{description.method} waits for a person's approval {approval.id} "
                   f"({'; '.join(decision.reasons)}): an admin runs `cortex approvals approve {approval.id}`, then "
                   f"the call is retried with {APPROVAL_HEADER}: {approval.id} (it expires at "
                   f"{when(approval.expires_unix_nanos)})")
            return Decision(False, [why], rules, code=FAILED_PRECONDITION, approval=approval.id), _recorded(decision, pb.EFFECT_ASK, why)
        description.approval_id = presented
        approval = self.store.get(presented)
        problem = _mismatch(approval, presented, description, request_sha, pinned)
        if problem:
            return Decision(False, [problem], rules), _recorded(decision, pb.EFFECT_DENY, problem)
        if approval.state == PENDING:
            why = (f"approval {approval.id} still waits for a person: `cortex approvals approve {approval.id}`, then "
                   "retry the call")
            self._proofs[call.id] = approval
            return Decision(False, [why], rules, code=FAILED_PRECONDITION, approval=approval.id), _recorded(decision, pb.EFFECT_ASK, why)
        if approval.state != APPROVED:
            why = decided_text(approval)
            self._proofs[call.id] = approval  # the refused call's proof shows who denied it, or that it expired
            return Decision(False, [why], rules), _recorded(decision, pb.EFFECT_DENY, why)
        try:
            approval = self.store.use(approval.id, call.id)
        except NotDecidable as refused:
            return Decision(False, [str(refused)], rules), _recorded(decision, pb.EFFECT_DENY, str(refused))
        self._proofs[call.id] = approval
        why = f"approved by {approval.decided_by} at {when(approval.decided_unix_nanos)} ({approval.id})"
        return Decision(True, [*decision.reasons, why], rules), _recorded(decision, pb.EFFECT_ALLOW, why)

    def for_proof(self, call_id: str) -> pb.Approval | None:
        """The approval a finished call asked for or ran under (for its proof, so without the
        request's summary: `for_audit`), once."""
        approval = self._proofs.pop(call_id, None)
        return for_audit(approval) if approval is not None else None

    # -- deciding and waiting -------------------------------------------------------------------------
    def get(self, approval_id: str) -> pb.Approval | None:
        self.sweep()
        return self.store.get(approval_id)

    def decide(self, approval_id: str, approve: bool, by: str, note: str) -> pb.Approval:
        self.sweep()
        approval = self.store.decide(approval_id, approve, by, note, audit=lambda a: self._audit([a]),
                                     use_within_s=self.timeout_s)
        log.info("governance.approval_decided", approval=approval.id, approved=approve, by=by)
        self._notify(approval)
        return approval

    async def wait(self, approval_id: str, seconds: float) -> pb.Approval | None:
        """The approval once it is decided or expired, or as it stands after `seconds`."""
        approval = self.get(approval_id)
        if approval is None or approval.state != PENDING:
            return approval
        until = min(time.time() + seconds, approval.expires_unix_nanos / 1e9 + 0.01)
        event = self._events.setdefault(approval_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(0.0, until - time.time()))
        return self.get(approval_id)  # (get expires it, audited, when its time came)

    def _notify(self, approval: pb.Approval) -> None:
        event = self._events.pop(approval.id, None)
        if event is not None:
            event.set()

    # -- expiry -----------------------------------------------------------------------------------------
    def sweep(self) -> list[pb.Approval]:
        """Expire what is due: denied, each written to the audit log, its waiters woken."""
        expired = self.store.expire_due(audit=self._audit)
        for approval in expired:
            log.info("governance.approval_expired", approval=approval.id, principal=approval.call.principal)
            self._notify(approval)
        return expired

    def _audit(self, approvals: list[pb.Approval]) -> None:
        self._record([pb.AuditEntry(approval=for_audit(a), call_id=a.call_id) for a in approvals])

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._sweeper = asyncio.ensure_future(self._sweep_when_due())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep_when_due(self) -> None:
        while True:
            due = self.store.next_expiry()
            delay = SWEEP_AT_MOST_S if due is None else max(0.0, (due - time.time_ns()) / 1e9) + 0.01
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(delay, SWEEP_AT_MOST_S))
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - the audit log cannot be written now: try at the next due time
                log.error("governance.approval_sweep_failed", error=repr(exc))
                await asyncio.sleep(1)


def _sha(request: Any) -> bytes:  # (as the proof's request_sha256)
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest() if request is not None else b""


def _mismatch(approval: pb.Approval | None, presented: str, call: pb.CallDescription, request_sha: bytes,
              pinned: str = "") -> str:
    """Why the approval presented is not this call's, or ''."""
    if approval is None:
        return f"no approval {presented!r}: retry without {APPROVAL_HEADER} to ask for one"
    asked = approval.call
    if asked.principal != call.principal:
        return f"approval {approval.id} was asked for {asked.principal}, not {call.principal}"
    if (asked.service, asked.method) != (call.service, call.method):
        return f"approval {approval.id} is for {asked.service}/{asked.method}, not {call.service}/{call.method}"
    if approval.request_sha256 != request_sha:
        return (f"approval {approval.id} is for another request (an approval covers exactly the request it was "
                "asked for): retry without it to ask for this one")
    if pinned != approval.pinned_provider:
        asked_for = f"pinned to provider {approval.pinned_provider!r}" if approval.pinned_provider else "not pinned"
        this = f"pinned to {pinned!r}" if pinned else "not pinned"
        return (f"approval {approval.id} is for the call {asked_for} ({PROVIDER_HEADER}), and this one is {this}: "
                "an approval covers the route it was asked for; retry without it to ask for this one")
    if asked.provider and asked.provider_local and call.provider and not call.provider_local:
        return (f"approval {approval.id} was asked for the local provider {asked.provider}; this call goes to the "
                f"remote provider {call.provider}: retry without it to ask for that one")
    return ""


def _recorded(decision: pb.Decision, effect: int, reason: str) -> pb.Decision:
    """The rules' decision (shared, never changed in place) with how the ask ended."""
    recorded = pb.Decision()
    recorded.CopyFrom(decision)
    recorded.effect = effect
    recorded.reasons.append(reason)
    return recorded

