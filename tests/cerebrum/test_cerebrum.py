"""Cerebrum through the kernel's gRPC API: plan, simulate, execute, critique, teach, replay."""

from __future__ import annotations

import json
import re

import grpc
import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc

from ..conftest import cortex_env, run_cli

LOCAL = '[plugins]\ndisabled = ["ollama", "openai"]\n'
GOAL = "summarise what I noted about the garden project"
State = pb.StepRecord


@pytest.fixture(scope="session")
def model_config(tmp_path_factory) -> str:
    """LOCAL with a generation model configured (the tiny model's files at a path of their own):
    Cerebrum then plans with it and answers with Generate, as with a real model."""
    from cortex.plugins.mlx.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("model") / "configured-llama")
    return LOCAL + f'[plugins.mlx]\ngeneration_model = "{folder}"\n'


@pytest.fixture
def brain(start_kernel, channel_to):
    def start(config: str = LOCAL, governance: bool = False):
        target, kt = start_kernel(config, governance=governance)
        channel = channel_to(target)
        memories = memories_pb2_grpc.MemoryServiceStub(channel)
        for text in ("The garden project: raised beds go along the south fence.",
                     "Garden project budget is 300 euros for soil and seeds.",
                     "Unrelated: the car needs new tyres."):
            memories.Store(mem.StoreRequest(text=text, tags=["garden"] if "arden" in text else []), timeout=60)
        return cerebrum_pb2_grpc.CerebrumServiceStub(channel), memories, kt

    return start


def execute(stub, **request):
    events = list(stub.Execute(pb.ExecuteRequest(**request), timeout=120))
    return [e.step for e in events if e.HasField("step")], events[-1].summary


def test_plan_is_deterministic_and_built_from_memories(brain, model_config):
    stub, memories, _ = brain(model_config)
    first = stub.Plan(pb.PlanRequest(goal=GOAL), timeout=120)
    second = stub.Plan(pb.PlanRequest(goal=GOAL), timeout=120)
    assert first.plan.hash == second.plan.hash and len(first.plan.hash) == 64
    assert first.plan.source == "template"  # this model cannot write plans: recorded, not hidden
    assert any("did not answer a valid plan" in r for r in first.repairs)
    found = memories.Search(mem.SearchRequest(query="garden", mode=mem.SEARCH_MODE_KEYWORD, top_k=5), timeout=30)
    garden = {r.memory.id for r in found.results}
    assert set(first.plan.context) >= garden
    assert [s.method for s in first.plan.steps] == [
        "cortex.memories.v1.MemoryService/Search", "cortex.cerebrum.v1.CerebrumService/AnswerPrompt",
        "cortex.models.v1.ModelService/Generate"]


def test_execute_streams_events_and_stores_a_content_addressed_trace(brain, model_config):
    stub, _, _ = brain(model_config)
    plan = stub.Plan(pb.PlanRequest(goal=GOAL), timeout=120).plan
    steps, summary = execute(stub, plan=plan)
    assert [(s.step_id, s.state) for s in steps] == [
        ("recall", State.STATE_STARTED), ("recall", State.STATE_FINISHED),
        ("prompt", State.STATE_STARTED), ("prompt", State.STATE_FINISHED),
        ("answer", State.STATE_STARTED), ("answer", State.STATE_FINISHED),
    ]
    assert summary.status == "succeeded" and (summary.steps_ok, summary.steps_failed) == (3, 0)
    trace = stub.GetTrace(pb.GetTraceRequest(id=summary.trace_id), timeout=10).trace
    recall, prompt, answer = trace.steps
    assert recall.provider == "memories" and answer.provider == "mlx" and answer.route == "mlx:ok"
    system, user = json.loads(answer.request_json)["messages"]  # the references were resolved
    assert "[1]" in user["content"] and "raised beds" in user["content"] and "I don't know." in system["content"]
    assert len(recall.response_sha256) == 32 and trace.plan.hash == plan.hash
    from cortex.plugins.cerebrum.traces import trace_id

    assert trace_id(trace) == trace.id == summary.trace_id
    assert [t.trace_id for t in stub.ListTraces(pb.ListTracesRequest(), timeout=10).traces] == [summary.trace_id]
    # the tiny model writes noise without [n]: an answer that cites nothing, said so
    assert summary.answer_kind == "generated" and summary.answer == json.loads(answer.response_json)["text"].strip()
    assert not summary.citations
    assert any("raised beds" in c["text"] for c in json.loads(prompt.response_json)["citations"])


