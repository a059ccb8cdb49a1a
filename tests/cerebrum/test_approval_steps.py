"""A plan step that a rule with effect "ask" matches waits for a person: Execute streams it as
STATE_WAITING with the approval's id, the step runs once an admin approves (its call's proof
carries the approval), and a step nobody approves in time fails PERMISSION_DENIED. Simulate says
beforehand which steps will ask."""

from __future__ import annotations

import json
import textwrap
import threading

import grpc
import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.governance.v1 import governance_pb2 as gov_pb
from cortex.contracts.governance.v1 import governance_pb2_grpc

from ..conftest import audit_entries, callers, wait_for
from ..counter_contract import CounterPlugin, CounterServicer, counter_stub
from ..governance.test_approvals import ASKS

CONFIG = ASKS  # adding to the counter asks a person
State = pb.StepRecord
PLAN = pb.Plan(goal="count two more", steps=[
    pb.Step(id="look", method="cortex_test.v1.CounterService/Get", request_json="{}"),
    pb.Step(id="count", method="cortex_test.v1.CounterService/Add", request_json='{"amount": 2}', depends_on=["look"]),
])


@pytest.fixture
def planner(start_kernel, channel_to, counter_pb2, data_dir):
    def start(timeout: float):
        servicer = CounterServicer(counter_pb2, "counter")
        target, kt = start_kernel(textwrap.dedent(CONFIG.format(timeout=timeout)),
                                  [("counter", CounterPlugin(counter_pb2, servicer))], governance=True)
        who = callers(target, data_dir, "alice")
        channel = channel_to(target, as_admin=False)
        return (cerebrum_pb2_grpc.CerebrumServiceStub(channel), governance_pb2_grpc.GovernanceServiceStub(channel),
                who, servicer, kt)

    return start


def test_a_waiting_step_runs_once_an_admin_approves_and_its_proof_carries_the_approval(planner):
    cerebrum, gov, who, servicer, kt = planner(timeout=60)
    seen, deciders = [], []
    for event in cerebrum.Execute(pb.ExecuteRequest(plan=PLAN), timeout=60, metadata=who["alice"]):
        seen.append(event)
        if event.HasField("step") and event.step.state == State.STATE_WAITING:
            assert servicer.value == 0  # nothing was added yet: the step waits
            decide = pb_decide(event.step.approval_id)
            deciders.append(threading.Thread(target=gov.DecideApproval, args=(decide,),
                                             kwargs={"timeout": 10, "metadata": who["admin"]}))
            deciders[-1].start()  # an admin approves, from elsewhere, while the stream waits
    for t in deciders:
        t.join()
    steps = [(e.step.step_id, e.step.state) for e in seen if e.HasField("step")]
    assert steps == [("look", State.STATE_STARTED), ("look", State.STATE_FINISHED), ("count", State.STATE_STARTED),
                     ("count", State.STATE_WAITING), ("count", State.STATE_FINISHED)]
    waiting = next(e.step for e in seen if e.HasField("step") and e.step.state == State.STATE_WAITING)
    approval = waiting.approval_id
    assert approval.startswith("ap-") and waiting.error == f"waiting for approval {approval}: `cortex approvals approve {approval}`"
    summary = seen[-1].summary
    assert summary.status == "succeeded" and servicer.value == 2
    trace = cerebrum.GetTrace(pb.GetTraceRequest(id=summary.trace_id), timeout=10, metadata=who["alice"]).trace
    assert trace.steps[1].approval_id == approval and trace.steps[1].state == State.STATE_FINISHED
    # the step's call ran under the approval: its proof says who approved, and when
    [decided] = gov.ListApprovals(gov_pb.ListApprovalsRequest(), timeout=5, metadata=who["alice"]).approvals
    assert decided.id == approval and decided.used_by_call_id
    proof = gov.GetProof(gov_pb.GetProofRequest(id=decided.used_by_call_id), timeout=5, metadata=who["admin"]).entry.proof
    assert (proof.method, proof.principal, proof.actor, proof.status) == ("Add", "key:alice", "plugin:cerebrum", "OK")
    assert (proof.approval.id, proof.approval.state, proof.approval.decided_by) == (
        approval, gov_pb.Approval.STATE_APPROVED, "admin")
    logged = [e.approval for e in audit_entries(kt) if e.WhichOneof("body") == "approval"]
    assert [(a.id, a.state, a.decided_by) for a in logged] == [(approval, gov_pb.Approval.STATE_APPROVED, "admin")]
    # a replay of the trace asks again: the approval let one call through, never a later one
    replies = []
    replay = threading.Thread(target=lambda: replies.append(
        cerebrum.Replay(pb.ReplayRequest(trace_id=summary.trace_id), timeout=60, metadata=who["alice"])))
    replay.start()
    wait_for(lambda: gov.ListApprovals(gov_pb.ListApprovalsRequest(pending_only=True), timeout=5,
                                       metadata=who["admin"]).approvals, "the replayed step to ask again")
    [again] = gov.ListApprovals(gov_pb.ListApprovalsRequest(pending_only=True), timeout=5, metadata=who["admin"]).approvals
    assert again.id != approval and servicer.value == 2
    gov.DecideApproval(pb_decide(again.id), timeout=10, metadata=who["admin"])
    replay.join(30)
    assert replies and servicer.value == 4  # it ran, once approved (and so diverged: the counter moved on)


