// Audit and proofs: the chain's newest entries as a table (who, what, decision, reasons), the
// whole chain verified (and where it breaks), one call's proof, the signed checkpoint to keep.
import {
  EFFECT, adminPageError, announce, api, badge, button, dotted, errorNotice, field, form, h, notice, pretty, section, stream, table,
} from "../app.js";

const GS = "cortex.governance.v1.GovernanceService";
const TAIL = 50;

function row(entry) {
  const call = entry.proof ?? entry.call ?? {};
  const decision = entry.proof?.decision ?? entry.decision ?? {};
  const approval = entry.approval;
  const kind = entry.genesis ? "genesis" : entry.policy_change ? `policy ${entry.policy_change.action ?? ""}` : entry.proof ? "proof"
    : approval ? `approval ${(approval.state ?? "").replace("STATE_", "").toLowerCase()}` : "decision";
  return {
    seq: entry.seq, time: new Date(Number(BigInt(entry.time_unix_nanos ?? 0) / 1000000n)).toLocaleString(), kind,
    who: approval ? `${approval.decided_by || "(expiry)"} for ${approval.call?.principal ?? ""}`
      : call.principal ?? entry.policy_change?.principal ?? entry.genesis?.created_by ?? "",
    what: approval ? `${approval.id} ${approval.call?.service ?? ""}/${approval.call?.method ?? ""}`
      : call.service ? `${call.service}/${call.method}` : entry.policy_change?.rule?.id ?? "",
    effect: decision.effect ?? "",
    reasons: (decision.reasons ?? []).join("; "), status: entry.proof?.status ?? "",
  };
}

// entries up to `last` (TAIL of them), newest first, with buttons to page through the chain
async function entriesUpTo(box, size, last) {
  const first = Math.max(1, last - TAIL + 1);
  const entries = [];
  if (size) await stream(`${GS}/ExportAudit`, { from_seq: first, limit: last - first + 1 }, (m) => entries.push(m.entry));
  const turn = (text, to) => button(text, async () => {
    await entriesUpTo(box, size, to);
    box.querySelector(".table-wrap")?.focus(); // the button pressed is gone: keep the reader in the table
  }, { class: "secondary" });
  box.replaceChildren(table(`Entries ${first} to ${last} of ${size}, newest first`, [
    ["#", (r) => String(r.seq), "num"], ["When", (r) => r.time, "short"], ["Kind", (r) => r.kind, "short"],
    ["Who", (r) => r.who, "short"], ["What", (r) => dotted(r.what), "code"],
    ["Decision", (r) => (r.effect ? badge(EFFECT, r.effect) : ""), "short"],
    ["Reasons", (r) => r.reasons, "text"], ["Status", (r) => r.status, "short"],
  ], entries.map(row).reverse()),
  h("div", { class: "actions" }, last < size ? turn("Newer entries", Math.min(size, last + TAIL)) : null,
    first > 1 ? turn("Older entries", first - 1) : null));
}

async function tail(box) {
  const { checkpoint = {} } = await api(`${GS}/GetCheckpoint`);
  const size = Number(checkpoint.size ?? 0);
  await entriesUpTo(box, size, size);
  return checkpoint;
}

export async function render(root, { me }) {
  root.append(h("h1", {}, "Audit and proofs"),
    h("p", { class: "lead" }, "Every governed call leaves a signed, hash-linked entry; checkpoints sign the Merkle tree of them all."));
  const tailBox = h("div", {}), verifyOut = h("div", {});
  let checkpoint;
  try {
    checkpoint = await tail(tailBox);
  } catch (error) { // local (and a key no rule lets read the chain): how to sign in as the admin, not an error
    root.append(await adminPageError("The audit chain", me, error));
    return;
  }
  root.append(
    section("Verify the chain", h("p", { class: "meta" }, "Checks every entry's hash, link and signature, and every signed checkpoint."),
      button("Verify the whole chain", async () => {
        verifyOut.replaceChildren(h("p", { role: "status" }, "Verifying…"));
        try {
          const v = await api(`${GS}/VerifyChain`);
          verifyOut.replaceChildren(v.valid
            ? notice("ok", h("strong", {}, "Intact"), `: ${v.checked ?? 0} entries verified.`)
            : notice("error", h("strong", {}, `Broken at entry ${v.broken_at ?? "?"}`), `: ${v.problem ?? ""} (${v.checked ?? 0} entries before it hold).`));
          announce(v.valid ? "The chain is intact" : `The chain is broken at entry ${v.broken_at}`);
        } catch (error) { verifyOut.replaceChildren(errorNotice(error)); }
      }), verifyOut),
    section("A call's proof", form("Find a proof", [
      field("Proof or call id", h("input", { name: "id", autocomplete: "off" }), "p-123, or the x-cortex-call-id of a call."),
    ], "Show and verify", async (data) => {
      const id = String(data.get("id") ?? "").trim();
      if (!id) return notice("error", "Give a proof id (p-123) or a call id.");
      const found = await api(`${GS}/GetProof`, { id });
      const verdict = await api(`${GS}/VerifyProof`, { id });
      return h("div", {}, verdict.valid ? notice("ok", `${found.proof_id}: signed, linked and in the signed tree.`)
        : notice("error", `${found.proof_id}: ${verdict.problem}`), h("pre", {}, pretty(found.entry)));
    })),
    section("Checkpoint", h("p", {}, `The newest signed checkpoint covers ${checkpoint.size ?? 0} entries.`),
      button("Export the checkpoint", async () => {
        const fresh = (await api(`${GS}/GetCheckpoint`)).checkpoint;
        const url = URL.createObjectURL(new Blob([JSON.stringify(fresh, null, 2)], { type: "application/json" }));
        const a = h("a", { href: url, download: `cortex-checkpoint-${fresh.size}.json` });
        document.body.append(a); a.click(); a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 1000);
        announce("Checkpoint exported");
      }, { class: "secondary" })),
    section("Newest entries", tailBox));
}
