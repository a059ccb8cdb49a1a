"""`cortex.cerebrum.v1.CerebrumService`. Every call it makes (memories, models, governance, the
plan's steps) goes through the kernel's router as `plugin:cerebrum`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import structlog
from google.protobuf import json_format

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.cerebrum.v1 import cerebrum_pb2_grpc
from cortex.contracts.events.v1 import events_pb2 as events
from cortex.contracts.governance.v1 import governance_pb2 as gov
from cortex.contracts.kernel.v1 import kernel_pb2
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.models.v1 import models_pb2 as models
from cortex.kernel import APPROVAL_HEADER, PROVIDER_HEADER, RouterError
from cortex.kernel.sdk import relevance

from . import answer_prompt, divergence, extract, plans
from .plans import PlanError, path_of

if TYPE_CHECKING:
    from .plugin import CerebrumPlugin

log = structlog.get_logger("cortex.cerebrum")

SEARCH = "/cortex.memories.v1.MemoryService/Search"
HISTORY = "/cortex.memories.v1.MemoryService/History"
STORE = "/cortex.memories.v1.MemoryService/Store"
GENERATE = "/cortex.models.v1.ModelService/Generate"
EMBED = "/cortex.models.v1.ModelService/Embed"
RERANK = "/cortex.models.v1.RerankService/Rerank"
PROMPT = "/cortex.cerebrum.v1.CerebrumService/AnswerPrompt"
LIST_MODELS = "/cortex.models.v1.ModelService/ListModels"
EXTRACT = "/cortex.cerebrum.v1.CerebrumService/ExtractAnswer"
EVALUATE = "/cortex.governance.v1.GovernanceService/Evaluate"
CONTRACTS = "/cortex.kernel.v1.KernelService/ListContracts"
WAIT_APPROVAL = "/cortex.governance.v1.GovernanceService/WaitApproval"
APPROVAL_WAIT_S = 60.0  # one WaitApproval; a step waits in a loop of them until its approval is decided or expires
STEP_TIMEOUT = 120.0
LEARNING = "learning-example"  # the kind of memory a taught plan is kept as: how to plan, not what is known
# the template's recall step: what is known about the goal (taught plans are not knowledge)
RECALL = {"query": plans.GOAL, "top_k": 5, "mode": "SEARCH_MODE_HYBRID", "filter": {"exclude_kinds": [LEARNING]}}
EXAMPLE_MIN_SCORE = 0.75  # cosine: how close a taught goal must be to be reused
ANSWER_MAX_TOKENS = 256
RERANK_BATCH = 1000  # documents a RerankRequest may hold (and texts an EmbedRequest, with the question)
# A goal asked as a question is answered by the template (recall, then answer): asking a model for
# a plan first cost two more model calls (the plan and its repair) for the same steps. A goal that
# asks for something to be done ("can you remember that...?") is not a question: a model plans it.
QUESTION = re.compile(r"^\s*(who|whom|whose|what|when|where|which|why|how|is|are|am|was|were|does|did)\b|\?\s*$",
                      re.IGNORECASE)
ACTION = re.compile(
    r"^\s*(please\s+)?(remember|save|store|note|write|create|add|delete|remove|forget|update|change|tag|send|schedule"
    r"|remind|summari[sz]e|draft|plan|teach|import|export|make|set|book)\b|\b(can|could|would|will)\s+you\b|\bplease\b"
    r"|^\s*how-to\b", re.IGNORECASE)
State = pb.StepRecord


def sha(message: Any) -> bytes:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()


def as_json(message: Any) -> str:
    return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), sort_keys=True)


def whose(context) -> str | None:
    """The namespace whose traces the caller sees (the kernel's `context.namespace`); None for a
    caller that sees every namespace (admin, the kernel's own parts). Every read of a trace goes
    by it: GetTrace, ListTraces, Critique, Teach, Replay, and a taught example that Plan reuses."""
    return None if getattr(context, "sees_every_namespace", False) else getattr(context, "namespace", "")


def answer_of(plan: pb.Plan, steps: list[pb.StepRecord], summary: pb.TraceSummary) -> None:
    """The run's answer, from its last step when that step answers: an ExtractAnswer (with the
    sentences it quotes), or a Generate (with the memories it cites when its request was written
    by an AnswerPrompt step, else with the memories the run recalled)."""
    last = steps[-1] if steps else None
    if last is None or not last.response_json:
        return
    response = json.loads(last.response_json)
    if path_of(last) == EXTRACT:
        summary.answer, summary.answer_kind = response.get("answer", ""), response.get("answer_kind", "extractive")
        summary.citations.extend(json_format.ParseDict(c, pb.Citation()) for c in response.get("citations", []))
        summary.related.extend(json_format.ParseDict(c, pb.Citation()) for c in response.get("related", []))
        summary.history.extend(json_format.ParseDict(c, pb.Citation()) for c in response.get("history", []))
    elif path_of(last) == GENERATE:
        feeding = {ref for ref, _ in plans.references(json.loads(plan.steps[-1].request_json or "{}"))}
        prompt = next((s for s in steps if s.step_id in feeding and path_of(s) == PROMPT and s.response_json), None)
        if prompt is None:  # a model's own plan: its text, resting on what the run recalled
            summary.answer, summary.answer_kind = response.get("text", ""), "generated"
            summary.citations.extend(recalled(steps))
            return
        numbered = [json_format.ParseDict(c, pb.Citation()) for c in json.loads(prompt.response_json).get("citations", [])]
        question = json.loads(prompt.request_json).get("question", "")
        written = answer_prompt.read_answer(response.get("text", ""), numbered, question)
        summary.answer, summary.answer_kind = written.text, written.kind
        summary.citations.extend(written.citations)
        summary.related.extend(written.related)


def recalled(steps: list[pb.StepRecord]) -> list[pb.Citation]:
    """The memories the run's searches found, once each, in the order found."""
    seen: set[str] = set()
    citations = []
    for step in steps:
        if path_of(step) != SEARCH or not step.response_json:
            continue
        for result in json.loads(step.response_json).get("results", []):
            memory = json_format.ParseDict(result.get("memory", {}), mem.Memory(), ignore_unknown_fields=True)
            if memory.id and memory.id not in seen:
                seen.add(memory.id)
                citations.append(answer_prompt.citation_of(memory))
    return citations


async def _as_they_happen(tasks: list[asyncio.Future], notes: asyncio.Queue):
    """The steps' notes (put on `notes` while they run) and their records as each finishes, in
    the order they happen."""
    pending = set(tasks)
    while pending:
        getter = asyncio.ensure_future(notes.get())
        try:
            done, pending = await asyncio.wait({*pending, getter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        pending.discard(getter)
        if getter in done:
            yield getter.result()
        while not notes.empty():
            yield notes.get_nowait()
        for task in tasks:
            if task in done:
                yield task.result()


class CerebrumServicer(cerebrum_pb2_grpc.CerebrumServiceServicer):
    def __init__(self, plugin: CerebrumPlugin):
        self.p = plugin

    # -- calls through the kernel -------------------------------------------------------------------
    async def call(self, path: str, request: Any, metadata=None) -> tuple[Any, Any]:
        return await self.p.channel.call(path, request, timeout=STEP_TIMEOUT, metadata=metadata)

    async def _try(self, path: str, request: Any) -> Any | None:
        try:
            return (await self.call(path, request))[0]
        except grpc.RpcError as exc:
            log.info("cerebrum.call_failed", method=path, code=exc.code().name, details=exc.details())
            return None

    def method_of(self, path: str):
        return self.p.channel.method(path)

    # -- planning ---------------------------------------------------------------------------------------
    async def make_plan(self, goal: str, namespace: str | None) -> tuple[pb.Plan, list[str]]:
        """A plan for `goal`: a taught example's (its trace read only when it is `namespace`'s, as
        `whose` says: a learning-example may name any trace id), else the model's, else the template."""
        repairs: list[str] = []
        knowledge = mem.Filter(exclude_kinds=[LEARNING])
        found = await self._try(SEARCH, mem.SearchRequest(query=goal, mode=mem.SEARCH_MODE_SEMANTIC, top_k=5, filter=knowledge))
        context = [r.memory.id for r in found.results] if found else []
        example = await self._try(
            SEARCH,
            mem.SearchRequest(query=goal, mode=mem.SEARCH_MODE_SEMANTIC, top_k=1, filter=mem.Filter(kinds=[LEARNING])),
        )
        if example and example.results and example.results[0].score >= EXAMPLE_MIN_SCORE:
            hit = example.results[0].memory
            # the example is among the caller's memories, but the trace it names is read only
            # from the caller's namespace: anyone may write any id into a memory's metadata
            taught = await asyncio.to_thread(self.p.traces.get, hit.metadata.get("trace_id", ""), namespace)
            if taught is not None:
                plan = self.adapt(taught.plan, goal, hit.id, context)
                try:
                    plans.validate(plan, self.method_of)
                    return plan, repairs
                except PlanError as exc:
                    repairs.append(f"the taught example {hit.id} no longer fits: {exc}")
        if not await self.language_model():
            repairs.append(
                "no language model is configured (the built-in tiny model is for tests): an extractive plan that "
                "answers with sentences of your memories; set [plugins.mlx] generation_model, or configure Ollama "
                "or an OpenAI-compatible endpoint, for written answers"
            )
            return self.template(goal, context, generate=False), repairs
        if QUESTION.search(goal) and not ACTION.search(goal):
            return self.template(goal, context), repairs
        plan, notes = await self.plan_with_model(goal, context)
        repairs += notes
        return plan, repairs

    async def language_model(self) -> bool:
        """Whether Generate reaches a model worth asking: one that answers ListModels (routed like
        Generate, so the provider Generate would reach) without marking its default generator
        test_only. (An endpoint need not list the model it is configured with.)"""
        if self.method_of(GENERATE) is None:
            return False
        listed = await self._try(LIST_MODELS, models.ListModelsRequest())
        return listed is not None and not any(
            m.kind == models.ModelInfo.KIND_GENERATION and m.default and m.test_only for m in listed.models
        )

    def adapt(self, example: pb.Plan, goal: str, memory_id: str, context: list[str]) -> pb.Plan:
        """The taught plan for the new goal: its steps as taught, where `${goal}` now stands for
        the new goal (text the taught plan wrote out is kept as written)."""
        return plans.sealed(pb.Plan(goal=goal, steps=example.steps, context=context, source=f"example:{memory_id}"))

    async def plan_with_model(self, goal: str, context: list[str]) -> tuple[pb.Plan, list[str]]:
        """Ask ModelService for a plan (temperature 0: the same goal and memories, the same plan);
        one repair attempt; then the template plan. Every fallback is recorded."""
        repairs: list[str] = []
        methods = sorted(
            m for m in [SEARCH, GENERATE, STORE] if self.method_of(m) is not None
        )
        prompt = (
            "Write a plan as JSON: {\"steps\": [{\"id\": \"s1\", \"method\": \"package.Service/Method\", "
            "\"request_json\": \"{...}\", \"depends_on\": []}]}. Use only these methods: "
            + ", ".join(m.strip("/") for m in methods)
            + ". A value may refer to the goal as ${goal} and to an earlier step's output as ${steps.s1.field}.\nGoal: "
            + goal
            + "\nJSON:"
        )
        for attempt in range(2):
            reply = await self._try(GENERATE, models.GenerateRequest(prompt=prompt, max_tokens=256, temperature=0.0))
            if reply is None:
                repairs.append("no model answered the planning request")
                break
            try:
                plan = self._parse_model_plan(reply.text, goal, context, reply.model)
                plans.validate(plan, self.method_of)
                return plan, repairs
            except (PlanError, ValueError) as exc:
                repairs.append(f"attempt {attempt + 1}: {reply.model} did not answer a valid plan ({exc})")
                prompt += f"\nThat was not valid: {exc}. Answer only the JSON.\nJSON:"
        plan = self.template(goal, context)
        repairs.append("used the template plan: search memories for the goal, then summarise them with a model")
        return plan, repairs

    @staticmethod
    def _parse_model_plan(text: str, goal: str, context: list[str], model: str) -> pb.Plan:
        match = re.search(r"\{.*\}", text, re.S)
        if not match:
            raise ValueError("no JSON object in the answer")
        raw = json.loads(match.group(0))
        steps = []
        for item in raw.get("steps", []):
            request = item.get("request_json", {})
            steps.append(
                pb.Step(
                    id=str(item.get("id", "")), method=str(item.get("method", "")),
                    request_json=request if isinstance(request, str) else json.dumps(request, sort_keys=True),
                    depends_on=[str(d) for d in item.get("depends_on", [])],
                )
            )
        return plans.sealed(pb.Plan(goal=goal, steps=steps, context=context, source=f"model:{model}"))

    def template(self, goal: str, context: list[str], generate: bool = True) -> pb.Plan:
        """Recall memories for the goal, then answer from them: extractively, or with a model
        given an AnswerPrompt (the recalled memories numbered for [n] citations)."""
        memories = "${steps.recall.results[*].memory}"
        steps = [pb.Step(id="recall", method=SEARCH.strip("/"), request_json=json.dumps(RECALL, sort_keys=True))]
        if not generate:
            request = {"question": plans.GOAL, "memories": memories}
            steps.append(pb.Step(id="answer", method=EXTRACT.strip("/"), depends_on=["recall"],
                                 request_json=json.dumps(request, sort_keys=True)))
        elif self.method_of(GENERATE) is not None:
            steps.append(pb.Step(id="prompt", method=PROMPT.strip("/"), depends_on=["recall"],
                                 request_json=json.dumps({"question": plans.GOAL, "memories": memories}, sort_keys=True)))
            chat = {"messages": [{"role": "system", "content": "${steps.prompt.system}"},
                                 {"role": "user", "content": "${steps.prompt.user}"}],
                    "labels": "${steps.prompt.labels}", "max_tokens": ANSWER_MAX_TOKENS, "temperature": 0}
            steps.append(pb.Step(id="answer", method=GENERATE.strip("/"), depends_on=["prompt"],
                                 request_json=json.dumps(chat, sort_keys=True)))
        return plans.sealed(pb.Plan(goal=goal, steps=steps, context=context, source="template"))

    async def Plan(self, request, context):
        if not request.goal.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "goal is empty: say what to achieve")
        plan, repairs = await self.make_plan(request.goal, whose(context))
        return pb.PlanResponse(plan=plan, repairs=repairs)

    async def _checked(self, plan: pb.Plan, context) -> pb.Plan:
        try:
            plans.validate(plan, self.method_of)
        except PlanError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid plan: {exc}")
        return plans.sealed(plan)

    # -- simulate -----------------------------------------------------------------------------------------
    async def Simulate(self, request, context):
        plan = await self._checked(request.plan, context)
        contracts = await self._try(CONTRACTS, kernel_pb2.ListContractsRequest())
        first = {c.service: c.providers[0] for c in contracts.contracts if c.providers} if contracts else {}
        can_evaluate = self.method_of(EVALUATE) is not None
        results, ok = [], True
        for step in plan.steps:
            service, _, method = step.method.strip("/").partition("/")
            provider = first.get(service)
            sim = pb.StepSimulation(step_id=step.id, method=step.method, provider=provider.name if provider else "",
                                    references_ok=True, allowed=True)
            request_value = json.loads(step.request_json or "{}")
            fields = {k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in request_value.items()
                      if not isinstance(v, (dict, list))}
            if can_evaluate:
                # a step runs as the caller, with Cerebrum as its actor (the kernel's delegation rule)
                call = gov.CallDescription(
                    service=service, method=method, principal=getattr(context, "principal", "") or self.p.principal,
                    actor=self.p.principal, provider=sim.provider,
                    provider_local=provider.local if provider else True, fields=fields,
                    labels=[str(t) for t in request_value.get("tags", []) + request_value.get("labels", [])],
                )
                verdict = await self._try(EVALUATE, gov.EvaluateRequest(call=call))
                if verdict is not None:
                    sim.allowed = verdict.decision.effect != gov.EFFECT_DENY
                    sim.asks = verdict.decision.effect == gov.EFFECT_ASK  # allowed, once a person approves
                    sim.reasons.extend(verdict.decision.reasons)
                    if sim.asks:
                        sim.reasons.append("the step will wait for a person's approval (`cortex approvals approve ID`)")
            else:
                sim.reasons.append("no governance plugin: allowed by default")
            if not sim.allowed:
                sim.problem = "denied by policy"
            ok = ok and sim.allowed and sim.references_ok
            results.append(sim)
        return pb.SimulateResponse(ok=ok, steps=results)

    # -- execute --------------------------------------------------------------------------------------------
    async def _run_step(
        self, step: pb.Step, goal: str, outputs: dict[str, Any], pin: str = "", recorded: str = "",
        notify: Any = lambda record: None,
    ) -> pb.StepRecord:
        """Run one step. A step waiting for a person's approval is told to `notify` (the Execute
        stream shows it) while it waits."""
        record = pb.StepRecord(step_id=step.id, method=step.method, state=State.STATE_STARTED, started_unix_ms=time.time_ns() // 1_000_000)
        path = path_of(step)
        method = self.method_of(path)
        started = time.monotonic()
        try:
            value = json.loads(recorded) if recorded else plans.resolve(json.loads(step.request_json or "{}"), outputs, goal)
            message = json_format.ParseDict(value, method.input())
        except (KeyError, IndexError, json_format.ParseError, AttributeError, TypeError, ValueError) as exc:
            record.state, record.status, record.error = State.STATE_FAILED, "INVALID_ARGUMENT", f"could not build the request: {exc}"
            return record
        record.request_json = as_json(message)
        record.request_sha256 = sha(message)
        metadata = ((PROVIDER_HEADER, pin),) if pin else ()
        try:
            response, outcome = await self._call_approved(path, message, metadata, record, notify)
        except grpc.RpcError as exc:
            outcome = getattr(exc, "outcome", None)
            record.state, record.status, record.error = State.STATE_FAILED, exc.code().name, exc.details()
            record.route = outcome.route if outcome else ""
        else:
            record.state, record.status = State.STATE_FINISHED, "OK"
            record.response_json = as_json(response)
            record.response_sha256 = sha(response)
            record.provider, record.route = outcome.provider or "", outcome.route
            # Every field, empty ones too: a search that found nothing is `results: []` to the
            # steps that refer to it, not a missing field that fails them.
            outputs[step.id] = json_format.MessageToDict(response, preserving_proto_field_name=True,
                                                         always_print_fields_with_no_presence=True)
        record.latency_ms = (time.monotonic() - started) * 1000
        return record

    async def _call_approved(self, path: str, message: Any, metadata: tuple, record: pb.StepRecord, notify: Any):
        """Call the step; one that a rule asks a person for (FAILED_PRECONDITION with an
        x-cortex-approval trailer) waits for the decision, then is retried once with the approval.
        A denied or expired approval fails the step PERMISSION_DENIED. A replay asks again: an
        approval lets one call through, never a later one."""
        try:
            return await self.call(path, message, metadata or None)
        except grpc.RpcError as exc:
            approval = dict(exc.trailing_metadata() or ()).get(APPROVAL_HEADER, "")
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or not approval:
                raise
        record.approval_id = approval
        hint = f"waiting for approval {approval}: `cortex approvals approve {approval}`"
        notify(pb.StepRecord(step_id=record.step_id, method=record.method, state=State.STATE_WAITING,
                             approval_id=approval, status="FAILED_PRECONDITION", error=hint,
                             request_json=record.request_json, request_sha256=record.request_sha256))
        log.info("cerebrum.step_waits", step=record.step_id, approval=approval)
        decided = await self._decision_on(approval)
        if decided.state != gov.Approval.STATE_APPROVED:
            why = ("nobody decided in time, so it is denied" if decided.state == gov.Approval.STATE_EXPIRED
                   else f"denied by {decided.decided_by}" + (f" ({decided.note})" if decided.note else ""))
            raise RouterError(grpc.StatusCode.PERMISSION_DENIED, f"approval {approval}: {why}")
        return await self.call(path, message, (*metadata, (APPROVAL_HEADER, approval)))

    async def _decision_on(self, approval: str) -> gov.Approval:
        """Wait until `approval` is decided or expired. Waiting is Cerebrum's own work (the caller
        chose the step, not the wait); the caller going away cancels it."""
        own = self.p.channel.for_own_work()
        while True:
            reply, _ = await own.call(WAIT_APPROVAL, gov.WaitApprovalRequest(id=approval, wait_seconds=APPROVAL_WAIT_S),
                                      timeout=APPROVAL_WAIT_S + 10)
            if reply.approval.state != gov.Approval.STATE_PENDING:
                return reply.approval

    async def run(self, plan: pb.Plan, call_id: str, namespace: str, replay_of: pb.Trace | None = None,
                  labels: set[str] | None = None):
        """Yield step records as they happen, then the trace, stored as `namespace`'s, with
        `labels` (the serving call's: what its steps read, known once they ran)."""
        outputs: dict[str, Any] = {}
        records: dict[str, pb.StepRecord] = {}
        recorded = {r.step_id: r for r in replay_of.steps} if replay_of else {}
        failed = False
        for level in plans.order(plan):
            if failed:
                break
            for step in level:
                yield pb.StepRecord(step_id=step.id, method=step.method, state=State.STATE_STARTED)
            notes: asyncio.Queue[pb.StepRecord] = asyncio.Queue()  # a step's news while it runs (waiting for approval)
            tasks = [
                asyncio.ensure_future(
                    self._run_step(step, plan.goal, outputs, recorded[step.id].provider if step.id in recorded else "",
                                   recorded[step.id].request_json if step.id in recorded else "", notes.put_nowait)
                )
                for step in level
            ]
            try:
                async for record in _as_they_happen(tasks, notes):
                    if record.state != State.STATE_WAITING:
                        records[record.step_id] = record
                        failed = failed or record.state == State.STATE_FAILED
                    yield record
            finally:
                # The caller went away (this generator is closed at a yield) or a step crashed: the
                # level's other steps stop too. (A TaskGroup would do this, but it wraps the
                # generator's GeneratorExit in an exception group, which an async generator may not raise.)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        for step in plan.steps:
            if step.id not in records:
                record = pb.StepRecord(step_id=step.id, method=step.method, state=State.STATE_SKIPPED,
                                       error="skipped: an earlier step failed")
                records[step.id] = record
                yield record
        steps = [records[s.id] for s in plan.steps]
        summary = pb.TraceSummary(
            status="failed" if failed else "succeeded",
            steps_ok=sum(r.state == State.STATE_FINISHED for r in steps),
            steps_failed=sum(r.state == State.STATE_FAILED for r in steps),
            steps_skipped=sum(r.state == State.STATE_SKIPPED for r in steps),
        )
        if not failed:
            answer_of(plan, steps, summary)
        summary.labels.extend(sorted(labels or ()))
        trace = pb.Trace(plan=plan, steps=steps, summary=summary, created_unix_ms=time.time_ns() // 1_000_000,
                         call_id=call_id, replay_of=replay_of.id if replay_of else "")
        summary.trace_id = await asyncio.to_thread(self.p.traces.put, trace, namespace)
        trace.summary.trace_id = summary.trace_id
        self._announce(trace)
        yield trace

    def _announce(self, trace: pb.Trace) -> None:
        """Publish `trace.finished` on the event bus, when one is served, without holding the run
        up. It names the trace and how it ended, not the goal or the answers (events may leave the
        machine through webhooks)."""
        if self.p.channel is None:
            return
        summary = trace.summary
        data = json.dumps({"id": summary.trace_id, "status": summary.status, "steps_ok": summary.steps_ok,
                           "steps_failed": summary.steps_failed, "replay_of": trace.replay_of})
        self.p.channel.publish(events.Event(type="trace.finished", source="cortex/cerebrum", subject=summary.trace_id,
                                            data=data, datacontenttype="application/json", trace_id=summary.trace_id))

    async def Execute(self, request, context):
        if request.HasField("plan"):
            plan = await self._checked(request.plan, context)
        elif request.goal.strip():
            plan, _ = await self.make_plan(request.goal, whose(context))
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "send a plan, or a goal to plan")
        async for item in self.run(plan, getattr(context, "call_id", ""), getattr(context, "namespace", ""),
                                   labels=getattr(context, "labels", None)):
            if isinstance(item, pb.Trace):
                yield pb.ExecuteResponse(summary=item.summary)
            else:
                yield pb.ExecuteResponse(step=item)

    # -- after the fact -------------------------------------------------------------------------------------
    async def _trace(self, trace_id: str, context) -> pb.Trace:
        trace = await asyncio.to_thread(self.p.traces.get, trace_id, whose(context)) if trace_id else None
        if trace is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no trace {trace_id!r}; `cortex traces list` shows them")
        return trace

    async def GetTrace(self, request, context):
        return pb.GetTraceResponse(trace=await self._trace(request.id, context))

    async def ListTraces(self, request, context):
        limit = request.limit or 50
        if limit > 1000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "limit: at most 1000")
        traces = await asyncio.to_thread(self.p.traces.recent, limit, whose(context))
        reply = pb.ListTracesResponse(traces=[t.summary for t in traces])
        for listed, trace in zip(reply.traces, traces, strict=True):  # what tells one run from another in a list
            listed.goal, listed.created_unix_ms, listed.replay_of = trace.plan.goal, trace.created_unix_ms, trace.replay_of
        return reply

    async def Critique(self, request, context):
        trace = await self._trace(request.trace_id, context)
        findings, score = [], 1.0
        used = {ref for s in trace.plan.steps for ref, _ in plans.references(json.loads(s.request_json or "{}"))}
        used |= {d for s in trace.plan.steps for d in s.depends_on}
        last = trace.plan.steps[-1].id if trace.plan.steps else ""
        for record in trace.steps:
            if record.state == State.STATE_FAILED:
                score -= 0.4
                findings.append(f"step {record.step_id} failed: {record.status}: {record.error}")
            elif record.state == State.STATE_SKIPPED:
                score -= 0.1
                findings.append(f"step {record.step_id} was skipped")
            if "," in record.route:
                score -= 0.1
                findings.append(f"step {record.step_id} needed more than one provider ({record.route})")
            if record.latency_ms > 10_000:
                score -= 0.1
                findings.append(f"step {record.step_id} took {record.latency_ms / 1000:.1f}s")
            if record.step_id not in used and record.step_id != last:
                score -= 0.05
                findings.append(f"the output of step {record.step_id} was never used")
        revised = None
        dead = [r.step_id for r in trace.steps if r.step_id not in used and r.step_id != last] + [
            r.step_id for r in trace.steps if r.state == State.STATE_FAILED and "PERMISSION_DENIED" in r.status
        ]
        if dead:
            keep = [s for s in trace.plan.steps if s.id not in dead]
            candidate = plans.sealed(pb.Plan(goal=trace.plan.goal, steps=keep, context=trace.plan.context, source="critique"))
            try:
                plans.validate(candidate, self.method_of)
                revised = candidate
                findings.append(f"revised plan drops {', '.join(dead)}")
            except PlanError as exc:
                findings.append(f"no revision proposed: dropping {', '.join(dead)} breaks the plan ({exc})")
        return pb.CritiqueResponse(score=max(0.0, round(score, 3)), findings=findings or ["clean run"], revised_plan=revised)

    async def ExtractAnswer(self, request, context):
        limit = request.max_sentences or 3
        if not request.question.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "question is empty: say what to answer")
        if not 1 <= limit <= 10:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"max_sentences is {limit}; ask for 1 to 10")
        if not 0 <= request.min_relevance <= 1:  # NaN too
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"min_relevance is {request.min_relevance}; give 0 to 1")
        memories = list(request.memories)
        headings = [m.metadata.get("heading", "") for m in memories]
        sentences = extract.sentences_of([m.text for m in memories], headings)
        passages = [extract.passage(s, headings[s.memory_index]) for s in sentences]
        scores = await self.relevance(request.question, passages, answer_prompt.labels_of(memories)) if sentences else []
        chosen = extract.choose(request.question, sentences, scores, memories, limit, request.min_relevance or extract.BOUNDARY)
        if not chosen:
            return pb.ExtractAnswerResponse(
                answer=answer_prompt.nothing_answers(request.question), answer_kind="none",
                related=[answer_prompt.citation_of(m) for m in memories[:answer_prompt.RELATED]])
        citations = [answer_prompt.citation_of(memories[c.sentence.memory_index], c.sentence.text) for c in chosen]
        answer = " ".join(f"{c.text} [{n}]" for n, c in enumerate(citations, start=1))
        history = [answer_prompt.earlier(memories[c.earlier.memory_index], c.earlier.text, memories[c.sentence.memory_index])
                   for c in chosen if c.earlier is not None]
        return pb.ExtractAnswerResponse(answer=answer, citations=citations, answer_kind="extractive", history=history)

    async def relevance(self, question: str, passages: list[str], labels: list[str]) -> list[float]:
        """RerankService's scores for `passages` (in batches the contract allows), sent with the
        labels of the memories they come from; served by no provider, failing, or answering scores
        that are not 0 to 1: the same score from Embed's vectors; without either, the share of the
        question's key terms (0 for a passage without the kind of answer asked for)."""
        scores: list[float] = []
        if self.method_of(RERANK) is not None:
            for start in range(0, len(passages), RERANK_BATCH):
                batch = passages[start:start + RERANK_BATCH]
                reranked = await self._try(RERANK, models.RerankRequest(query=question, documents=batch, labels=labels))
                if reranked is None or len(reranked.scores) != len(batch) or not all(0 <= x <= 1 for x in reranked.scores):
                    if reranked is not None:
                        log.warning("cerebrum.rerank_unusable", provider=reranked.provider, scores=len(reranked.scores),
                                    documents=len(batch))
                    scores = []
                    break
                scores += reranked.scores
            if len(scores) == len(passages):
                return scores
        scores = []
        for start in range(0, len(passages), RERANK_BATCH):
            batch = passages[start:start + RERANK_BATCH]
            embedded = await self._try(EMBED, models.EmbedRequest(texts=[question, *batch], labels=labels))
            if embedded is None or len(embedded.vectors) != len(batch) + 1:
                break
            rows = np.array([v.values for v in embedded.vectors], dtype=np.float32)
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
            scores += relevance.relevance(rows[0], rows[1:], question, batch)
        if len(scores) == len(passages):
            return scores
        terms = relevance.key_terms(question)
        return [relevance.coverage(terms, p) if typed else 0.0
                for p, typed in zip(passages, relevance.typed(question, passages), strict=True)]

    async def AnswerPrompt(self, request, context):
        if not request.question.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "question is empty: say what to answer")
        written = answer_prompt.compose(request.question, list(request.memories))
        return pb.AnswerPromptResponse(system=written.system, user=written.user, citations=written.citations,
                                       labels=written.labels)

    async def Teach(self, request, context):
        trace = await self._trace(request.trace_id, context)
        if trace.summary.status != "succeeded":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "only a succeeded trace can be taught; critique it instead")
        try:
            reply, _ = await self.call(
                STORE,
                mem.StoreRequest(text=trace.plan.goal, kind=LEARNING, tags=["cerebrum"],
                                 metadata={"trace_id": trace.id, "plan_hash": trace.plan.hash}, source=f"cerebrum:trace/{trace.id}"),
            )
        except grpc.RpcError as exc:
            await context.abort(exc.code(), f"could not store the example: {exc.details()}")
        return pb.TeachResponse(memory_id=reply.id)

    async def Replay(self, request, context):
        original = await self._trace(request.trace_id, context)
        replayed, labels = None, getattr(context, "labels", None)
        if labels is not None:  # the recorded requests quote what the run read: they go where it could
            labels.update(original.summary.labels)
        async for item in self.run(original.plan, getattr(context, "call_id", ""), getattr(context, "namespace", ""),
                                   replay_of=original, labels=labels):
            if isinstance(item, pb.Trace):
                replayed = item
        for before, after in zip(original.steps, replayed.steps, strict=True):
            if before.state == after.state and self._read_the_same(before, after):
                continue
            if after.state != State.STATE_FINISHED:
                reason = (
                    f"the step now fails: {after.status}: {after.error}" if after.state == State.STATE_FAILED
                    else "the step did not run"
                )
            elif before.state != State.STATE_FINISHED:
                reason = ("the step now runs (when recorded it failed: "
                          f"{before.status}: {before.error})" if before.state == State.STATE_FAILED
                          else "the step now runs (when recorded it did not)")
            elif before.provider != after.provider:
                reason = f"a different provider served it ({before.provider} then, {after.provider} now)"
            elif path_of(before) in divergence.READS:
                reason = await self._what_it_read(before, after)
            elif before.method.startswith("cortex.memories."):
                reason = "a changed memory: the same request now reads different memories"
            elif before.method.startswith("cortex.models."):
                reason = "a model change: the same request and seed now generate different output"
            else:
                reason = "the same request now gets a different response"
            return pb.ReplayResponse(status="diverged", step_id=before.step_id, expected_sha256=before.response_sha256,
                                     actual_sha256=after.response_sha256, reason=reason, replay_trace_id=replayed.id)
        return pb.ReplayResponse(status="identical", replay_trace_id=replayed.id)

    def _read_the_same(self, before: pb.StepRecord, after: pb.StepRecord) -> bool:
        """Whether a replayed step's response says what the recorded one said, less what does not
        say what the step read (divergence.NOT_READ: a search's scores move when any other memory
        or watched file changes, its memories do not)."""
        if before.response_sha256 == after.response_sha256:
            return True
        method = self.method_of(path_of(before))
        if method is None or not before.response_json or not after.response_json:
            return False
        try:
            return (divergence.read_digest(before.response_json, method.output)
                    == divergence.read_digest(after.response_json, method.output))
        except json_format.ParseError:
            return False

    async def _what_it_read(self, before: pb.StepRecord, after: pb.StepRecord) -> str:
        """What changed in the memories a step read: the first few differences, each with what
        the memory's history says (its versions; that it was deleted), and how many more."""
        path = path_of(before)
        method = self.method_of(path)
        try:
            if method is None:  # no longer served
                raise json_format.ParseError(path)
            read = [divergence.READS[path](divergence.parsed(r.response_json, method.output)) for r in (before, after)]
        except json_format.ParseError:  # or a response it cannot read
            return "a changed memory: the same request now reads different memories"
        found = divergence.differences(*read)
        if not found:
            return "the same request now gets a different response, though it returns the same memories"
        for difference in found[:divergence.SHOWN]:
            if difference.memory is not None and (said := await self._history_of(difference)):
                difference.details.append(said)
        return "the memories it read changed: " + divergence.worded(found)

    async def _history_of(self, difference: divergence.Difference) -> str:
        """What a memory's History says about a difference: "version 2 → 3" (the version the run
        read, and the current one), or of a memory no longer returned, that it was deleted, is
        unchanged, or that a newer memory replaces it (Search ranks that one above it)."""
        recorded = difference.memory
        try:
            history, _ = await self.call(HISTORY, mem.HistoryRequest(id=recorded.id))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and difference.kind == "gone":
                return "it was deleted, or has expired"
            log.info("cerebrum.call_failed", method=HISTORY, code=exc.code().name, details=exc.details())
            return ""

        def body(memory: mem.Memory) -> tuple:  # what a version keeps (memories' VERSIONED, less times)
            return memory.kind, memory.text, list(memory.tags), dict(memory.metadata), memory.source

        if body(history.memory) == body(recorded):
            if difference.kind != "gone":
                return ""
            newer = history.superseded_by.new_id if history.HasField("superseded_by") else ""
            return f"it is still stored, but {newer} replaces it" if newer else "it is still stored, unchanged"
        current = len(history.versions) + 1
        then = next((v.version for v in reversed(history.versions) if body(v.memory) == body(recorded)), None)
        if then is None and current == 1:  # changed without a version kept (a watched passage's lines moved)
            return ""
        version = f"version {then} → {current}" if then is not None else f"now version {current}"
        changed = "it has changed since: " if difference.kind == "gone" else ""
        return f"{changed}{version}; `cortex memories history {recorded.id}`"
