// Policies (admin): the rules in force with where each comes from; add a policy file (the
// kernel's validation errors shown beside it) or remove a rule.
import { EFFECT, adminPageError, announce, api, badge, button, confirmAction, errorNotice, field, form, h, needsTheAdmin, notice, section, table } from "../app.js";

const GS = "cortex.governance.v1.GovernanceService";
const EXAMPLE = `[[rule]]
id = "no-remote-models"
description = "Keep generation on this machine"
effect = "deny"
services = ["cortex.models.v1.ModelService"]
provider = "remote"`;

async function rules(box, output) {
  const listed = await api(`${GS}/ListPolicies`);
  box.replaceChildren(h("p", { class: "meta" }, `When no rule decides: ${listed.default_effect === "EFFECT_DENY" ? "deny" : "allow"}.`),
    table("Rules in force", [
      ["Rule", (r) => [h("strong", {}, r.id), r.description ? h("div", { class: "meta" }, r.description) : null]],
      ["Effect", (r) => badge(EFFECT, r.effect ?? "EFFECT_ALLOW")],
      ["Applies to", (r) => [...(r.services ?? []), ...(r.methods ?? [])].join(", ") || "every call"],
      ["Principals", (r) => (r.principals ?? []).join(", ") || "everyone"],
      ["Source", (r) => h("code", {}, r.source ?? "")],
      // built-in rules cannot be removed (a rule of the same id in a policy file overrides one)
      ["Remove", (r) => r.source === "built-in" ? "" : button(`Remove ${r.id}`, async () => {
        if (!(await confirmAction(`Remove the rule ${r.id}?`, "Remove"))) return;
        try {
          await api(`${GS}/RemovePolicy`, { id: r.id });
          announce(`Rule ${r.id} removed`);
          output.replaceChildren(notice("ok", `Removed ${r.id}.`));
          await rules(box, output);
        } catch (error) { output.replaceChildren(errorNotice(error)); }
      }, { class: "secondary" })],
    ], listed.rules ?? []));
}

export async function render(root, { me }) {
  root.append(h("h1", {}, "Policies"));
  const box = h("div", {}), output = h("div", {});
  try {
    await rules(box, output);
  } catch (error) { // local (and a key no rule lets read them): how to sign in as the admin, not an error
    const shown = await adminPageError("Reading and changing policies", me, error);
    if (needsTheAdmin(me, error)) return root.append(shown);
    box.replaceChildren(shown);
  }
  if (!me.admin) root.append(notice("warn", "Only the admin may change policies; the kernel refuses anyone else and says so below."));
  const toml = h("textarea", { name: "toml", rows: 8, spellcheck: "false" }, EXAMPLE);
  root.append(section("Rules", output, box), section("Add a policy file", form("Add a policy file", [
    field("File name", h("input", { name: "name", placeholder: "local-models", autocomplete: "off" })),
    field("Policy (TOML)", toml, "One or more [[rule]] tables; they take effect at once."),
  ], "Add policy", async (data) => {
    toml.removeAttribute("aria-invalid");
    try {
      const added = await api(`${GS}/AddPolicy`, { name: String(data.get("name") ?? "").trim(), toml: String(data.get("toml") ?? "") });
      announce("Policy added");
      await rules(box, output);
      return notice("ok", `Added ${(added.rules ?? []).map((r) => r.id).join(", ")} in ${added.path}.`);
    } catch (error) {
      if (error.code === "INVALID_ARGUMENT") toml.setAttribute("aria-invalid", "true");
      throw error;
    }
  })));
}
