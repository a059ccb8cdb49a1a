"""Approval gates: a rule with effect "ask" makes a call wait for a person. A direct call gets
FAILED_PRECONDITION with the approval's id in its x-cortex-approval trailer; an admin approves or
denies it; the same call retried with the id proceeds (once) or is refused; every decision and
expiry is an entry of the audit log, and the proof of the call that ran carries the approval."""

from __future__ import annotations

import re
import textwrap
import threading
import time

import grpc
import pytest

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.plugins.governance.rules import ASK, CallFacts, PolicyError, RuleSet, parse_policy

from ..conftest import audit_entries, callers, cortex_env, plugin_of, run_cli
from ..counter_contract import CounterPlugin, CounterServicer, counter_stub

COUNTER = "cortex_test.v1.CounterService"
ASKS = """
[plugins]
disabled = ["ollama", "openai", "a2a", "mcp", "http"]
[plugins.governance]
approval_timeout_seconds = {timeout}
[[plugins.governance.rule]]
id = "adding-needs-a-person"
description = "adding to the counter needs a person's yes"
effect = "ask"
services = ["cortex_test.v1.CounterService"]
methods = ["Add"]
"""
HEADER = "x-cortex-approval"
State = pb.Approval


@pytest.fixture
def asking(start_kernel, channel_to, counter_pb2, data_dir):
    """asking(timeout=300) -> (counter stub (no credential of its own), governance stub (idem), the
    callers' metadata (alice, bob, admin, local), the counter servicer, target, kernel)."""

    def start(timeout: float = 300):
        servicer = CounterServicer(counter_pb2, "counter")
        target, kt = start_kernel(textwrap.dedent(ASKS.format(timeout=timeout)),
                                  [("counter", CounterPlugin(counter_pb2, servicer))], governance=True)
        who = callers(target, data_dir, "alice", "bob")
        counter = counter_stub(lambda t: channel_to(t, as_admin=False), target, counter_pb2)
        gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target, as_admin=False))
        return counter, gov, who, servicer, target, kt

    return start


