"""`cortex.governance.v1.GovernanceService`.

Namespaces are walls in the audit log too. A caller that does not see every namespace (anyone but
admin and the kernel's own parts: `context.sees_every_namespace`) reads only the entries of calls
whose principal is in its own namespace (`context.namespace`), the genesis entry (the log's public
key, which every checkpoint carries anyway), and the policy changes made from its namespace:
ExportAudit leaves the others out, and GetProof and VerifyProof by id answer NOT_FOUND for them, as
for an id never used. What such a caller gets still proves itself: each entry's hash is its
content's, and GetProof gives its inclusion proof against the newest signed tree head, which covers
the whole log. It does not prove the export complete (that no entry of the caller's was left out
between two it got): only a walk of the whole log does (VerifyChain, `cortex proofs verify --all`).
The whole-log answers (VerifyChain's verdict, GetCheckpoint, GetConsistencyProof) name positions,
sizes and Merkle roots, never an entry's content; and policies (ListPolicies, Evaluate) are the
kernel's configuration, the rules every caller is judged by, read by anyone who may call them.

Approvals keep the same wall: ListApprovals shows a caller the approvals asked for principals of its
own namespace (admin: all of them; filtered in the store's query, by principal, so that no number
of others' approvals hides a caller's own), pending first, each newest first, a page at a time;
WaitApproval waits only on one of those (or any, for a plugin: Cerebrum waiting for its plan's
step), and an approval of another namespace is NOT_FOUND, as an id never used. GetApproval gives
the whole request an approval was asked for, to admin and to the principal whose call it is only.
Deciding one is admin's (builtin/approvals-admin: judged by policy before it gets here).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc

from .approvals import NotDecidable
from .chain import proof_id, verify_chain, verify_entry
from .policy_files import Refused, add_policy, remove_rule
from .rules import CallFacts

if TYPE_CHECKING:
    from .plugin import Governance

MAX_EXPORT = 100_000
WAIT_DEFAULT_S = 30.0


def _principal(context) -> str:
    return getattr(context, "principal", "") or ""


def readable(context) -> Callable[[pb.AuditEntry], bool] | None:
    """Which audit entries the caller may read: None for all of them (admin, the kernel's own
    parts); else those of its own namespace (see the module's docstring)."""
    if getattr(context, "sees_every_namespace", False):
        return None
    # (a context that cannot say whose a principal is, or whose the call is, reads no one's entries)
    mine, namespace_of = getattr(context, "namespace", "") or "", getattr(context, "namespace_of", None)

    def ours(entry: pb.AuditEntry) -> bool:
        body = entry.WhichOneof("body")
        if body == "genesis":
            return True
        who = {"policy_change": entry.policy_change.principal, "proof": entry.proof.principal,
               "approval": entry.approval.call.principal}.get(body, entry.call.principal)
        return bool(mine and who and namespace_of) and namespace_of(who) == mine

    return ours


class GovernanceServicer(governance_pb2_grpc.GovernanceServiceServicer):
    def __init__(self, governance: Governance):
        self.gov = governance
        self._verifying: asyncio.Future | None = None  # the whole-chain walk in progress, shared

    @property
    def chain(self):
        self.gov.flush()  # what was observed is in the chain before anyone reads it
        return self.gov.chain

    async def Evaluate(self, request, context):
        call = request.call
        if not call.service or not call.method:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "call.service and call.method are required, e.g. service=\"cortex.models.v1.ModelService\" method=\"Generate\"",
            )
        facts = CallFacts(
            service=call.service,
            method=call.method,
            principal=call.principal,
            actor=call.actor,
            provider=call.provider,
            provider_local=call.provider_local,
            privacy_mode=self.gov.privacy_mode,
            labels=frozenset(call.labels),
            fields=dict(call.fields),
        )
        return pb.EvaluateResponse(decision=self.gov.rules.evaluate(facts))

    async def ListPolicies(self, request, context):
        return pb.ListPoliciesResponse(rules=self.gov.rules.rules, default_effect=self.gov.rules.default)

    async def AddPolicy(self, request, context):
        try:
            added, path = add_policy(self.gov, request.toml, request.name, _principal(context))
        except Refused as refused:
            await context.abort(getattr(grpc.StatusCode, refused.code), str(refused))
        self.gov.announce_policy("add", {"name": os.path.basename(path).removesuffix(".toml"), "toml": request.toml},
                                 _principal(context))
        return pb.AddPolicyResponse(rules=added, path=path)

    async def RemovePolicy(self, request, context):
        try:
            removed = remove_rule(self.gov, request.id, _principal(context))
        except Refused as refused:
            await context.abort(getattr(grpc.StatusCode, refused.code), str(refused))
        self.gov.announce_policy("remove", {"rule_id": removed.id}, _principal(context))
        return pb.RemovePolicyResponse(removed=removed)

    async def _find(self, proof: str, context) -> pb.AuditEntry:
        entry = None
        if re.fullmatch(r"p-\d{1,19}", proof):
            entry = self.chain.get(int(proof[2:]))
            if entry is not None and not entry.HasField("proof"):
                entry = None
        elif proof:
            entry = self.chain.proof_for_call(proof)
        allowed = readable(context)
        if entry is None or (allowed is not None and not allowed(entry)):  # another's: as if never used
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no proof {proof!r}: give a proof id (p-<n>) or the call id from the x-cortex-call-id trailer",
            )
        return entry

    async def GetProof(self, request, context):
        entry = await self._find(request.id, context)
        chain = self.chain
        head = chain.head  # signed as the chain was read (`chain` flushes and signs)
        if head is None or entry.seq > head.size:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the audit log's tree head cannot be signed now: try again")
        return pb.GetProofResponse(entry=entry, proof_id=proof_id(entry), checkpoint=head, inclusion=chain.inclusion(entry, head))

    async def VerifyProof(self, request, context):
        if request.id:
            entry = await self._find(request.id, context)
        elif request.HasField("entry"):
            entry = request.entry
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give a proof id, or the entry to verify")
        problem = verify_entry(entry, self.chain.public_key())
        if not problem:
            stored = self.chain.get(entry.seq)
            before = self.chain.get(entry.seq - 1) if entry.seq > 1 else None
            if stored is None or stored.hash != entry.hash:
                problem = f"entry {entry.seq} is not the one in this kernel's chain"
            elif entry.seq > 1 and (before is None or before.hash != entry.prev_hash):
                problem = f"entry {entry.seq} does not link to entry {entry.seq - 1} in the chain"
        return pb.VerifyProofResponse(valid=not problem, problem=problem)

    async def VerifyChain(self, request, context):
        # the same walk as `cortex proofs verify --all`, on a read-only connection, off the event
        # loop; callers asking while one runs share its verdict, so a burst of requests costs one walk
        if self._verifying is None or self._verifying.done():
            # every entry under the head the kernel has just signed (and that head itself); entries
            # written since wait for the next head and are not vouched for
            chain = self.chain
            self._verifying = asyncio.ensure_future(asyncio.to_thread(
                verify_chain, chain.path, chain.public_key(), checkpoints=[chain.head], signed_through=chain.head.size))
        verdict = await asyncio.shield(self._verifying)
        return pb.VerifyChainResponse(valid=verdict.ok, checked=verdict.checked, broken_at=verdict.seq,
                                      problem=verdict.problem)

    async def GetCheckpoint(self, request, context):
        return pb.GetCheckpointResponse(checkpoint=self.chain.head)

    async def GetConsistencyProof(self, request, context):
        chain = self.chain
        head = chain.head
        second = request.second_size or head.size
        if not 0 < request.first_size <= second <= head.size:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE if second > head.size else grpc.StatusCode.INVALID_ARGUMENT,
                f"no consistency proof from {request.first_size} to {second} entries: the log has {head.size}; "
                "give 0 < first_size <= second_size <= that (second_size 0 = the newest signed tree head)",
            )
        kept = {cp.size: cp for cp in chain.checkpoints()}
        signed = head if second == head.size else kept.get(second)
        return pb.GetConsistencyProofResponse(
            proof=chain.consistency(request.first_size, second), second_size=second, checkpoint=signed,
        )

    async def ExportAudit(self, request, context):
        # `limit` counts positions of the log from `from_seq` (all of them, for admin): a caller
        # that sees only its namespace gets its own entries among them, and goes on from
        # from_seq + limit, however few they were
        limit, allowed = request.limit or MAX_EXPORT, readable(context)
        for entry in self.chain.entries(request.from_seq, min(limit, MAX_EXPORT)):
            if allowed is None or allowed(entry):
                yield pb.ExportAuditResponse(entry=entry)

    # -- approvals (gate.py) ---------------------------------------------------------------------------------
    def _gate(self):
        gate = self.gov.gate
        if gate is None:
            raise NotDecidable("UNAVAILABLE", "approvals are closed (the governance plugin is stopping)")
        return gate

    async def _approval(self, approval_id: str, context) -> pb.Approval:
        """The approval `approval_id`, when the caller may see it; else NOT_FOUND, as for an id never used."""
        try:
            approval = self._gate().get(approval_id) if approval_id else None
        except NotDecidable as refused:
            await context.abort(getattr(grpc.StatusCode, refused.code), str(refused))
        if approval is None or not _sees(context, approval):
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no approval {approval_id!r}; `cortex approvals list` shows the ones you may see")
        return approval

    async def ListApprovals(self, request, context):
        try:
            gate = self._gate()
            gate.sweep()
            principals = _visible_principals(context, gate.store, request.principal)
            listed, token = gate.store.list(request.pending_only, request.limit or 100, principals, request.page_token)
        except NotDecidable as refused:
            await context.abort(getattr(grpc.StatusCode, refused.code), str(refused))
        return pb.ListApprovalsResponse(approvals=listed, next_page_token=token)

    async def GetApproval(self, request, context):
        approval = await self._approval(request.id, context)
        principal = _principal(context)
        if principal not in ("admin", approval.call.principal):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"only admin and {approval.call.principal} (whose call it is) read the request of {approval.id}")
        type_name, raw = self._gate().store.request_of(approval.id)
        return pb.GetApprovalResponse(approval=approval, request_type=type_name, request=raw,
                                      request_json=_as_json(type_name, raw))

    async def DecideApproval(self, request, context):
        await self._approval(request.id, context)  # (one the caller cannot see is NOT_FOUND, as never asked)
        try:
            decided = self._gate().decide(request.id, request.approve, _principal(context), request.note)
        except NotDecidable as refused:
            await context.abort(getattr(grpc.StatusCode, refused.code), str(refused))
        return pb.DecideApprovalResponse(approval=decided)

    async def WaitApproval(self, request, context):
        approval = await self._approval(request.id, context)
        principal = _principal(context)
        if not (principal.startswith("plugin:") or principal == "admin" or principal == approval.call.principal):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"only {approval.call.principal} (whose call waits), admin or a plugin waits on {approval.id}")
        seconds = request.wait_seconds or WAIT_DEFAULT_S
        remaining = context.time_remaining() if hasattr(context, "time_remaining") else None
        if remaining is not None:  # answer before the caller's deadline, with the approval as it stands
            seconds = max(0.0, min(seconds, remaining - 0.5))
        waited = await self._gate().wait(request.id, seconds)
        return pb.WaitApprovalResponse(approval=waited or approval)


def _sees(context, approval: pb.Approval) -> bool:
    """Whether the caller sees `approval`: admin and the kernel's parts all; else its namespace's."""
    allowed = readable(context)
    return allowed is None or allowed(pb.AuditEntry(approval=approval))


def _visible_principals(context, store, asked: str) -> list[str] | None:
    """The principals whose approvals the caller lists (None: everyone's), `asked` alone when given."""
    if getattr(context, "sees_every_namespace", False):
        return [asked] if asked else None
    mine, namespace_of = getattr(context, "namespace", "") or "", getattr(context, "namespace_of", None)
    if not mine or namespace_of is None:
        return []
    own = _principal(context)
    if not asked and namespace_of(own) == mine and own == mine:  # (a key's namespace is itself: its own alone)
        return [own]
    candidates = [asked] if asked else store.principals()
    return [p for p in candidates if p and namespace_of(p) == mine]


def _as_json(type_name: str, raw: bytes) -> str:
    """The request as JSON when its type is known here (every contract's is); else ''."""
    if not type_name:
        return ""
    try:
        message = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(type_name))()
        message.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - a type no longer loaded, bytes that do not parse: the bytes are given
        return ""
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2)