def test_without_a_language_model_the_answer_is_extractive_and_cited(brain):
    """Out of the box the only generator is the tiny test model: the run answers with sentences of
    the memories, cited, the same way every time, and says how to get written answers."""
    stub, memories, _ = brain()
    planned = stub.Plan(pb.PlanRequest(goal="what is the garden budget?"), timeout=120)
    assert [s.method for s in planned.plan.steps] == [
        "cortex.memories.v1.MemoryService/Search", "cortex.cerebrum.v1.CerebrumService/ExtractAnswer"]
    assert any("no language model is configured" in r and "generation_model" in r for r in planned.repairs)
    _steps, summary = execute(stub, plan=planned.plan)
    assert summary.status == "succeeded" and summary.answer_kind == "extractive"
    assert summary.answer.startswith("Garden project budget is 300 euros for soil and seeds. [1]")
    budget = memories.Search(mem.SearchRequest(query="budget", mode=mem.SEARCH_MODE_KEYWORD, top_k=1), timeout=30).results[0].memory
    assert summary.citations[0].memory_id == budget.id
    assert all("tyres" not in c.text for c in summary.citations)
    _, again = execute(stub, plan=planned.plan)
    assert again.answer == summary.answer  # deterministic


def test_the_extractive_answer_quotes_the_current_fact_and_says_when_nothing_answers(brain):
    """As a person uses it: a fact that changed is answered with the new statement, the old one
    shown only as history; a question no memory answers is declined, with the nearest memories."""
    stub, memories, _ = brain()
    memories.Store(mem.StoreRequest(text="Dentist appointment with Dr. Hartmann on Monday 9 March at 10:00."), timeout=60)
    moved = memories.Store(mem.StoreRequest(
        text="The dentist appointment with Dr. Hartmann moved to Thursday 12 March at 15:00."), timeout=60)
    assert moved.supersedes  # the restatement rule linked them
    _, summary = execute(stub, goal="When is my dentist appointment?")
    assert summary.answer_kind == "extractive" and "Thursday" in summary.answer and "Monday" not in summary.answer
    assert len(summary.citations) == 1
    assert [h.text.split(" (changed on")[0] for h in summary.history] == [
        "earlier: Dentist appointment with Dr. Hartmann on Monday 9 March at 10:00."]

    _, unknown = execute(stub, goal="What is my blood type?")
    assert unknown.answer_kind == "none" and not unknown.citations
    assert unknown.answer == "Nothing in your memories answers “What is my blood type?”."
    assert unknown.related  # the nearest memories, offered as related


def test_teach_then_replan_from_the_taught_example(brain):
    stub, _, _ = brain()
    _, summary = execute(stub, goal=GOAL)
    taught = stub.Teach(pb.TeachRequest(trace_id=summary.trace_id), timeout=60)
    new_goal = "summarise what I noted about the garden project, briefly"
    replanned = stub.Plan(pb.PlanRequest(goal=new_goal), timeout=120)
    assert replanned.plan.source == f"example:{taught.memory_id}" and replanned.plan.goal == new_goal
    steps, _ = execute(stub, plan=replanned.plan)
    assert json.loads(steps[1].request_json)["query"] == new_goal  # ${goal} is the new goal
    assert stub.Teach(pb.TeachRequest(trace_id=summary.trace_id), timeout=60).memory_id == taught.memory_id