def refused(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        fn(*args, timeout=10, **kwargs)
    return caught.value


def ask(counter, counter_pb2, who, amount: int = 3) -> str:
    """Make the asked call; return the approval id its refusal carries."""
    error = refused(counter.Add, counter_pb2.AddRequest(amount=amount), metadata=who)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    approval = dict(error.trailing_metadata()).get(HEADER, "")
    assert approval.startswith("ap-") and f"cortex approvals approve {approval}" in error.details()
    return approval


def with_id(who, approval: str):
    return (*who, (HEADER, approval))


def approval_entries(kt, approval: str) -> list[pb.Approval]:
    return [e.approval for e in audit_entries(kt) if e.WhichOneof("body") == "approval" and e.approval.id == approval]


def test_an_approved_call_runs_once_and_its_proof_and_the_audit_log_carry_the_approval(asking, counter_pb2):
    counter, gov, who, servicer, _, kt = asking()
    approval = ask(counter, counter_pb2, who["alice"])
    assert servicer.calls == 0  # the provider never saw it
    # the same call asked again waits on the same approval; alice sees it, bob does not
    assert ask(counter, counter_pb2, who["alice"]) == approval
    mine = gov.ListApprovals(pb.ListApprovalsRequest(pending_only=True), timeout=5, metadata=who["alice"]).approvals
    assert [(a.id, a.state, a.call.principal) for a in mine] == [(approval, State.STATE_PENDING, "key:alice")]
    assert '"amount": "3"' in mine[0].summary and list(mine[0].rule_ids) == ["adding-needs-a-person"]
    assert gov.ListApprovals(pb.ListApprovalsRequest(), timeout=5, metadata=who["bob"]).approvals == []
    # presented while it still waits: refused again, with the same id
    pending = refused(counter.Add, counter_pb2.AddRequest(amount=3), metadata=with_id(who["alice"], approval))
    assert pending.code() == grpc.StatusCode.FAILED_PRECONDITION and dict(pending.trailing_metadata())[HEADER] == approval
    # neither the asker, nor `local`, nor `local` claiming to be admin may decide
    decide = pb.DecideApprovalRequest(id=approval, approve=True)
    assert refused(gov.DecideApproval, decide, metadata=who["alice"]).code() == grpc.StatusCode.PERMISSION_DENIED
    assert "builtin/local-never-decides" in refused(gov.DecideApproval, decide, metadata=who["local"]).details()
    spoofed = refused(gov.DecideApproval, decide, metadata=(("x-cortex-principal", "admin"),))
    assert spoofed.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    posing = refused(gov.DecideApproval, decide, metadata=(*who["bob"], ("x-cortex-principal", "admin")))
    assert posing.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    assert approval_entries(kt, approval) == []  # nothing was decided
    # the admin approves
    decided = gov.DecideApproval(pb.DecideApprovalRequest(id=approval, approve=True, note="fine, once"),
                                 timeout=5, metadata=who["admin"]).approval
    assert (decided.state, decided.decided_by, decided.note) == (State.STATE_APPROVED, "admin", "fine, once")
    again = refused(gov.DecideApproval, pb.DecideApprovalRequest(id=approval, approve=False), metadata=who["admin"])
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION and "approved by admin already" in again.details()
    # the same call with the id proceeds
    reply, call = counter.Add.with_call(counter_pb2.AddRequest(amount=3), timeout=10, metadata=with_id(who["alice"], approval))
    assert reply.value == 3 and servicer.calls == 1
    call_id = dict(call.trailing_metadata())["x-cortex-call-id"]
    proof = gov.GetProof(pb.GetProofRequest(id=call_id), timeout=5, metadata=who["admin"]).entry.proof
    assert proof.status == "OK" and proof.approval.id == approval
    assert (proof.approval.state, proof.approval.decided_by, proof.approval.used_by_call_id) == (
        State.STATE_APPROVED, "admin", call_id)
    assert proof.approval.decided_unix_nanos >= proof.approval.requested_unix_nanos > 0
    assert proof.decision.effect == pb.EFFECT_ALLOW and any("approved by admin at " in r and approval in r
                                                            for r in proof.decision.reasons)
    # the decision is an entry of the audit log, and the log still verifies
    [entry] = approval_entries(kt, approval)
    assert (entry.state, entry.decided_by, entry.call.principal, entry.note) == (State.STATE_APPROVED, "admin", "key:alice", "fine, once")
    exported = [e.entry for e in gov.ExportAudit(pb.ExportAuditRequest(), timeout=10, metadata=who["alice"])]
    assert any(e.WhichOneof("body") == "approval" and e.approval.id == approval for e in exported)  # alice's own
    assert not any(e.WhichOneof("body") == "approval" for e in
                   (x.entry for x in gov.ExportAudit(pb.ExportAuditRequest(), timeout=10, metadata=who["bob"])))
    assert gov.VerifyChain(pb.VerifyChainRequest(), timeout=30, metadata=who["admin"]).valid
    # used once: the same id again is refused, and so is another request, or another principal
    reused = refused(counter.Add, counter_pb2.AddRequest(amount=3), metadata=with_id(who["alice"], approval))
    assert reused.code() == grpc.StatusCode.PERMISSION_DENIED and "used already" in reused.details()
    other = refused(counter.Add, counter_pb2.AddRequest(amount=4), metadata=with_id(who["alice"], approval))
    assert other.code() == grpc.StatusCode.PERMISSION_DENIED and "another request" in other.details()
    bobs = refused(counter.Add, counter_pb2.AddRequest(amount=3), metadata=with_id(who["bob"], approval))
    assert bobs.code() == grpc.StatusCode.PERMISSION_DENIED and "asked for key:alice, not key:bob" in bobs.details()
    assert servicer.calls == 1


def test_the_cli_lists_and_approves(asking, counter_pb2, data_dir):
    counter, _, who, _servicer, target, kt = asking()
    approval = ask(counter, counter_pb2, who["alice"], amount=5)
    env = cortex_env(data_dir, CORTEX_TARGET=target)
    listed = run_cli("approvals", "list", "--pending", env=env)
    assert listed.returncode == 0, listed.stderr
    assert approval in listed.stdout and "key:alice" in listed.stdout and "CounterService/Add" in listed.stdout
    approved = run_cli("approvals", "approve", approval, "--note", "ok from the terminal", env=env)
    assert approved.returncode == 0, approved.stderr
    assert f"approved {approval}" in approved.stdout
    twice = run_cli("approvals", "deny", approval, env=env)
    assert twice.returncode == 1 and "a decision is final" in twice.stderr
    unknown = run_cli("approvals", "approve", "ap-0000", env=env)
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    assert counter.Add(counter_pb2.AddRequest(amount=5), timeout=10, metadata=with_id(who["alice"], approval)).value == 5
    assert approval_entries(kt, approval)[0].note == "ok from the terminal"
    tail = run_cli("audit", "tail", "-n", "50", env=env)
    assert f"{approval} approved by admin" in tail.stdout


def test_a_denied_call_is_refused_naming_who_denied(asking, counter_pb2):
    counter, gov, who, servicer, _, kt = asking()
    approval = ask(counter, counter_pb2, who["alice"])
    gov.DecideApproval(pb.DecideApprovalRequest(id=approval, approve=False, note="not today"), timeout=5,
                       metadata=who["admin"])
    error = refused(counter.Add, counter_pb2.AddRequest(amount=3), metadata=with_id(who["alice"], approval))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"approval {approval} was denied by admin" in error.details() and "not today" in error.details()
    assert servicer.calls == 0
    [entry] = approval_entries(kt, approval)
    assert (entry.state, entry.decided_by) == (State.STATE_DENIED, "admin")
    # asking again is a new approval (the denied one is final)
    assert ask(counter, counter_pb2, who["alice"]) != approval


def test_nobody_deciding_in_time_expires_the_approval_denied_and_logged(asking, counter_pb2):
    counter, gov, who, servicer, _, kt = asking(timeout=0.6)
    approval = ask(counter, counter_pb2, who["alice"])
    started = time.monotonic()
    waited = gov.WaitApproval(pb.WaitApprovalRequest(id=approval, wait_seconds=20), timeout=30, metadata=who["alice"]).approval
    assert waited.state == State.STATE_EXPIRED and time.monotonic() - started < 10  # woken at its expiry
    error = refused(counter.Add, counter_pb2.AddRequest(amount=3), metadata=with_id(who["alice"], approval))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "expired" in error.details()
    [entry] = approval_entries(kt, approval)
    assert entry.state == State.STATE_EXPIRED and not entry.decided_by
    late = refused(gov.DecideApproval, pb.DecideApprovalRequest(id=approval, approve=True), metadata=who["admin"])
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION and "expired" in late.details()
    assert servicer.calls == 0
    # WaitApproval: an unknown id is NOT_FOUND, and bob may not wait on alice's approval
    assert refused(gov.WaitApproval, pb.WaitApprovalRequest(id="ap-nothing"), metadata=who["alice"]).code() == grpc.StatusCode.NOT_FOUND
    assert refused(gov.WaitApproval, pb.WaitApprovalRequest(id=approval), metadata=who["bob"]).code() == grpc.StatusCode.NOT_FOUND


def test_an_expiry_with_nobody_waiting_is_logged_at_its_time(asking, counter_pb2):
    counter, _gov, who, _, _, kt = asking(timeout=0.3)
    approval = ask(counter, counter_pb2, who["alice"])
    deadline = time.monotonic() + 10
    while not approval_entries(kt, approval):  # the sweeper, not a reader, expires it
        assert time.monotonic() < deadline, "the approval never expired"
        time.sleep(0.05)
    assert approval_entries(kt, approval)[0].state == State.STATE_EXPIRED


def test_concurrent_identical_calls_get_one_approval(asking, counter_pb2):
    counter, gov, who, _, _, _ = asking()
    ids, errors = [], []

    def call():
        try:
            ids.append(ask(counter, counter_pb2, who["alice"], amount=7))
        except AssertionError as exc:  # (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ids) == 12 and len(set(ids)) == 1
    pending = gov.ListApprovals(pb.ListApprovalsRequest(pending_only=True), timeout=5, metadata=who["admin"]).approvals
    assert [a.id for a in pending] == ids[:1]


def test_a_pending_approval_survives_a_restart(start_kernel, asking, counter_pb2, channel_to, data_dir):
    counter, gov, who, _, _, kt = asking()
    approval = ask(counter, counter_pb2, who["alice"])
    kt.stop()
    servicer = CounterServicer(counter_pb2, "counter")
    target, _ = start_kernel(textwrap.dedent(ASKS.format(timeout=300)), [("counter", CounterPlugin(counter_pb2, servicer))],
                             governance=True)
    admin = callers(target, data_dir)["admin"]  # (alice's key is kept in the data dir)
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target, as_admin=False))
    pending = gov.ListApprovals(pb.ListApprovalsRequest(pending_only=True), timeout=5, metadata=admin).approvals
    assert [(a.id, a.state, a.call.principal) for a in pending] == [(approval, State.STATE_PENDING, "key:alice")]
    gov.DecideApproval(pb.DecideApprovalRequest(id=approval, approve=True), timeout=5, metadata=admin)
    counter = counter_stub(lambda t: channel_to(t, as_admin=False), target, counter_pb2)
    assert counter.Add(counter_pb2.AddRequest(amount=3), timeout=10, metadata=with_id(who["alice"], approval)).value == 3
    assert servicer.calls == 1