def pb_decide(approval: str) -> gov_pb.DecideApprovalRequest:
    return gov_pb.DecideApprovalRequest(id=approval, approve=True, note="go ahead")


def test_simulate_names_the_asking_step_and_an_unapproved_step_expires_denied(planner):
    cerebrum, _gov, who, servicer, kt = planner(timeout=1.0)
    simulated = cerebrum.Simulate(pb.SimulateRequest(plan=PLAN), timeout=30, metadata=who["alice"])
    assert [(s.step_id, s.asks, s.allowed) for s in simulated.steps] == [("look", False, True), ("count", True, True)]
    assert any("wait for a person's approval" in r for r in simulated.steps[1].reasons)
    events = list(cerebrum.Execute(pb.ExecuteRequest(plan=PLAN), timeout=60, metadata=who["alice"]))
    steps = [e.step for e in events if e.HasField("step")]
    assert [(s.step_id, s.state) for s in steps][-2:] == [("count", State.STATE_WAITING), ("count", State.STATE_FAILED)]
    failed = steps[-1]
    assert failed.status == "PERMISSION_DENIED" and failed.approval_id == steps[-2].approval_id
    assert "nobody decided in time" in failed.error
    assert events[-1].summary.status == "failed" and servicer.value == 0
    logged = [e.approval for e in audit_entries(kt) if e.WhichOneof("body") == "approval"]
    assert [(a.id, a.state) for a in logged] == [(failed.approval_id, gov_pb.Approval.STATE_EXPIRED)]


def test_a_plan_step_never_decides_an_approval_even_for_admin(planner, channel_to, counter_pb2):
    cerebrum, gov, who, servicer, kt = planner(timeout=60)
    counter = counter_stub(lambda t: channel_to(t, as_admin=False), kt.target, counter_pb2)
    with pytest.raises(grpc.RpcError) as asked:
        counter.Add(counter_pb2.AddRequest(amount=1), timeout=10, metadata=who["alice"])
    approval = dict(asked.value.trailing_metadata())["x-cortex-approval"]
    plan = pb.Plan(goal="let it through", steps=[pb.Step(
        id="decide", method="cortex.governance.v1.GovernanceService/DecideApproval",
        request_json=json.dumps({"id": approval, "approve": True}))])
    events = list(cerebrum.Execute(pb.ExecuteRequest(plan=plan), timeout=30, metadata=who["admin"]))
    step = [e.step for e in events if e.HasField("step")][-1]
    assert (step.state, step.status) == (State.STATE_FAILED, "PERMISSION_DENIED")
    assert "builtin/agents-never-decide" in step.error
    pending = gov.ListApprovals(gov_pb.ListApprovalsRequest(pending_only=True), timeout=5, metadata=who["admin"]).approvals
    assert [a.id for a in pending] == [approval] and servicer.value == 0
