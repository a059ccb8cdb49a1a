// Memories: search (semantic, keyword, hybrid; by kind, tags, time) with why each one matched,
// the newest when nothing is asked, add one, import notes, watched folders; /memories/ID opens one
// to edit, delete (after asking) or see its history.
import {
  BASE, api, announce, button, confirmAction, errorNotice, field, form, h, link, notice, section, table, tags, when,
} from "../app.js";

const MS = "cortex.memories.v1.MemoryService";
const MODES = [["SEARCH_MODE_HYBRID", "Hybrid"], ["SEARCH_MODE_SEMANTIC", "Semantic"], ["SEARCH_MODE_KEYWORD", "Keyword"]];
const MODE_NAME = { SEARCH_MODE_SEMANTIC: "meaning", SEARCH_MODE_KEYWORD: "words", SEARCH_MODE_HYBRID: "both" };
const PAGE = 50;

const split = (text) => String(text ?? "").split(",").map((t) => t.trim()).filter(Boolean);
const clip = (text, n = 280) => (text.length > n ? `${text.slice(0, n)}…` : text);

function memoryItem(memory, result = null) {
  const why = result ? [
    "Matched by ", (result.matched ?? []).map((m) => MODE_NAME[m] ?? m).join(" and ") || "score",
    result.semantic_score !== undefined ? `; meaning ${Number(result.semantic_score).toFixed(2)}` : "",
    result.keyword_score !== undefined ? `; words ${Number(result.keyword_score).toFixed(2)}` : "",
    `; score ${Number(result.score ?? 0).toFixed(3)}`,
  ] : null;
  return h("li", { class: "result" },
    h("p", {}, link(`memories/${encodeURIComponent(memory.id)}`, clip(memory.text ?? ""), { "aria-label": `Open memory: ${clip(memory.text ?? "", 60)}` })),
    h("p", { class: "meta" }, memory.kind ?? "note", " · ", when(memory.created_at), memory.source ? ` · ${memory.source}` : ""),
    (memory.tags ?? []).length ? h("p", {}, tags(memory.tags)) : null,
    why ? h("p", { class: "meta" }, why) : null);
}

function filterOf(data) {
  const filter = {};
  const kind = String(data.get("kind") ?? "").trim();
  if (kind) filter.kinds = [kind];
  const tagList = split(data.get("tags"));
  if (tagList.length) filter.tags_all = tagList;
  if (data.get("after")) filter.created_after = new Date(`${data.get("after")}T00:00:00`).toISOString();
  if (data.get("before")) filter.created_before = new Date(`${data.get("before")}T23:59:59`).toISOString();
  return filter;
}

// the newest memories (those the filter keeps), a page at a time
async function newest(list, status, filter = {}, token = "", fetched = null) {
  const page = fetched ?? await api(`${MS}/List`, { filter, page_size: PAGE, page_token: token });
  for (const m of page.memories ?? []) list.append(memoryItem(m));
  if (page.next_page_token) {
    const more = button("Show more", async () => { more.remove(); await newest(list, status, filter, page.next_page_token); },
      { class: "secondary" });
    list.after(more);
  }
  const n = list.children.length;
  status.textContent = n ? `${n} newest ${n === 1 ? "memory" : "memories"} shown.` : "No memory matches.";
}

