// Ask / Run: a goal becomes a plan (shown), the plan runs with each step streamed in as it
// finishes (server-sent events), then the answer with the memories it used and its trace.
import { STEP_STATE, announce, api, field, form, h, link, notice, section, stream } from "../app.js";

const CS = "cortex.cerebrum.v1.CerebrumService";

function stepLine(step) {
  return h("li", { "data-step": step.step_id },
    h("strong", {}, step.step_id), " ", h("code", {}, step.method ?? ""), " — ", STEP_STATE[step.state] ?? step.state ?? "",
    step.provider ? ` by ${step.provider}` : "", step.latency_ms !== undefined ? ` in ${Number(step.latency_ms).toFixed(1)} ms` : "",
    step.error ? h("div", { class: "meta" }, step.error) : null);
}

function answerOf(summary) {
  const citations = summary.citations ?? [];
  const related = summary.related ?? [];
  const memoryItem = (c) => h("li", {},
    c.memory_id ? link(`memories/${encodeURIComponent(c.memory_id)}`, c.heading || c.source || c.memory_id) : c.source,
    c.text ? h("div", { class: "meta" }, c.text) : null);
  return h("div", { class: "run-answer" },
    h("h3", {}, "Answer"),
    h("p", { class: "answer" }, summary.answer || "The plan ran, but gave no answer."),
    citations.length ? h("div", {}, h("h3", {}, "From these memories"), h("ol", {}, citations.map(memoryItem))) : null,
    related.length ? h("div", {}, h("h3", {}, "Related, but not an answer"), h("ul", {}, related.map(memoryItem))) : null,
    (summary.history ?? []).length ? h("div", {}, h("h3", {}, "Earlier, replaced"), h("ul", {}, summary.history.map(memoryItem))) : null,
    h("p", { class: "meta" }, `${summary.steps_ok ?? 0} steps ok, ${summary.steps_failed ?? 0} failed, ${summary.steps_skipped ?? 0} skipped · `,
      link(`traces/${encodeURIComponent(summary.trace_id)}`, "Open the trace")));
}

export async function render(root, { params }) {
  root.append(h("h1", {}, "Ask / Run"),
    h("p", { class: "lead" }, "Type a goal: Cerebrum plans it, the plan runs step by step under your identity, and every step is traced."));
  const planBox = h("div", {}), stepsBox = h("ol", { class: "steps", "aria-label": "Steps as they run" }), answerBox = h("div", {});
  const progress = h("p", { class: "meta", role: "status" });
  const goalForm = form("Run a goal", [
    field("Goal", h("textarea", { name: "goal", required: true }, params.get("goal") ?? ""),
      "For example: summarise what I noted about the garden project"),
  ], "Run", async (data) => {
    const goal = String(data.get("goal") ?? "").trim();
    planBox.replaceChildren(); stepsBox.replaceChildren(); answerBox.replaceChildren();
    if (!goal) return notice("error", "Write a goal first.");
    progress.textContent = "Planning…";
    const { plan } = await api(`${CS}/Plan`, { goal });
    planBox.replaceChildren(h("h3", {}, "Plan"), h("ol", { class: "steps" }, (plan.steps ?? []).map((s) => h("li", {},
      h("strong", {}, s.id), " ", h("code", {}, s.method), (s.depends_on ?? []).length ? ` after ${s.depends_on.join(", ")}` : ""))));
    progress.textContent = `Running ${(plan.steps ?? []).length} steps…`;
    let summary = null;
    await stream(`${CS}/Execute`, { plan, goal }, (message) => {
      if (message.step) {
        const old = stepsBox.querySelector(`[data-step="${CSS.escape(message.step.step_id)}"]`);
        const line = stepLine(message.step);
        if (old) old.replaceWith(line); else stepsBox.append(line);
      }
      if (message.summary) summary = message.summary;
    });
    progress.textContent = summary ? `Finished: ${summary.status ?? ""}` : "Finished.";
    announce(progress.textContent);
    if (summary) answerBox.replaceChildren(answerOf(summary));
    return null;
  });
  root.append(section("Goal", goalForm), section("Run", progress, planBox, h("h3", {}, "Steps"), stepsBox, answerBox));
}
