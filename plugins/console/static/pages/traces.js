// Traces: list and filter; one trace's steps (requests and responses as JSON, latency, provider,
// route); replay it (identical, or the first step that differs, side by side), critique, teach.
import {
  STEP_STATE, announce, api, badge, button, errorNotice, h, link, notice, pretty, section, shortId, table, truncate, when,
} from "../app.js";

const CS = "cortex.cerebrum.v1.CerebrumService";

// "succeeded" / "failed" as a coloured word; another status as it is
const STATUS = { succeeded: ["succeeded", "ok"], failed: ["failed", "bad"] };
// an id cut to its start, linking to the trace (the whole id in the title and on the trace's page)
const traceLink = (id) => link(`traces/${encodeURIComponent(id)}`, h("code", {}, shortId(id)), { title: id });

function stepsCell(t) {
  const ok = t.steps_ok ?? 0, failed = t.steps_failed ?? 0, skipped = t.steps_skipped ?? 0;
  const more = [failed ? `${failed} failed` : "", skipped ? `${skipped} skipped` : ""].filter(Boolean).join(", ");
  return [`${ok} / ${ok + failed + skipped}`, more ? h("div", { class: "meta" }, more) : null];
}

async function renderList(root) {
  root.append(h("h1", {}, "Traces"));
  const { traces = [] } = await api(`${CS}/ListTraces`, { limit: 200 });
  const box = h("div", {});
  const draw = (text) => {
    const q = text.trim().toLowerCase();
    const shown = traces.filter((t) => !q || `${t.trace_id} ${t.goal ?? ""} ${t.status} ${t.answer ?? ""}`.toLowerCase().includes(q));
    box.replaceChildren(table(`${shown.length} of ${traces.length} traces, newest first`, [
      ["When", (t) => when(Number(t.created_unix_ms ?? 0)), "short"],
      // the goal, cut at a word; all of it in the title (and on the trace's page)
      ["Goal", (t) => h("span", { title: t.goal ?? "" }, truncate(t.goal ?? "", 90)), "text"],
      ["Status", (t) => (STATUS[t.status] ? badge(STATUS, t.status) : t.status ?? ""), "short"],
      ["Steps ok", stepsCell, "num"],
      ["Run or replay", (t) => (t.replay_of ? ["replay of ", traceLink(t.replay_of)] : "run"), "short"],
      ["Trace", (t) => traceLink(t.trace_id), "short"],
    ], shown, traces.length ? "No trace matches the filter." : "No trace yet: run a goal on the Ask / Run page."));
  };
  const filter = h("input", { type: "search", id: "trace-filter", autocomplete: "off" });
  filter.addEventListener("input", () => draw(filter.value));
  root.append(h("div", { class: "field" }, h("label", { for: "trace-filter" }, "Filter by goal, id, status or answer"), filter), box);
  draw("");
}

function stepsTable(trace) {
  return table("Steps in the order they ran", [
    ["Step", (s) => [h("strong", {}, s.step_id), h("div", {}, h("code", {}, s.method ?? ""))]],
    ["State", (s) => [STEP_STATE[s.state] ?? s.state ?? "", s.error ? h("div", { class: "meta" }, s.error) : null]],
    ["Provider and route", (s) => [s.provider ?? "", s.route ? h("div", { class: "meta" }, s.route) : null]],
    ["Latency", (s) => `${Number(s.latency_ms ?? 0).toFixed(1)} ms`, "num"],
    ["Request and response", (s) => h("details", {}, h("summary", {}, `JSON of ${s.step_id}`),
      h("h3", {}, "Request"), h("pre", {}, pretty(s.request_json)), h("h3", {}, "Response"), h("pre", {}, pretty(s.response_json)))],
  ], trace.steps ?? []);
}

async function replayResult(trace, replay) {
  if (replay.status === "identical") {
    return notice("ok", h("strong", {}, "Identical"), ": every step gave the same response as recorded.",
      replay.replay_trace_id ? [" ", link(`traces/${encodeURIComponent(replay.replay_trace_id)}`, "Open the replay")] : "");
  }
  const parts = [notice("warn", h("strong", {}, replay.status ?? "Diverged"), replay.step_id ? ` at step ${replay.step_id}` : "",
    replay.reason ? `: ${replay.reason}` : "")];
  if (replay.step_id && replay.replay_trace_id) {
    const again = (await api(`${CS}/GetTrace`, { id: replay.replay_trace_id })).trace;
    const before = (trace.steps ?? []).find((s) => s.step_id === replay.step_id);
    const after = (again.steps ?? []).find((s) => s.step_id === replay.step_id);
    parts.push(h("div", { class: "side-by-side" },
      h("div", {}, h("h3", {}, "Recorded"), h("pre", {}, pretty(before?.response_json))),
      h("div", {}, h("h3", {}, "Replayed"), h("pre", {}, pretty(after?.response_json)))));
  }
  return h("div", {}, parts);
}

async function renderOne(root, id) {
  const { trace } = await api(`${CS}/GetTrace`, { id });
  const summary = trace.summary ?? {};
  root.append(h("p", {}, link("traces", "← All traces")), h("h1", { class: "long-id" }, `Trace ${trace.id}`),
    h("p", { class: "lead" }, `Goal: ${trace.plan?.goal ?? ""} · ${when(Number(trace.created_unix_ms ?? 0))} · ${summary.status ?? ""}`),
    h("div", {}, trace.replay_of ? h("p", {}, "A replay of ", link(`traces/${encodeURIComponent(trace.replay_of)}`, trace.replay_of)) : null,
      summary.answer ? h("p", { class: "answer" }, summary.answer) : null));
  const replayOut = h("div", {}), critiqueOut = h("div", {}), teachOut = h("div", {});
  root.append(section("Steps", stepsTable(trace)),
    section("Replay", h("p", { class: "meta" }, "Runs the recorded plan again and compares every step's response."),
      button("Replay this trace", async () => {
        replayOut.replaceChildren(h("p", { role: "status" }, "Replaying…"));
        try {
          const replay = await api(`${CS}/Replay`, { trace_id: trace.id });
          replayOut.replaceChildren(await replayResult(trace, replay));
          announce(`Replay: ${replay.status}`);
        } catch (error) { replayOut.replaceChildren(errorNotice(error)); }
      }), replayOut),
    section("Critique", button("Critique this trace", async () => {
      try {
        const c = await api(`${CS}/Critique`, { trace_id: trace.id });
        critiqueOut.replaceChildren(h("p", {}, `Score ${Number(c.score ?? 0).toFixed(2)}`),
          h("ul", {}, (c.findings ?? []).map((f) => h("li", {}, f))));
        announce("Critique ready");
      } catch (error) { critiqueOut.replaceChildren(errorNotice(error)); }
    }, { class: "secondary" }), critiqueOut),
    section("Teach", h("p", { class: "meta" }, "Keeps what this run learned as a memory."),
      button("Teach from this trace", async () => {
        try {
          const t = await api(`${CS}/Teach`, { trace_id: trace.id });
          teachOut.replaceChildren(notice("ok", "Remembered: ", link(`memories/${encodeURIComponent(t.memory_id)}`, "open the memory")));
          announce("Taught");
        } catch (error) { teachOut.replaceChildren(errorNotice(error)); }
      }, { class: "secondary" }), teachOut));
}

export async function render(root, { parts }) {
  if (parts[0]) return renderOne(root, decodeURIComponent(parts[0]));
  return renderList(root);
}