function searchSection(counted) {
  const results = h("ul", { class: "results", "aria-label": "Memories" });
  const status = h("p", { class: "meta", role: "status" });
  const searchForm = form("Search memories", [
    field("Search for", h("input", { name: "query", type: "search", autocomplete: "off" }), "Leave empty to see the newest."),
    h("div", { class: "fields-row" },
      field("Mode", h("select", { name: "mode" }, MODES.map(([v, t]) => h("option", { value: v }, t))),
        "By meaning, words, or both."),
      field("Kind", h("input", { name: "kind", placeholder: "note" })),
      field("Tags (all of)", h("input", { name: "tags", placeholder: "garden, budget" })),
      field("Created after", h("input", { name: "after", type: "date" })),
      field("Created before", h("input", { name: "before", type: "date" }))),
  ], "Search", async (data) => {
    results.replaceChildren();
    status.textContent = "Searching…";
    for (const more of results.parentNode.querySelectorAll(":scope > button")) more.remove();
    const query = String(data.get("query") ?? "").trim();
    if (!query) { await newest(results, status, filterOf(data)); return null; }
    const found = await api(`${MS}/Search`, { query, mode: data.get("mode"), top_k: 20, filter: filterOf(data) });
    for (const r of found.results ?? []) results.append(memoryItem(r.memory, r));
    const n = (found.results ?? []).length;
    status.textContent = n ? `${n} ${n === 1 ? "memory" : "memories"} found.` : "No memory matches.";
    announce(status.textContent);
    return null;
  });
  // the count comes when the store has counted (a full count is the slowest question at 10k+):
  // the newest memories do not wait for it
  const count = h("p", { class: "meta" }, "Counting memories…");
  counted.then((stats) => count.replaceChildren(`${stats.total ?? 0} memories stored`,
    stats.embedding_model ? ` · embedded with ${stats.embedding_model}` : ""),
  (error) => count.replaceChildren(errorNotice(error)));
  return section("Search", count, searchForm, status, results);
}

function addSection() {
  return section("Add a memory", form("Add a memory", [
    field("Text", h("textarea", { name: "text", required: true })),
    h("div", { class: "fields-row" },
      field("Kind", h("input", { name: "kind", placeholder: "note" })),
      field("Tags", h("input", { name: "tags" }), "Separated by commas.")),
  ], "Add memory", async (data, output) => {
    const text = String(data.get("text") ?? "").trim();
    const box = output.closest("form").querySelector("textarea");
    if (!text) {
      box.setAttribute("aria-invalid", "true");
      return notice("error", "Write the memory's text first.");
    }
    box.removeAttribute("aria-invalid");
    const stored = await api(`${MS}/Store`, { text, kind: String(data.get("kind") ?? "").trim(), tags: split(data.get("tags")) });
    announce("Memory added");
    const said = stored.updated ? "It updates a memory you had: " : stored.created ? "Added: " : "Already remembered: ";
    return notice("ok", said,
      link(`memories/${encodeURIComponent(stored.id)}`, "open it"), stored.rule ? ` (${stored.rule})` : "");
  }));
}

function importSection() {
  return section("Import notes", form("Import notes", [
    field("Note files", h("input", { name: "files", type: "file", multiple: true, accept: ".md,.txt,.markdown,text/plain,text/markdown" }),
      "Each file becomes one memory, with its file name as source."),
    field("Tags", h("input", { name: "tags" }), "Given to every imported note."),
  ], "Import", async (data) => {
    const files = data.getAll("files").filter((f) => f.size !== undefined && f.name);
    if (!files.length) return notice("error", "Choose one or more note files first.");
    let added = 0;
    for (const file of files) {
      const stored = await api(`${MS}/Store`, { text: await file.text(), kind: "note", source: file.name, tags: split(data.get("tags")) });
      if (stored.created) added += 1; // (false is left out of the JSON: an existing memory says nothing)
    }
    announce(`${added} notes imported`);
    return notice("ok", `${files.length} files read, ${added} new memories.`);
  }));
}

async function sourcesSection() {
  let listed;
  try {
    listed = await api("cortex.memories.v1.SourceService/ListSources");
  } catch (error) {
    return section("Watched folders", errorNotice(error));
  }
  return section("Watched folders", table("Folders whose notes are kept as memories", [
    ["Name", (s) => s.name], ["Path", (s) => h("code", {}, s.path)],
    ["Watching", (s) => (s.watching ? "yes" : "no")],
    ["Files indexed / skipped / failed", (s) => `${s.files_indexed ?? 0} / ${s.files_skipped ?? 0} / ${s.files_failed ?? 0}`],
    ["Passages", (s) => String(s.chunks ?? 0)], ["Last synced", (s) => when(s.last_synced)],
  ], listed.sources ?? [], "No folder is watched: `cortex sources add NAME PATH` adds one."));
}