def test_replay_is_identical_then_names_the_step_a_memory_edit_changed(brain):
    stub, memories, _ = brain()
    _, summary = execute(stub, goal=GOAL)
    same = stub.Replay(pb.ReplayRequest(trace_id=summary.trace_id), timeout=120)
    assert same.status == "identical" and same.replay_trace_id
    budget = memories.Search(mem.SearchRequest(query="budget", mode=mem.SEARCH_MODE_KEYWORD, top_k=1), timeout=30).results[0].memory
    memories.Update(
        mem.UpdateRequest(id=budget.id, text="Garden project budget is 500 euros.", update_mask={"paths": ["text"]}), timeout=60
    )
    changed = stub.Replay(pb.ReplayRequest(trace_id=summary.trace_id), timeout=120)
    assert (changed.status, changed.step_id) == ("diverged", "recall")
    assert changed.expected_sha256 != changed.actual_sha256
    assert f"memory {budget.id} 'Garden project budget is 300…' now has different text" in changed.reason


def test_a_denied_step_is_caught_by_simulate_before_execute(brain):
    config = LOCAL + """
        [[plugins.governance.rule]]
        id = "no-deleting-by-agents"
        description = "agents may not delete memories"
        effect = "deny"
        methods = ["Delete"]
        principals = ["plugin:*"]
    """
    stub, memories, _ = brain(config, governance=True)
    victim = memories.List(mem.ListRequest(page_size=1), timeout=10).memories[0].id
    plan = pb.Plan(goal="tidy up", steps=[
        pb.Step(id="find", method="cortex.memories.v1.MemoryService/Search", request_json='{"query": "tyres", "top_k": 1}'),
        pb.Step(id="drop", method="cortex.memories.v1.MemoryService/Delete", request_json=json.dumps({"id": victim})),
    ])
    simulated = stub.Simulate(pb.SimulateRequest(plan=plan), timeout=60)
    assert not simulated.ok
    verdicts = {s.step_id: s for s in simulated.steps}
    assert verdicts["find"].allowed and verdicts["find"].provider == "memories"
    assert not verdicts["drop"].allowed and "no-deleting-by-agents: agents may not delete memories" in verdicts["drop"].reasons
    steps, summary = execute(stub, plan=plan)  # and Execute is refused the same way, by the router
    failed = [s for s in steps if s.state == State.STATE_FAILED]
    assert summary.status == "failed" and failed[0].step_id == "drop" and failed[0].status == "PERMISSION_DENIED"
    assert memories.Get(mem.GetRequest(id=victim), timeout=10).memory.id == victim


