// Models: every model the providers offer, and a place to try a generation or an embedding.
import { api, field, form, h, notice, section, table } from "../app.js";

const MS = "cortex.models.v1.ModelService";

export async function render(root) {
  root.append(h("h1", {}, "Models"));
  const { models = [] } = await api(`${MS}/ListModels`);
  const options = (kind) => [h("option", { value: "" }, "the default"),
    ...models.filter((m) => m.kind === kind).map((m) => h("option", { value: m.id }, `${m.id} (${m.provider})`))];
  root.append(
    section("Providers and models", table("Models by provider", [
      ["Model", (m) => h("code", {}, m.id)], ["Kind", (m) => (m.kind ?? "").replace("KIND_", "").toLowerCase()],
      ["Provider", (m) => m.provider ?? ""], ["Where", (m) => (m.local ? "this machine" : "remote")],
      ["Default", (m) => (m.default ? "yes" : "")], ["Note", (m) => (m.test_only ? "for tests only" : "")],
    ], models, "No model provider is running.")),
    section("Try a generation", form("Try a generation", [
      field("Prompt", h("textarea", { name: "prompt" }, "Say hello in five words.")),
      h("div", { class: "fields-row" },
        field("Model", h("select", { name: "model" }, options("KIND_GENERATION"))),
        field("Most tokens", h("input", { name: "max_tokens", type: "number", min: "1", max: "4096", value: "64" }))),
    ], "Generate", async (data) => {
      const max = Number(data.get("max_tokens"));
      if (!Number.isInteger(max) || max < 1 || max > 4096) return notice("error", "Most tokens must be a whole number from 1 to 4096.");
      const g = await api(`${MS}/Generate`, { prompt: String(data.get("prompt") ?? ""), model: data.get("model"), max_tokens: max, seed: 1 });
      return h("div", {}, h("pre", {}, g.text ?? ""), h("p", { class: "meta" },
        `${g.model ?? ""} by ${g.provider ?? ""} · ${g.usage?.completion_tokens ?? 0} tokens · ${g.finish_reason ?? ""}`));
    })),
    section("Try an embedding", form("Try an embedding", [
      field("Text", h("input", { name: "text", value: "raised beds along the south fence" })),
      field("Model", h("select", { name: "model" }, options("KIND_EMBEDDING"))),
    ], "Embed", async (data) => {
      const e = await api(`${MS}/Embed`, { texts: [String(data.get("text") ?? "")], model: data.get("model") });
      const values = e.vectors?.[0]?.values ?? [];
      return h("div", {}, h("p", {}, `${e.dimension ?? values.length} dimensions from ${e.model ?? ""} by ${e.provider ?? ""}.`),
        h("pre", {}, `[${values.slice(0, 8).map((v) => v.toFixed(4)).join(", ")}, …]`));
    })));
}
