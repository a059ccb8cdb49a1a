// Approvals: the calls waiting for a person (a policy rule with effect "ask" matched them), each
// with Approve and Deny, and the ones decided. Deciding is GovernanceService.DecideApproval called
// with the person's own credential, so only the admin's is let through (builtin/approvals-admin),
// and who decided, when and why is an entry of the audit log.
import { adminPageError, announce, api, badge, button, errorNotice, field, h, needsTheAdmin, notice, section, table } from "../app.js";

const GS = "cortex.governance.v1.GovernanceService";
const STATE = {
  STATE_PENDING: ["waiting", "warn"], STATE_APPROVED: ["approved", "ok"],
  STATE_DENIED: ["denied", "bad"], STATE_EXPIRED: ["expired (denied)", "bad"],
};

const time = (nanos) => (nanos ? new Date(Number(BigInt(nanos) / 1000000n)).toLocaleString() : "");
const what = (a) => h("code", {}, `${a.call?.service ?? ""}/${a.call?.method ?? ""}`);
const route = (a) => (a.call?.provider
  ? `${a.call.provider} (${a.call.provider_local ? "local" : "REMOTE"}${a.pinned_provider ? ", pinned" : ""})` : "");
// the summary is shortened (each long field, then fields left out): say so, and where the whole is
const request = (a) => h("div", {}, h("code", { class: "wrap" }, a.summary ?? ""),
  a.summary_truncated
    ? h("p", { class: "hint" }, h("strong", {}, "Truncated: "), "part of the request is not shown; ",
      h("code", {}, `cortex approvals show ${a.id}`), " prints it whole.")
    : null);

async function draw(box, output, note) {
  const listed = (await api(`${GS}/ListApprovals`, { limit: 200 })).approvals ?? [];
  const waiting = listed.filter((a) => a.state === "STATE_PENDING");
  const decide = (a, approve) => button(`${approve ? "Approve" : "Deny"} ${a.id}`, async () => {
    try {
      await api(`${GS}/DecideApproval`, { id: a.id, approve, note: note.value.trim() });
      const said = `${approve ? "Approved" : "Denied"} ${a.id}.`;
      announce(said);
      output.replaceChildren(notice("ok", said, approve ? " The call proceeds when it is retried with its approval." : ""));
      await draw(box, output, note);
    } catch (error) { output.replaceChildren(errorNotice(error)); }
  }, { class: approve ? "" : "secondary" });
  box.replaceChildren(
    table("Calls waiting for approval", [
      ["Approval", (a) => h("code", {}, a.id)], ["For", (a) => a.call?.principal ?? ""], ["Call", what],
      ["To", route], ["Request", request],
      ["Why", (a) => (a.reasons ?? []).join("; ")],
      ["Asked", (a) => time(a.requested_unix_nanos)], ["Expires", (a) => time(a.expires_unix_nanos)],
      ["Decide", (a) => h("div", { class: "actions" }, decide(a, true), decide(a, false))],
    ], waiting, "No call waits for approval."),
    table("Decided", [
      ["Approval", (a) => h("code", {}, a.id)], ["State", (a) => badge(STATE, a.state)],
      ["For", (a) => a.call?.principal ?? ""], ["Call", what],
      ["By", (a) => a.decided_by ?? ""], ["When", (a) => time(a.decided_unix_nanos)], ["Note", (a) => a.note ?? ""],
      ["Used by call", (a) => a.used_by_call_id ?? ""],
    ], listed.filter((a) => a.state !== "STATE_PENDING"), "Nothing decided yet."));
}

export async function render(root, { me }) {
  root.append(h("h1", {}, "Approvals"));
  const box = h("div", {}), output = h("div", {});
  const note = h("input", { name: "note", autocomplete: "off", maxlength: "2000" });
  try {
    await draw(box, output, note);
  } catch (error) { // local (and a key no rule lets list them): how to sign in as the admin, not an error
    const shown = await adminPageError("Seeing and deciding approvals", me, error);
    if (needsTheAdmin(me, error)) return root.append(shown);
    box.replaceChildren(shown);
  }
  if (!me.admin) root.append(notice("warn", "Only the admin approves or denies; you see the approvals of your own calls."));
  root.append(section("Waiting and decided",
    field("Note with the decision", note, "Kept with the decision in the audit log (optional)."), output, box));
}