def test_approval_timeout_is_checked(start_kernel):
    with pytest.raises(Exception, match="approval_timeout_seconds"):
        start_kernel('[plugins.governance]\napproval_timeout_seconds = -1\n', governance=True)


# -- the rules ---------------------------------------------------------------------------------------
def facts(method="Add", principal="key:alice", actor=""):
    return CallFacts(service=COUNTER, method=method, principal=principal, actor=actor, provider="counter",
                     provider_local=True, privacy_mode=False)


def rules(text: str, **kwargs) -> RuleSet:
    return RuleSet(parse_policy(textwrap.dedent(text), "test.toml"), **kwargs)


def test_ask_parses_and_its_precedence_is_deny_then_ask_then_allow():
    with pytest.raises(PolicyError, match='"allow", "deny" or "ask"'):
        parse_policy('[[rule]]\nid = "x"\neffect = "maybe"\n', "t.toml")
    asked = rules("""
        [[rule]]
        id = "ask-add"
        effect = "ask"
        methods = ["Add"]
        [[rule]]
        id = "allow-all"
        effect = "allow"
        """)
    decision = asked.evaluate(facts())
    assert decision.effect == ASK and list(decision.rule_ids) == ["ask-add"]  # an allow does not bypass an ask
    assert "waits for a person's approval" in decision.reasons[0]
    assert asked.evaluate(facts(method="Get")).effect == pb.EFFECT_ALLOW
    denied = rules("""
        [[rule]]
        id = "ask-add"
        effect = "ask"
        methods = ["Add"]
        [[rule]]
        id = "no-alice"
        effect = "deny"
        principals = ["key:alice"]
        """)
    assert denied.evaluate(facts()).effect == pb.EFFECT_DENY  # a deny wins over an ask
    soft = rules("""
        [[rule]]
        id = "ask-add"
        effect = "ask"
        methods = ["Add"]
        [[rule]]
        id = "soft"
        effect = "deny"
        overridable = true
        """)
    assert soft.evaluate(facts()).effect == ASK
    agents = rules("""
        [[rule]]
        id = "agents-ask"
        effect = "ask"
        principals = ["plugin:cerebrum"]
        """)
    assert agents.evaluate(facts(actor="plugin:cerebrum")).effect == ASK  # an ask naming an actor holds
    assert agents.evaluate(facts()).effect == pb.EFFECT_ALLOW
    exempt = rules('[[rule]]\nid = "ask-all"\neffect = "ask"\n', never_asked=frozenset({(COUNTER, "Add")}))
    assert exempt.evaluate(facts()).effect == pb.EFFECT_ALLOW and exempt.evaluate(facts(method="Get")).effect == ASK