def test_a_failing_step_is_recorded_and_later_steps_are_skipped(brain):
    stub, _, _ = brain()
    plan = pb.Plan(goal="fail in the middle", steps=[
        pb.Step(id="a", method="cortex.memories.v1.MemoryService/Search", request_json='{"query": "garden", "top_k": 2}'),
        pb.Step(id="b", method="cortex.memories.v1.MemoryService/Get", request_json='{"id": "m-does-not-exist"}', depends_on=["a"]),
        pb.Step(id="c", method="cortex.models.v1.ModelService/Generate",
                request_json='{"prompt": "${steps.b.memory.text}", "max_tokens": 4}'),
    ])
    steps, summary = execute(stub, plan=plan)
    final = {s.step_id: s for s in steps if s.state != State.STATE_STARTED}
    assert final["a"].state == State.STATE_FINISHED
    assert (final["b"].state, final["b"].status) == (State.STATE_FAILED, "NOT_FOUND") and "m-does-not-exist" in final["b"].error
    assert final["c"].state == State.STATE_SKIPPED
    assert (summary.status, summary.steps_ok, summary.steps_failed, summary.steps_skipped) == ("failed", 1, 1, 1)
    critique = stub.Critique(pb.CritiqueRequest(trace_id=summary.trace_id), timeout=30)
    assert critique.score < 0.7 and any("step b failed: NOT_FOUND" in f for f in critique.findings)
    with pytest.raises(grpc.RpcError) as err:
        stub.Teach(pb.TeachRequest(trace_id=summary.trace_id), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "the plan has no steps"),
        ([pb.Step(id="s1", method="no.such.v1.Service/Do", request_json="{}")], "step s1: 'no.such.v1.Service/Do' is not a method served"),
        ([pb.Step(id="s1", method="cortex.memories.v1.MemoryService/Search", request_json='{"qeury": "x"}')],
         "step s1: request_json does not fit cortex.memories.v1.SearchRequest"),
        (
            [pb.Step(id="s1", method="cortex.memories.v1.MemoryService/Search", request_json="{not json")],
            "step s1: request_json is not JSON",
        ),
        ([pb.Step(id="s1", method="cortex.models.v1.ModelService/Generate", request_json='{"prompt": "${steps.s9.text}"}')],
         "step s1: refers to step 's9'"),
        ([pb.Step(id="s1", method="cortex.models.v1.ModelService/GenerateStream", request_json='{"prompt": "x"}')],
         "streams; plan steps must be unary methods"),
        ([pb.Step(id="a", method="cortex.memories.v1.MemoryService/Stats", depends_on=["b"]),
          pb.Step(id="b", method="cortex.memories.v1.MemoryService/Stats", depends_on=["a"])], "depend on each other in a cycle"),
        ([pb.Step(id="a b", method="cortex.memories.v1.MemoryService/Stats")], "step id 'a b'"),
        ([pb.Step(id="a", method="cortex.memories.v1.MemoryService/Stats")] * 2, "step id 'a' is used twice"),
        ([pb.Step(id=f"s{i}", method="cortex.memories.v1.MemoryService/Stats") for i in range(33)], "at most 32"),
        ([pb.Step(id="a", method="cortex.memories.v1.MemoryService/Stats", depends_on=["zz"])], "depends on unknown step 'zz'"),
    ],
)
def test_invalid_plans_are_rejected_precisely(brain, steps, message):
    stub, _, _ = brain()
    for call in (lambda p: stub.Simulate(pb.SimulateRequest(plan=p), timeout=30),
                 lambda p: list(stub.Execute(pb.ExecuteRequest(plan=p), timeout=30))):
        with pytest.raises(grpc.RpcError) as err:
            call(pb.Plan(goal="g", steps=steps))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details()
    assert stub.ListTraces(pb.ListTracesRequest(), timeout=10).traces == []


