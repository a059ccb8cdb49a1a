// Sign in: the admin token (`~/.cortex/admin.token`) or an API key (`cortex keys create NAME`),
// kept for this browser tab only (sessionStorage) and sent as a bearer credential on each call.
import { BASE, api, field, form, h, notice, section, signIn, signOut } from "../app.js";

export async function render(root, { params }) {
  root.append(h("h1", {}, "Sign in"),
    h("p", { class: "lead" }, "On this machine's loopback address the kernel may let you in as local; elsewhere it asks for a credential."));
  signOut();
  const next = params.get("next");
  const safeNext = next && next.startsWith(`${BASE}/`) && !next.startsWith("//") ? next : `${BASE}/`;
  root.append(section("Credential", form("Sign in", [
    field("Admin token or API key", h("input", { name: "credential", type: "password", autocomplete: "current-password", required: true }),
      "The admin token is the text of admin.token in the kernel's data dir (~/.cortex/admin.token unless configured). "
        + "Kept only in this tab until you sign out or close it."),
  ], "Sign in", async (data) => {
    const credential = String(data.get("credential") ?? "").trim();
    if (!credential) return notice("error", "Paste the admin token or an API key.");
    const me = await api("cortex.console.v1.ConsoleService/WhoAmI", {}, credential);
    signIn(credential);
    location.assign(safeNext);
    return notice("ok", `Signed in as ${me.principal}.`);
  })));
}
