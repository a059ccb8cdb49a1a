"""`cortex approvals list|approve|deny`: the calls waiting for a person (a rule with effect "ask"
matched them), and deciding them. They talk to the running kernel, as the admin by default (the
CLI sends $CORTEX_TOKEN, else the data dir's admin token): only admin decides, unless a rule
allows another principal."""

from __future__ import annotations

import datetime as dt

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
def approvals_list(config, target, as_json, pending, limit) -> None:
    """List approvals: the waiting ones first (oldest first), then the decided, newest first."""
    client, stub = _stub(config, target)
    reply = client.call(stub.ListApprovals, pb.ListApprovalsRequest(pending_only=pending, limit=limit))
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
                     _time(a.requested_unix_nanos), decided, _short(a.summary)])
    print_table(rows, ["ID", "STATE", "FOR", "CALL", "ASKED", "DECIDED / EXPIRES", "REQUEST"])
    waiting = [a.id for a in reply.approvals if a.state == pb.Approval.STATE_PENDING]
    if waiting:
        click.echo(f"\n`cortex approvals approve {waiting[0]}` lets it through (once); `cortex approvals deny ID` refuses it.")


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