def test_cli_run_json_and_replay_verdict(tmp_path, serve_process):
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED='["ollama", "openai"]')
    kernel = serve_process(env=env)
    env["CORTEX_TARGET"] = kernel.target
    run_cli("remember", "The orchids need repotting in spring", env=env)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(run_cli("plan", "what did I note about orchids", "--json", env=env).stdout)
    assert run_cli("simulate", str(plan_file), env=env).returncode == 0
    ran = run_cli("run", str(plan_file), "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    trace_id = events[-1]["summary"]["trace_id"]
    assert events[-1]["summary"]["status"] == "succeeded"
    verdict = json.loads(run_cli("replay", trace_id, "--json", env=env).stdout)
    assert verdict["status"] == "identical"
    # a goal in words: the answer is shown, with its sources, and how to get written answers
    ran = run_cli("run", "when do the orchids need repotting?", env=env)
    assert ran.returncode == 0, ran.stderr
    assert "answer (extractive" in ran.stdout and "generation_model" in ran.stdout
    assert "The orchids need repotting in spring [1]" in ran.stdout and "sources:\n  [1] m" in ran.stdout
    run_cli("remember", "Blood pressure averaged 128 over 82 this month", env=env)
    unknown = run_cli("run", "What is my blood type?", env=env)
    assert "answer (none: no memory the run recalled answers this)" in unknown.stdout
    assert "related (nearest, but not an answer):\n  - m" in unknown.stdout
    # a memory stored since the run: its replay says which, and exits 1
    replayed = run_cli("replay", trace_id, env=env)
    assert replayed.returncode == 1, replayed.stderr
    assert replayed.stdout.startswith("diverged at step recall: the memories it read changed: new memory m")
    assert "'Blood pressure averaged 128…' returned at position 2" in replayed.stdout
    # a plan file that is not there is an error, not a goal
    missing = run_cli("run", "missing.json", env=env)
    assert missing.returncode != 0 and "no plan file 'missing.json'" in missing.stderr


def test_a_taught_goal_is_never_substituted_inside_other_words(brain):
    """A plan taught for the goal "query" adapts to another goal without touching its `query`
    field (the goal's words were once replaced everywhere: "top" turned `top_k` into nonsense)."""
    stub, _, _ = brain()
    _, summary = execute(stub, goal="query")
    taught = stub.Teach(pb.TeachRequest(trace_id=summary.trace_id), timeout=60)
    adapted = stub.Plan(pb.PlanRequest(goal="queries"), timeout=120)
    assert adapted.plan.source == f"example:{taught.memory_id}", adapted.repairs
    steps, summary = execute(stub, plan=adapted.plan)
    recall = next(s for s in steps if s.step_id == "recall" and s.state == State.STATE_FINISHED)
    assert json.loads(recall.request_json) == {
        "query": "queries", "top_k": 5, "mode": "SEARCH_MODE_HYBRID", "filter": {"exclude_kinds": ["learning-example"]}}
    assert summary.status == "succeeded"


def test_cancelling_execute_cancels_its_running_steps(start_kernel, channel_to, counter_pb2):
    import threading

    from ..counter_contract import CounterPlugin, CounterServicer

    running, cancelled = threading.Event(), threading.Event()

    class Slow(CounterServicer):
        async def Get(self, request, context):
            import asyncio

            self.calls += 1
            running.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return self.pb2.CountResponse(value=0, provider=self.name)

    slow = Slow(counter_pb2, "slow")
    target, _ = start_kernel(LOCAL, [("slow", CounterPlugin(counter_pb2, slow))])
    stub = cerebrum_pb2_grpc.CerebrumServiceStub(channel_to(target))
    plan = pb.Plan(goal="wait", steps=[
        pb.Step(id="a", method="cortex_test.v1.CounterService/Get", request_json="{}"),
        pb.Step(id="b", method="cortex_test.v1.CounterService/Get", request_json="{}"),
    ])
    call = stub.Execute(pb.ExecuteRequest(plan=plan), timeout=60)
    assert next(call).step.state == State.STATE_STARTED
    assert running.wait(10), "the steps never started"
    call.cancel()
    assert cancelled.wait(10), "the step kept running after the caller cancelled"


def test_a_model_that_writes_plans_plans_and_critique_trims_what_was_not_needed(brain, openai_server):
    """With a language model that answers planning prompts (an OpenAI-compatible endpoint here),
    the plan is the model's; a step whose output nothing used is found by Critique, which proposes
    the plan without it."""
    model_plan = {"steps": [
        {"id": "find", "method": "cortex.memories.v1.MemoryService/Search", "request_json": {"query": "${goal}", "top_k": 3}},
        {"id": "extra", "method": "cortex.memories.v1.MemoryService/Stats", "request_json": {}},
        {"id": "say", "method": "cortex.models.v1.ModelService/Generate", "depends_on": ["find"],
         "request_json": {"prompt": "Notes: ${steps.find.results[*].memory.text}\nAnswer briefly:"}},
    ]}

    def answer(prompt: str) -> str:
        return "Here is the plan: " + json.dumps(model_plan) if "Write a plan as JSON" in prompt else "Raised beds, 300 euros."

    server = openai_server
    server.answer = answer
    config = f"""
[plugins]
disabled = ["ollama"]
[plugins.openai]
base_url = "{server.base_url}"
model = "planner-gpt"
[hybrid]
mlx_first = false
[routing."cortex.models.v1.ModelService"]
order = ["openai", "mlx"]
"""
    stub, _, _ = brain(config)
    planned = stub.Plan(pb.PlanRequest(goal=GOAL), timeout=120)
    assert planned.plan.source == "model:planner-gpt", planned.repairs
    assert [s.id for s in planned.plan.steps] == ["find", "extra", "say"]
    _, summary = execute(stub, plan=planned.plan)
    assert summary.status == "succeeded" and summary.answer == "Raised beds, 300 euros."
    assert summary.answer_kind == "generated" and summary.citations
    critique = stub.Critique(pb.CritiqueRequest(trace_id=summary.trace_id), timeout=60)
    assert "the output of step extra was never used" in critique.findings and critique.score < 1
    assert [s.id for s in critique.revised_plan.steps] == ["find", "say"]

    server.answer = lambda prompt: "I would rather not."  # a model that writes no plan
    fallback = stub.Plan(pb.PlanRequest(goal="list what is in the shed"), timeout=120)
    assert fallback.plan.source == "template" and any("no JSON object" in r for r in fallback.repairs)


@pytest.mark.parametrize(
    ("request_", "outputs", "expected"),
    [
        ({"q": "${steps.a.results[1].memory.text}"}, {"a": {"results": [{"memory": {"text": "x"}}, {"memory": {"text": "y"}}]}},
         {"q": "y"}),
        ({"q": "texts: ${steps.a.results[*].memory.text}"}, {"a": {"results": [{"memory": {"text": "x"}}]}}, {"q": "texts: x"}),
        ({"n": "${steps.a.count}", "l": ["${goal}"]}, {"a": {"count": 3}}, {"n": 3, "l": ["the goal"]}),
        ({"q": "about ${goal}: ${steps.a.meta}"}, {"a": {"meta": {"k": 1}}}, {"q": 'about the goal: {"k": 1}'}),
    ],
)
def test_references_resolve_to_earlier_outputs(request_, outputs, expected):
    from cortex.plugins.cerebrum import plans

    assert plans.resolve(request_, outputs, "the goal") == expected


@pytest.mark.parametrize(
    ("path", "outputs", "message"),
    [
        ("${steps.a.nope}", {"a": {"x": 1}}, "no field 'nope'"),
        ("${steps.a.x[*].y}", {"a": {"x": 1}}, "[*] on something that is not a list"),
        ("${steps.a.x[3]}", {"a": {"x": [1]}}, "no item [3]"),
    ],
)
def test_a_reference_to_what_is_not_there_says_so(path, outputs, message):
    from cortex.plugins.cerebrum import plans

    with pytest.raises(KeyError, match=re.escape(message)):
        plans.resolve({"q": path}, outputs, "g")


def test_a_recall_that_finds_nothing_gives_the_next_step_an_empty_list(brain):
    """Protobuf JSON leaves empty lists out; a step referring to `results[*]` of a search that
    found nothing gets [] and runs (it once failed with "no field 'results'")."""
    stub, _, _ = brain()
    plan = stub.Plan(pb.PlanRequest(goal="what did I note about the garden?"), timeout=120).plan
    recall = next(s for s in plan.steps if s.id == "recall")
    request = json.loads(recall.request_json)
    request["filter"] = {"kinds": ["task"]}  # no memory is a task
    recall.request_json = json.dumps(request)
    steps, summary = execute(stub, plan=plan)
    assert summary.status == "succeeded", [(s.step_id, s.error) for s in steps if s.error]
    found = next(s for s in steps if s.step_id == "recall" and s.state == State.STATE_FINISHED)
    assert json.loads(found.response_json).get("results", []) == []
