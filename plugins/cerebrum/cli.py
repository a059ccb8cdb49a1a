"""`cortex plan | simulate | run | traces | critique | teach | replay`: clients of CerebrumService.

A plan file is the plan as protobuf JSON, as `cortex plan GOAL --json` prints it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import grpc
from google.protobuf import json_format

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.kernel.cli import _client, _print_json, _to_dict, config_option, json_option, target_option

TIMEOUT = 600.0
STATES = {v: k.removeprefix("STATE_").lower() for k, v in pb.StepRecord.State.items()}


def _stub(config, target):
    client = _client(config, target)
    return client, cerebrum_pb2_grpc.CerebrumServiceStub(client.channel)


def _load_plan(path: str) -> pb.Plan:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
        return json_format.ParseDict(value.get("plan", value), pb.Plan())
    except (OSError, json.JSONDecodeError, json_format.ParseError) as exc:
        raise click.ClickException(f"{path}: not a plan file ({exc}); make one with `cortex plan GOAL --json > plan.json`") from None


@click.command("plan")
@config_option
@target_option
@json_option
@click.argument("goal")
def plan_(config, target, as_json, goal):
    """Plan GOAL over the registered contracts."""
    client, stub = _stub(config, target)
    reply = client.call(stub.Plan, pb.PlanRequest(goal=goal), TIMEOUT)
    if as_json:
        return _print_json(_to_dict(reply))
    click.echo(f"plan {reply.plan.hash[:12]} ({reply.plan.source}) for {reply.plan.goal!r}")
    for step in reply.plan.steps:
        after = f" after {', '.join(step.depends_on)}" if step.depends_on else ""
        click.echo(f"  {step.id}: {step.method}{after}  {step.request_json}")
    for note in reply.repairs:
        click.echo(f"  note: {note}", err=True)


@click.command()
@config_option
@target_option
@json_option
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
def simulate(config, target, as_json, plan_file):
    """Dry-run PLAN_FILE through governance and the registry. Exits 1 if a step would not run."""
    client, stub = _stub(config, target)
    reply = client.call(stub.Simulate, pb.SimulateRequest(plan=_load_plan(plan_file)), TIMEOUT)
    if as_json:
        _print_json(_to_dict(reply))
    else:
        for s in reply.steps:
            verdict = "allowed" if s.allowed else "DENIED"
            click.echo(f"{s.step_id}: {s.method} -> {s.provider or '?'}: {verdict}" + (f" ({'; '.join(s.reasons)})" if s.reasons else ""))
    if not reply.ok:
        sys.exit(1)


@click.command()
@config_option
@target_option
@json_option
@click.argument("goal_or_plan")
def run(config, target, as_json, goal_or_plan):
    """Execute a GOAL (planned first) or a PLAN_FILE, showing each step."""
    request = pb.ExecuteRequest(plan=_load_plan(goal_or_plan)) if Path(goal_or_plan).is_file() else pb.ExecuteRequest(goal=goal_or_plan)
    client, stub = _stub(config, target)
    summary = None
    try:
        for event in stub.Execute(request, timeout=TIMEOUT, metadata=client.metadata):
            if as_json:
                click.echo(json.dumps(_to_dict(event)))
            elif event.HasField("step"):
                s = event.step
                detail = f" {s.status} {s.error}" if s.state == pb.StepRecord.STATE_FAILED else f" via {s.provider}" if s.provider else ""
                click.echo(f"{STATES[s.state]:>8} {s.step_id}: {s.method}{detail}")
            summary = event.summary if event.HasField("summary") else summary
    except grpc.RpcError as exc:
        raise client.error(exc) from None
    if summary is not None and not as_json:
        click.echo(f"{summary.status}: trace {summary.trace_id}")
    if summary is not None and summary.status != "succeeded":
        sys.exit(1)


@click.group()
def traces():
    """Execution traces."""


@traces.command("list")
@config_option
@target_option
@json_option
def traces_list(config, target, as_json):
    """Recent traces, newest first."""
    client, stub = _stub(config, target)
    reply = client.call(stub.ListTraces, pb.ListTracesRequest())
    if as_json:
        return _print_json(_to_dict(reply))
    for t in reply.traces:
        click.echo(f"{t.trace_id}  {t.status:<9} ok={t.steps_ok} failed={t.steps_failed} skipped={t.steps_skipped}")


@traces.command("show")
@config_option
@target_option
@click.argument("trace_id")
def traces_show(config, target, trace_id):
    """A trace as JSON."""
    client, stub = _stub(config, target)
    _print_json(_to_dict(client.call(stub.GetTrace, pb.GetTraceRequest(id=trace_id))))


@click.command()
@config_option
@target_option
@json_option
@click.argument("trace_id")
def critique(config, target, as_json, trace_id):
    """Score a trace and propose a revised plan where it can."""
    client, stub = _stub(config, target)
    reply = client.call(stub.Critique, pb.CritiqueRequest(trace_id=trace_id), TIMEOUT)
    if as_json:
        return _print_json(_to_dict(reply))
    click.echo(f"score {reply.score:.2f}")
    for finding in reply.findings:
        click.echo(f"  - {finding}")


@click.command()
@config_option
@target_option
@click.argument("trace_id")
def teach(config, target, trace_id):
    """Keep a succeeded trace as a learning example for future plans."""
    client, stub = _stub(config, target)
    click.echo(f"taught: memory {client.call(stub.Teach, pb.TeachRequest(trace_id=trace_id), TIMEOUT).memory_id}")


@click.command()
@config_option
@target_option
@json_option
@click.argument("trace_id")
def replay(config, target, as_json, trace_id):
    """Re-run a trace; say `identical` or the first step that diverged. Exits 1 on divergence."""
    client, stub = _stub(config, target)
    reply = client.call(stub.Replay, pb.ReplayRequest(trace_id=trace_id), TIMEOUT)
    if as_json:
        _print_json({"status": reply.status, "step": reply.step_id, "expected_sha256": reply.expected_sha256.hex(),
                     "actual_sha256": reply.actual_sha256.hex(), "reason": reply.reason, "replay_trace_id": reply.replay_trace_id})
    else:
        click.echo(reply.status if reply.status == "identical" else f"diverged at step {reply.step_id}: {reply.reason}")
    if reply.status != "identical":
        sys.exit(1)


def register(cli: click.Group) -> None:
    for command in (plan_, simulate, run, traces, critique, teach, replay):
        cli.add_command(command)