async function renderOne(root, id) {
  const { memory } = await api(`${MS}/Get`, { id });
  root.append(h("p", {}, link("memories", "← All memories")), h("h1", {}, "Memory"));
  const shown = h("div", {});
  const draw = (m) => shown.replaceChildren(h("div", { class: "card" },
    h("pre", {}, m.text ?? ""),
    h("dl", { class: "grid" },
      h("div", {}, h("dt", {}, "Kind"), h("dd", {}, m.kind ?? "")), h("div", {}, h("dt", {}, "Tags"), h("dd", {}, tags(m.tags))),
      h("div", {}, h("dt", {}, "Created"), h("dd", {}, when(m.created_at))), h("div", {}, h("dt", {}, "Updated"), h("dd", {}, when(m.updated_at))),
      h("div", {}, h("dt", {}, "Source"), h("dd", {}, m.source ?? "")), h("div", {}, h("dt", {}, "Id"), h("dd", {}, h("code", {}, m.id))),
      m.superseded_by ? h("div", {}, h("dt", {}, "Superseded by"), h("dd", {}, link(`memories/${m.superseded_by}`, m.superseded_by))) : null)));
  draw(memory);
  const editForm = form("Edit memory", [
    field("Text", h("textarea", { name: "text" }, memory.text ?? "")),
    h("div", { class: "fields-row" },
      field("Kind", h("input", { name: "kind", value: memory.kind ?? "" })),
      field("Tags", h("input", { name: "tags", value: (memory.tags ?? []).join(", ") }), "Separated by commas.")),
  ], "Save changes", async (data) => {
    const updated = await api(`${MS}/Update`, {
      id, text: String(data.get("text") ?? ""), kind: String(data.get("kind") ?? ""), tags: split(data.get("tags")),
      update_mask: "text,kind,tags",
    });
    draw(updated.memory);
    announce("Memory saved");
    return notice("ok", "Saved.");
  });
  const deleteOutput = h("div", {});
  const remove = button("Delete memory", async () => {
    if (!(await confirmAction("Delete this memory? This cannot be undone.", "Delete"))) { remove.focus(); return; }
    try {
      await api(`${MS}/Delete`, { id });
      location.assign(`${BASE}/memories?deleted=1`);
    } catch (error) {
      deleteOutput.replaceChildren(errorNotice(error));
    }
  }, { class: "danger" });
  let history = null;
  try {
    const past = await api(`${MS}/History`, { id });
    history = table("Earlier versions", [["Version", (v) => String(v.version ?? "")], ["Text", (v) => clip(v.memory?.text ?? "", 160)],
      ["Replaced", (v) => when(v.replaced_at)], ["Why", (v) => v.cause ?? ""]], past.versions ?? [], "No earlier version.");
  } catch (error) {
    history = errorNotice(error);
  }
  root.append(shown, section("Edit", editForm), section("History", history), section("Delete", deleteOutput, remove));
}

export async function render(root, { parts, params }) {
  if (parts[0]) return renderOne(root, decodeURIComponent(parts[0]));
  root.append(h("h1", {}, "Memories"));
  if (params.get("deleted")) root.append(notice("ok", "The memory was deleted."));
  const [sources, first] = await Promise.all([sourcesSection(), api(`${MS}/List`, { page_size: PAGE })]);
  const counted = api(`${MS}/Stats`); // after the list: beside it, the store's full count delays the list too
  const search = searchSection(counted);
  root.append(search, addSection(), importSection(), sources);
  await newest(search.querySelector(".results"), search.querySelector("p[role=status]"), {}, "", first);
}
