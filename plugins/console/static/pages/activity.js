// Activity: the last hour of the kernel's own metrics as charts (uPlot, shipped with the page),
// each with the same figures as a table for screen readers and keyboards; refreshed every 10 s.
import uPlot from "../vendor/uPlot.esm.js";
import { api, h, section, table } from "../app.js";

const REFRESH_MS = 10000;
const color = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const clock = (s) => new Date(s * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

const CHARTS = [
  { title: "Calls per second", unit: "calls/s", series: [["calls/s", "--chart-1", (s, dt) => Number(s.calls ?? 0) / dt]] },
  { title: "Latency", unit: "ms", series: [["p50 ms", "--chart-1", (s) => Number(s.p50_ms ?? 0)], ["p99 ms", "--chart-2", (s) => Number(s.p99_ms ?? 0)]] },
  { title: "Decisions and errors", unit: "calls", series: [["allowed", "--chart-3", (s) => Number(s.allowed ?? 0)],
    ["denied", "--chart-2", (s) => Number(s.denied ?? 0)], ["errors", "--chart-4", (s) => Number(s.errors ?? 0)],
    ["shed at capacity", "--chart-5", (s) => Number(s.shed ?? 0)]] },
  { title: "Circuit openings", unit: "openings", series: [["circuits opened", "--chart-2", (s) => Number(s.circuit_openings ?? 0)]] },
  { title: "Memories stored", unit: "memories", series: [["memories", "--chart-1", (s) => (Number(s.memories ?? 0) < 0 ? null : Number(s.memories ?? 0))]] },
];

function chartData(spec, samples, dt) {
  return [samples.map((s) => Number(s.start)), ...spec.series.map(([, , pick]) => samples.map((s) => pick(s, dt)))];
}

function dataTable(spec, data) {
  const rows = data[0].map((t, i) => ({ t, values: spec.series.map((_, k) => data[k + 1][i]) })).reverse();
  return h("details", {}, h("summary", {}, `${spec.title} as a table`),
    table(`${spec.title}, newest first`, [["Time", (r) => clock(r.t)],
      ...spec.series.map(([label], k) => [label, (r) => (r.values[k] === null ? "unknown" : Number(r.values[k].toFixed(2)).toString())])], rows));
}

function drawChart(spec, data, holder) {
  const width = Math.max(260, Math.min(holder.clientWidth || 600, 1000));
  const axis = { stroke: color("--text"), grid: { stroke: color("--border") }, ticks: { stroke: color("--border") } };
  return new uPlot({
    width, height: 200,
    series: [{ value: (u, v) => (v === null ? "" : clock(v)) },
      ...spec.series.map(([label, variable]) => ({ label, stroke: color(variable), width: 2, points: { show: false } }))],
    axes: [axis, { ...axis, label: spec.unit, labelSize: 20 }], // x: uPlot's own time ticks (seconds)
  }, data, holder);
}

function summary(samples) {
  const byMethod = new Map();
  for (const s of samples) {
    for (const b of s.by_method ?? []) {
      const key = `${b.method}\u0000${b.provider ?? ""}`;
      const sum = byMethod.get(key) ?? { method: b.method, provider: b.provider ?? "", calls: 0, denied: 0, errors: 0 };
      sum.calls += Number(b.calls ?? 0); sum.denied += Number(b.denied ?? 0); sum.errors += Number(b.errors ?? 0);
      byMethod.set(key, sum);
    }
  }
  return [...byMethod.values()].sort((a, b) => b.calls - a.calls);
}

export async function render(root) {
  root.append(h("h1", {}, "Activity"),
    h("p", { class: "lead" }, "The last hour of every call the kernel routed (from any client), in 10-second samples; "
      + "calls shed at capacity (refused with RESOURCE_EXHAUSTED before routing) are counted apart."));
  const boxes = CHARTS.map((spec) => {
    const holder = h("div", { class: "chart", role: "img", "aria-label": `Chart: ${spec.title}; the table below has the same figures` });
    const tableBox = h("div", {});
    root.append(section(spec.title, holder, tableBox));
    return { spec, holder, tableBox, plot: null };
  });
  const methodsBox = h("div", {});
  root.append(section("By contract and provider", methodsBox));
  const refresh = async () => {
    const activity = await api("cortex.console.v1.ConsoleService/GetActivity", { minutes: 60 });
    const samples = activity.samples ?? [];
    const dt = Number(activity.interval_seconds ?? 10);
    for (const box of boxes) {
      const data = chartData(box.spec, samples, dt);
      if (box.plot) box.plot.setData(data); else if (box.holder.isConnected) box.plot = drawChart(box.spec, data, box.holder);
      const open = box.tableBox.querySelector("details")?.open ?? false; // a table being read stays open
      box.tableBox.replaceChildren(dataTable(box.spec, data));
      box.tableBox.querySelector("details").open = open;
    }
    methodsBox.replaceChildren(table("Calls in the last hour by method and provider", [
      ["Method", (r) => h("code", {}, r.method)], ["Provider", (r) => r.provider || "(none)"],
      ["Calls", (r) => String(r.calls)], ["Denied", (r) => String(r.denied)], ["Errors", (r) => String(r.errors)],
    ], summary(samples), "No call in the last hour."));
  };
  await refresh();
  // charts are drawn once the page is in the document (uPlot measures its holder)
  requestAnimationFrame(() => refresh().catch(() => {}));
  const timer = setInterval(() => { if (!document.hidden) refresh().catch(() => {}); }, REFRESH_MS);
  addEventListener("pagehide", () => clearInterval(timer));
}
