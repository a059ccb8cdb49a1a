"""`cortex approvals list|show|approve|deny`: the calls waiting for a person (a rule with effect
"ask" matched them), the whole request one was asked for, and deciding them. They talk to the running kernel, as the admin by default (the
CLI sends $CORTEX_TOKEN, else the data dir's admin token): only admin decides, unless a rule
allows another principal."""

from __future__ import annotations

import datetime as dt
import json

import click

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.kernel.sdk import config_option, json_option, kernel_client, print_json, print_table, target_option, to_dict

STATES = {pb.Approval.STATE_PENDING: "pending", pb.Approval.STATE_APPROVED: "approved",
          pb.Approval.STATE_DENIED: "denied", pb.Approval.STATE_EXPIRED: "expired (denied)"}
SUMMARY_WIDTH = 60


def _time(unix_nanos: int) -> str:
    if not unix_nanos:
        return "-"
    return dt.datetime.fromtimestamp(unix_nanos / 1e9).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, width: int = SUMMARY_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _request(a: pb.Approval) -> str:
    """The summary, shortened for a table, marked when it (or the summary itself) leaves part out."""
    mark = " [truncated: cortex approvals show]" if a.summary_truncated or len(a.summary) > SUMMARY_WIDTH else ""
    return _short(a.summary) + mark


def _route(a: pb.Approval) -> str:
    if not a.call.provider:
        return "-"
    return f"{a.call.provider} ({'local' if a.call.provider_local else 'REMOTE'}{', pinned' if a.pinned_provider else ''})"


def _stub(config, target):
    client = kernel_client(config, target)
    return client, governance_pb2_grpc.GovernanceServiceStub(client.channel)


@click.group()
def approvals() -> None:
    """Calls waiting for a person's approval (policy rules with effect "ask")."""


@approvals.command("list")
@config_option
@target_option
@json_option
@click.option("--pending", is_flag=True, help="Only the calls still waiting.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--principal", default="", help="Only the approvals asked for this principal (e.g. key:alice).")
@click.option("--page", "page_token", default="", help="Go on from a previous listing (the token it printed).")
def approvals_list(config, target, as_json, pending, limit, principal, page_token) -> None:
    """List approvals: the waiting ones first, then the decided, each newest first."""
    client, stub = _stub(config, target)
    reply = client.call(stub.ListApprovals, pb.ListApprovalsRequest(pending_only=pending, limit=limit,
                                                                    principal=principal, page_token=page_token))
    if as_json:
        return print_json([to_dict(a) for a in reply.approvals])
    if not reply.approvals:
        click.echo("no call waits for approval" if pending else "no approvals yet")
        return
    rows = []
    for a in reply.approvals:
        decided = (f"{a.decided_by} {_time(a.decided_unix_nanos)}" if a.decided_by
                   else f"until {_time(a.expires_unix_nanos)}" if a.state == pb.Approval.STATE_PENDING
                   else _time(a.decided_unix_nanos))
        rows.append([a.id, STATES.get(a.state, "?"), a.call.principal, f"{a.call.service.rsplit('.', 1)[-1]}/{a.call.method}",
                     _route(a), _time(a.requested_unix_nanos), decided, _request(a)])
    print_table(rows, ["ID", "STATE", "FOR", "CALL", "TO", "ASKED", "DECIDED / EXPIRES", "REQUEST"])
    if reply.next_page_token:
        click.echo(f"\nmore: `cortex approvals list --page {reply.next_page_token}`")
    waiting = [a.id for a in reply.approvals if a.state == pb.Approval.STATE_PENDING]
    if waiting:
        click.echo(f"\n`cortex approvals approve {waiting[0]}` lets it through (once); `cortex approvals deny ID` refuses it.")


@approvals.command("show")
@config_option
@target_option
@json_option
@click.argument("approval_id")
def approvals_show(config, target, as_json, approval_id) -> None:
    """One approval and the whole request it was asked for (admin, or the principal whose call it is)."""
    client, stub = _stub(config, target)
    reply = client.call(stub.GetApproval, pb.GetApprovalRequest(id=approval_id))
    a = reply.approval
    if as_json:
        request = json.loads(reply.request_json) if reply.request_json else reply.request.hex()
        return print_json({"approval": to_dict(a), "request_type": reply.request_type, "request": request})
    click.echo(f"approval   {a.id} ({STATES.get(a.state, '?')})")
    click.echo(f"for        {a.call.principal}{f' (through {a.call.actor})' if a.call.actor else ''}")
    click.echo(f"call       {a.call.service}/{a.call.method} to {_route(a)}")
    click.echo(f"why        {'; '.join(a.reasons)}")
    click.echo(f"asked      {_time(a.requested_unix_nanos)}, expires {_time(a.expires_unix_nanos)}")
    if a.decided_by:
        click.echo(f"decided    by {a.decided_by} {_time(a.decided_unix_nanos)}{f' ({a.note})' if a.note else ''}")
    click.echo(f"request    {reply.request_type} (sha256 {a.request_sha256.hex()})")
    click.echo(reply.request_json or f"(its type is not loaded here; {len(reply.request)} bytes: {reply.request.hex()})")


def _decide(config, target, approval_id: str, approve: bool, note: str) -> None:
    client, stub = _stub(config, target)
    reply = client.call(stub.DecideApproval, pb.DecideApprovalRequest(id=approval_id, approve=approve, note=note))
    a = reply.approval
    what = f"{a.call.service}/{a.call.method} for {a.call.principal}"
    if approve:
        click.echo(f"approved {a.id} ({what}): the call proceeds when retried with x-cortex-approval: {a.id}")
    else:
        click.echo(f"denied {a.id} ({what})")


@approvals.command("approve")
@config_option
@target_option
@click.argument("approval_id")
@click.option("--note", default="", help="Why (kept with the decision in the audit log).")
def approvals_approve(config, target, approval_id, note) -> None:
    """Let the call waiting on APPROVAL_ID through (once). The decision is written to the audit log."""
    _decide(config, target, approval_id, True, note)


@approvals.command("deny")
@config_option
@target_option
@click.argument("approval_id")
@click.option("--note", default="", help="Why (the caller is told, and it is kept in the audit log).")
def approvals_deny(config, target, approval_id, note) -> None:
    """Refuse the call waiting on APPROVAL_ID. The decision is written to the audit log."""
    _decide(config, target, approval_id, False, note)
