// Overview: the kernel, its plugins (enable/disable for the admin) and its contracts with their
// providers in routing order, health, circuit state and whether a plain call would be admitted
// (and if not, why: privacy mode, a required plugin down, ...), refreshed every few seconds.
import { api, announce, badge, button, errorNotice, h, notice, section, table } from "../app.js";

const STATE = { STATE_LOADED: ["loaded", "ok"], STATE_DISABLED: ["disabled", "warn"], STATE_BROKEN: ["broken", "bad"] };
const HEALTH = { HEALTH_SERVING: ["serving", "ok"], HEALTH_NOT_SERVING: ["not serving", "bad"] };
const CIRCUIT = { CIRCUIT_CLOSED: ["closed", "ok"], CIRCUIT_OPEN: ["open", "bad"], CIRCUIT_HALF_OPEN: ["half-open", "warn"] };
const ADMITTED = { yes: ["admitted", "ok"], no: ["not admitted", "bad"] };
const REFRESH_MS = 5000;


function infoCards(info, me) {
  const governed = (info.governed_by ?? []).length;
  return h("dl", { class: "grid" },
    h("div", { class: "card" }, h("dt", {}, "Version"), h("dd", {}, info.version ?? "")),
    h("div", { class: "card" }, h("dt", {}, "Privacy mode"), h("dd", {}, info.privacy_mode ? "on: nothing leaves this machine" : "off")),
    h("div", { class: "card" }, h("dt", {}, "Governed"), h("dd", {}, governed ? `yes, by ${info.governed_by.join(", ")}` : "no: calls are not checked or audited")),
    h("div", { class: "card" }, h("dt", {}, "gRPC listener"), h("dd", {}, info.listen ?? "")),
    h("div", { class: "card" }, h("dt", {}, "Up for"), h("dd", {}, `${Math.round(info.uptime_seconds ?? 0)} s`)),
    h("div", { class: "card" }, h("dt", {}, "You are"), h("dd", {}, me.principal || "not signed in")));
}

function pluginsTable(plugins, me, refresh, output) {
  const toggle = (p) => {
    const enabled = p.state === "STATE_LOADED";
    const verb = enabled ? "Disable" : "Enable";
    return button(`${verb} ${p.name}`, async () => {
      try {
        await api(`cortex.kernel.v1.PluginService/${verb}`, { name: p.name });
        announce(`${p.name} ${enabled ? "disabled" : "enabled"}`);
        output.replaceChildren(notice("ok", `${p.name} ${enabled ? "disabled" : "enabled"}.`));
        await refresh();
      } catch (error) {
        output.replaceChildren(errorNotice(error));
      }
    }, { class: "secondary", "data-plugin": p.name });
  };
  const columns = [
    ["Plugin", (p) => h("strong", {}, p.name)], ["Version", (p) => p.version ?? ""],
    ["State", (p) => [badge(STATE, p.state), p.error ? h("div", { class: "meta" }, p.error) : null]],
    ["Contracts", (p) => (p.contracts ?? []).join(", ")], ["From", (p) => p.source ?? ""],
  ];
  if (me.admin) columns.push(["Change", (p) => (p.name === "console" || p.name === "http") ? "" : toggle(p)]);
  return table("Every plugin the kernel found", columns, plugins);
}

function contractsTable(contracts) {
  const rows = contracts.flatMap((c) => (c.providers ?? [{ name: "(none)" }]).map((p, i) => ({ c, p, i })));
  return table("Contracts and their providers, in routing order", [
    ["Contract", (r) => r.i === 0 ? h("code", {}, r.c.service) : ""],
    ["#", (r) => String(r.i + 1)],
    ["Provider", (r) => [r.p.name, r.p.local === false || r.p.endpoint ? h("div", { class: "meta" }, r.p.endpoint || "remote") : null]],
    ["Health", (r) => [badge(HEALTH, r.p.health), r.p.health_detail ? h("div", { class: "meta" }, r.p.health_detail) : null]],
    ["Circuit", (r) => badge(CIRCUIT, r.p.circuit)],
    // the kernel's admission, for a plain call now (a caller's scopes and the policy are judged per call)
    ["Admission", (r) => r.p.name === "(none)" ? "" : r.p.admission
      ? [badge(ADMITTED, "no"), h("div", { class: "meta" }, r.p.admission)] : badge(ADMITTED, "yes")],
    ["Calls / failures", (r) => `${r.p.calls ?? 0} / ${r.p.failures ?? 0}`],
    ["Latency", (r) => r.p.latency_ms ? `${Number(r.p.latency_ms).toFixed(1)} ms` : ""],
    ["Last error", (r) => r.p.last_error ?? ""],
  ], rows);
}

export async function render(root, { me }) {
  root.append(h("h1", {}, "Overview"));
  const [info, plugins, contracts] = await Promise.all([
    api("cortex.kernel.v1.KernelService/GetInfo"),
    api("cortex.kernel.v1.KernelService/ListPlugins"),
    api("cortex.kernel.v1.KernelService/ListContracts"),
  ]);
  const output = h("div", {});
  const pluginsBox = h("div", {}), contractsBox = h("div", {});
  const refresh = async () => {
    const [p, c] = await Promise.all([api("cortex.kernel.v1.KernelService/ListPlugins"),
      api("cortex.kernel.v1.KernelService/ListContracts")]);
    pluginsBox.replaceChildren(pluginsTable(p.plugins ?? [], me, refresh, output));
    contractsBox.replaceChildren(contractsTable(c.contracts ?? []));
  };
  pluginsBox.append(pluginsTable(plugins.plugins ?? [], me, refresh, output));
  contractsBox.append(contractsTable(contracts.contracts ?? []));
  root.append(infoCards(info, me),
    section("Plugins", me.admin ? null : h("p", { class: "meta" }, "Sign in with the admin token to enable or disable plugins."),
      output, pluginsBox),
    section("Contracts", h("p", { class: "meta" }, "Live: refreshed every 5 seconds."), contractsBox));
  // only the contracts refresh by themselves: a table redrawn under a person's keyboard focus would lose it
  const live = async () => {
    const c = await api("cortex.kernel.v1.KernelService/ListContracts");
    contractsBox.replaceChildren(contractsTable(c.contracts ?? []));
  };
  const timer = setInterval(() => { if (!document.hidden) live().catch(() => {}); }, REFRESH_MS);
  addEventListener("pagehide", () => clearInterval(timer));
}