def test_explain_shows_ask_and_asking_everything_never_holds_up_the_approvals(asking, counter_pb2, data_dir):
    counter, gov, who, _servicer, target, _ = asking()
    call = pb.CallDescription(service=COUNTER, method="Add", principal="key:alice")
    decision = gov.Evaluate(pb.EvaluateRequest(call=call), timeout=5, metadata=who["admin"]).decision
    assert decision.effect == pb.EFFECT_ASK and list(decision.rule_ids) == ["adding-needs-a-person"]
    explained = run_cli("policy", "explain", f"{COUNTER}/Add", "--principal", "key:alice",
                        env=cortex_env(data_dir, CORTEX_TARGET=target))
    assert explained.returncode == 0 and explained.stdout.startswith("ASK"), explained.stderr
    listed = run_cli("policy", "list", env=cortex_env(data_dir, CORTEX_TARGET=target))
    assert re.search(r"adding-needs-a-person +ask ", listed.stdout)
    # a rule asking for everything: the approval methods themselves are never asked (they would wait for themselves)
    gov.AddPolicy(pb.AddPolicyRequest(toml='[[rule]]\nid = "ask-everything"\neffect = "ask"\n'), timeout=5,
                  metadata=who["admin"])
    error = refused(counter.Get, counter_pb2.GetRequest(), metadata=who["alice"])
    approval = dict(error.trailing_metadata())[HEADER]
    assert [a.id for a in gov.ListApprovals(pb.ListApprovalsRequest(), timeout=5, metadata=who["alice"]).approvals] == [approval]
    gov.DecideApproval(pb.DecideApprovalRequest(id=approval, approve=True), timeout=5, metadata=who["admin"])
    assert gov.WaitApproval(pb.WaitApprovalRequest(id=approval), timeout=5, metadata=who["alice"]).approval.state == State.STATE_APPROVED
    assert counter.Get(counter_pb2.GetRequest(), timeout=10, metadata=with_id(who["alice"], approval)).provider == "counter"


# -- the hostile review's findings --------------------------------------------------------------------
SECRET = "wombatlantern"  # the word no file of an encrypted data dir may hold
MEMORIES_ASK = """
[plugins]
disabled = ["ollama", "openai", "a2a", "mcp", "http"]
[plugins.memories]
ann_threshold = 2
[[plugins.governance.rule]]
id = "storing-needs-a-person"
effect = "ask"
services = ["cortex.memories.v1.MemoryService"]
methods = ["Store"]
"""


def files_holding(folder, word: str) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and word.encode() in p.read_bytes())


def test_an_encrypted_data_dir_keeps_the_approved_request_in_no_file_and_out_of_the_audit_log(
        start_kernel, channel_to, data_dir, monkeypatch):
    from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
    from cortex.kernel.sdk import at_rest

    passphrase = "correct horse battery staple"
    data_dir.mkdir(parents=True, exist_ok=True)
    marker, _ = at_rest.create(data_dir, passphrase)
    at_rest.write_marker(data_dir, marker)
    monkeypatch.setenv("CORTEX_PASSPHRASE", passphrase)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    target, kt = start_kernel(MEMORIES_ASK, governance=True)
    who = callers(target, data_dir, "alice")
    memories = memories_pb2_grpc.MemoryServiceStub(channel_to(target, as_admin=False))
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target, as_admin=False))
    store = memories_pb2.StoreRequest(text=f"The {SECRET} is kept under the third stair.")
    error = refused(memories.Store, store, metadata=who["alice"])
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    approval = dict(error.trailing_metadata())[HEADER]
    [listed] = gov.ListApprovals(pb.ListApprovalsRequest(), timeout=5, metadata=who["admin"]).approvals
    assert SECRET in listed.summary  # the person reads it, from the store...
    gov.DecideApproval(pb.DecideApprovalRequest(id=approval, approve=True), timeout=5, metadata=who["admin"])
    assert memories.Store(store, timeout=60, metadata=with_id(who["alice"], approval)).created
    # ...but the audit log (plain, and meant to hold no content) never gets it
    entries = audit_entries(kt)
    logged = [e.approval for e in entries if e.WhichOneof("body") == "approval"]
    proven = [e.proof.approval for e in entries if e.WhichOneof("body") == "proof" and e.proof.approval.id]
    assert logged and len(proven) == 2 and all(a.id == approval and not a.summary for a in logged + proven)
    assert proven[-1].request_sha256 and proven[-1].decided_by == "admin"
    assert files_holding(data_dir, SECRET) == []  # while it runs (the -wal files too)
    kt.stop()
    assert (data_dir / "governance" / "approvals.db").exists() and not at_rest.is_plain_sqlite(
        data_dir / "governance" / "approvals.db")
    assert files_holding(data_dir, SECRET) == []
    verified = run_cli("proofs", "verify", "--all", env=cortex_env(data_dir, CORTEX_PASSPHRASE=passphrase))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_one_caller_cannot_flood_the_approvals_nor_hide_anothers(asking, counter_pb2):
    counter, gov, who, _, _, kt = asking()
    codes = []
    for amount in range(1100):  # the reviewer's repro: every request a distinct one
        codes.append(refused(counter.Add, counter_pb2.AddRequest(amount=amount), metadata=who["alice"]).code())
    assert codes[:20] == [grpc.StatusCode.FAILED_PRECONDITION] * 20
    assert set(codes[20:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    over = refused(counter.Add, counter_pb2.AddRequest(amount=5000), metadata=who["alice"])
    assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "20 approvals of yours are waiting: ap-" in over.details()
    assert HEADER not in dict(over.trailing_metadata())
    assert ask(counter, counter_pb2, who["alice"], amount=3)  # one of hers asked again: the same approval, still
    bobs = ask(counter, counter_pb2, who["bob"], amount=1)
    # bob sees his own, and admin finds it first (newest first), or by principal
    assert [a.id for a in gov.ListApprovals(pb.ListApprovalsRequest(), timeout=5, metadata=who["bob"]).approvals] == [bobs]
    newest = gov.ListApprovals(pb.ListApprovalsRequest(limit=1), timeout=5, metadata=who["admin"])
    assert [a.id for a in newest.approvals] == [bobs] and newest.next_page_token
    by_bob = gov.ListApprovals(pb.ListApprovalsRequest(principal="key:bob"), timeout=5, metadata=who["admin"]).approvals
    assert [a.id for a in by_bob] == [bobs]
    # alice may not list bob's by naming him
    assert gov.ListApprovals(pb.ListApprovalsRequest(principal="key:bob"), timeout=5, metadata=who["alice"]).approvals == []
    # paging walks every one once
    seen, token = [], ""
    while True:
        page = gov.ListApprovals(pb.ListApprovalsRequest(limit=7, page_token=token), timeout=5, metadata=who["admin"])
        seen += [a.id for a in page.approvals]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 21 and seen[0] == bobs
    # only the 21 approvals were stored, and no approval entry was written for the refused calls
    assert [e for e in audit_entries(kt) if e.WhichOneof("body") == "approval"] == []
    assert plugin_of(kt, "governance").gate.store.db.execute("SELECT count(*) FROM approvals").fetchone()[0] == 21


def test_decided_and_expired_approvals_are_purged_after_the_retention(tmp_path):
    from cortex.plugins.governance.approvals import ApprovalStore, TooMany

    store = ApprovalStore(tmp_path / "governance" / "approvals.db", tmp_path, max_pending=2, retention_s=0.2)

    def asked(amount: int, timeout: float = 300) -> pb.Approval:
        call = pb.CallDescription(service=COUNTER, method="Add", principal="key:alice")
        return store.request(pb.Approval(call=call, request_sha256=bytes([amount]) * 32), timeout)[0]

    short, kept = asked(1, timeout=0.1), asked(2)
    with pytest.raises(TooMany, match="2 approvals of yours are waiting"):
        asked(3)
    store.decide(short.id, False, "admin", "no")
    time.sleep(0.15)
    assert store.purge() == 0  # expired 0.05 s ago: kept for the retention
    time.sleep(0.3)
    assert store.purge() == 1
    assert store.get(short.id) is None and store.get(kept.id).state == State.STATE_PENDING  # a pending one stays
    assert asked(4).state == State.STATE_PENDING  # (room again)
    store.close()


def test_a_padded_request_cannot_hide_its_namespace_and_the_whole_request_is_shown(
        asking, counter_pb2, data_dir):
    from cortex.contracts.memories.v1 import memories_pb2
    from cortex.plugins.governance.approvals import SUMMARY_CHARS
    from cortex.plugins.governance.gate import summary_of

    padded = memories_pb2.StoreRequest(text="harmless note " * 30, supersedes="mem-the-victim", namespace="shared:payroll",
                                       metadata={f"a{i}": "x" * 1000 for i in range(20)})
    summary, truncated = summary_of(padded, "to memories (local) ")
    assert truncated and len(summary) <= SUMMARY_CHARS and summary.startswith("to memories (local) {")
    assert '"namespace": "shared:payroll"' in summary and '"supersedes": "mem-the-victim"' in summary
    assert '"text": "harmless note' in summary and "(truncated: long fields shortened)" in summary
    many = memories_pb2.StoreRequest(text="t", tags=[f"tag{i}" for i in range(32)], metadata={"k": "v" * 900},
                                     source="s" * 4000, supersedes="mem-x", namespace="shared:payroll", ttl_seconds=5)
    summary, truncated = summary_of(many)
    assert truncated and len(summary) <= SUMMARY_CHARS and '"namespace": "shared:payroll"' in summary
    small, cut = summary_of(counter_pb2.AddRequest(amount=3))
    assert (small, cut) == ('{"amount": "3"}', False)
    # end to end: the list marks it, `cortex approvals show` prints the whole request, to admin and its asker only
    counter, gov, who, _, target, _ = asking()
    approval = ask(counter, counter_pb2, who["alice"], amount=7)
    shown = gov.GetApproval(pb.GetApprovalRequest(id=approval), timeout=5, metadata=who["alice"])
    assert (shown.approval.id, shown.request_type) == (approval, "cortex_test.v1.AddRequest")
    assert counter_pb2.AddRequest.FromString(shown.request).amount == 7 and '"amount": "7"' in shown.request_json
    assert refused(gov.GetApproval, pb.GetApprovalRequest(id=approval), metadata=who["bob"]).code() == grpc.StatusCode.NOT_FOUND
    printed = run_cli("approvals", "show", approval, env=cortex_env(data_dir, CORTEX_TARGET=target))
    assert printed.returncode == 0 and '"amount": "7"' in printed.stdout and "cortex_test.v1.AddRequest" in printed.stdout


def test_an_approved_approval_expires_unused(asking, counter_pb2):
    counter, gov, who, servicer, _, kt = asking(timeout=1)
    approval = ask(counter, counter_pb2, who["alice"])
    decided = gov.DecideApproval(pb.DecideApprovalRequest(id=approval, approve=True), timeout=5, metadata=who["admin"]).approval
    assert decided.expires_unix_nanos == decided.decided_unix_nanos + 1_000_000_000
    time.sleep(1.3)
    late = refused(counter.Add, counter_pb2.AddRequest(amount=3), metadata=with_id(who["alice"], approval))
    assert late.code() == grpc.StatusCode.PERMISSION_DENIED and "expired unused" in late.details(), late.details()
    assert servicer.calls == 0
    assert [(a.state, a.decided_by) for a in approval_entries(kt, approval)] == [
        (State.STATE_APPROVED, "admin"), (State.STATE_EXPIRED, "admin")]


def test_an_approval_shows_and_binds_the_route(start_kernel, channel_to, counter_pb2, data_dir):
    local, cloud = CounterServicer(counter_pb2, "counter"), CounterServicer(counter_pb2, "cloud")
    target, _ = start_kernel(textwrap.dedent(ASKS.format(timeout=300)),
                             [("counter", CounterPlugin(counter_pb2, local)),
                              ("cloud", CounterPlugin(counter_pb2, cloud, local=False, provider="cloud"))], governance=True)
    who = callers(target, data_dir, "alice")
    counter = counter_stub(lambda t: channel_to(t, as_admin=False), target, counter_pb2)
    gov = governance_pb2_grpc.GovernanceServiceStub(channel_to(target, as_admin=False))
    to_cloud = (*who["alice"], ("x-cortex-provider", "cloud"))
    approval = ask(counter, counter_pb2, to_cloud)
    shown = gov.GetApproval(pb.GetApprovalRequest(id=approval), timeout=5, metadata=who["admin"]).approval
    assert (shown.call.provider, shown.call.provider_local, shown.pinned_provider) == ("cloud", False, "cloud")
    assert shown.summary.startswith("to cloud (REMOTE, pinned) ")
    gov.DecideApproval(pb.DecideApprovalRequest(id=approval, approve=True), timeout=5, metadata=who["admin"])
    elsewhere = refused(counter.Add, counter_pb2.AddRequest(amount=3),
                        metadata=(*who["alice"], ("x-cortex-provider", "counter"), (HEADER, approval)))
    assert elsewhere.code() == grpc.StatusCode.PERMISSION_DENIED and "pinned to provider 'cloud'" in elsewhere.details()
    reply = counter.Add(counter_pb2.AddRequest(amount=3), timeout=10, metadata=(*to_cloud, (HEADER, approval)))
    assert reply.provider == "cloud" and local.calls == 0


def test_a_command_that_waits_for_approval_runs_again_with_it(start_kernel, data_dir):
    """`cortex remember` under an ask rule: the command says which approval it waits for and how to
    run it again; approved, the same command with CORTEX_APPROVAL runs once."""
    target, _ = start_kernel("""
[plugins]
disabled = ["ollama", "openai", "a2a", "mcp", "http"]
[[plugins.governance.rule]]
id = "storing-needs-a-person"
effect = "ask"
services = ["cortex.memories.v1.MemoryService"]
methods = ["Store"]
""", governance=True)
    env = cortex_env(data_dir, CORTEX_TARGET=target)
    waiting = run_cli("remember", "The spare key is under the blue pot", env=env)
    assert waiting.returncode == 1 and "FAILED_PRECONDITION" in waiting.stderr, waiting.stderr
    approval = re.search(r"CORTEX_APPROVAL=(ap-[0-9a-f]+)", waiting.stderr).group(1)
    assert run_cli("approvals", "approve", approval, env=env).returncode == 0
    stored = run_cli("remember", "The spare key is under the blue pot", env={**env, "CORTEX_APPROVAL": approval})
    assert stored.returncode == 0, stored.stderr
    again = run_cli("remember", "The spare key is under the blue pot", env={**env, "CORTEX_APPROVAL": approval})
    assert again.returncode == 1 and "PERMISSION_DENIED" in again.stderr  # an approval lets one call through
