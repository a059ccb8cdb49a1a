// The console's shell: which page to draw, the API client (the person's own credential on every
// call), and the few DOM helpers the pages share. Every string from the kernel is set as text,
// never as HTML.

export const BASE = "/console";
const CREDENTIAL = "cortex.credential";

export class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

// POST /v1/<method> with the tab's credential (or the one given, to try it before keeping it)
async function post(method, body, credential = sessionStorage.getItem(CREDENTIAL)) {
  const headers = { "Content-Type": "application/json" };
  if (credential) headers.Authorization = `Bearer ${credential}`;
  const response = await fetch(`/v1/${method}`, { method: "POST", headers, body: JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  return response;
}

async function failure(response) {
  let code = `HTTP ${response.status}`, message = response.statusText;
  try {
    const body = await response.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch { /* not JSON: keep the HTTP status */ }
  return new ApiError(code, message, response.status);
}

// One unary contract call: api("cortex.memories.v1.MemoryService/Search", {...}) -> response JSON.
export async function api(method, body = {}, credential = undefined) {
  return (await post(method, body, credential)).json();
}

// A server-streaming call: onMessage(json) for each message, as the server sends it (SSE framing).
export async function stream(method, body, onMessage) {
  const response = await post(method, body);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
      const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "{}");
      if (event === "error") throw new ApiError(data.error?.code, data.error?.message);
      if (event === "end") return;
      onMessage(data);
    }
  }
}

export function signIn(credential) { sessionStorage.setItem(CREDENTIAL, credential); }
export function signOut() { sessionStorage.removeItem(CREDENTIAL); }

// h("p", {class: "x"}, "text", child...): an element; strings become text nodes.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function link(path, text, attrs = {}) { return h("a", { href: `${BASE}/${path}`, ...attrs }, text); }

let ids = 0;
export function uid(stem) { ids += 1; return `${stem}-${ids}`; }

// A labelled form control: field("Query", h("input", {...})) -> the wrapper; the control gets an id.
export function field(label, control, hint = "") {
  control.id ||= uid("f");
  const hintNode = hint ? h("span", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintNode);
}

// A data table; columns: [[heading, row => cell, kind?]]. A column's kind (its heading's and
// cells' class, console.css) says how it wraps: "num" (right-aligned figures, never broken),
// "short" (a word, a time, a status: never broken), "text" (prose: the column that takes the room
// left, wrapping between words), "code" (long names, dotted(): broken after a "." or "/", from a
// readable width).
// Without one a cell wraps anywhere, as long names and errors must.
export function table(caption, columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h("table", {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, columns.map(([name, , kind]) => h("th", { scope: "col", class: kind && `col-${kind}` }, name)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell, kind]) => h("td", { class: kind && `col-${kind}` }, cell(row))))))));
}

// a long dotted name ("cortex.memories.v1.MemoryService/Search") as code that wraps after a "." or
// a "/" rather than inside a word
export function dotted(text) {
  return h("code", {}, String(text).split(/(?<=[./])/).flatMap((part, i) => (i ? [h("wbr"), part] : [part])));
}

// "abcdef0123…": a long id cut to its start (the whole of it in the title and the link it is in)
export function shortId(id, keep = 12) { return id.length > keep + 1 ? `${id.slice(0, keep)}…` : id; }

// prose cut to `most` characters at a word, with "…"; the whole text is the caller's to show as a title
export function truncate(text, most = 90) {
  if (text.length <= most) return text;
  const cut = text.slice(0, most - 1), space = cut.lastIndexOf(" ");
  return `${(space > most / 2 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

// A message a person can act on; errors name the gRPC status and the kernel's own words.
export function notice(kind, ...content) {
  return h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, ...content);
}

export function errorNotice(error) {
  const parts = [h("strong", {}, error.code ?? "Error"), ": ", error.message];
  if (error.code === "UNAUTHENTICATED") parts.push(" ", link(`login?next=${encodeURIComponent(location.pathname)}`, "Sign in"));
  return notice("error", ...parts);
}

const signInHere = (text) => link(`login?next=${encodeURIComponent(location.pathname)}`, text);

// What a page (or part of one) whose data is the admin's says to someone else: not an error, but
// who may see it and how to become them. `what` completes "… needs the admin" ("The audit chain").
// The admin token's path comes from the kernel (its data dir), when it says; local is told the
// whole way (it has no credential), a signed-in principal also what the kernel answered.
export async function adminNeeded(what, me, error = null) {
  let where = null;
  try {
    const info = await api("cortex.kernel.v1.KernelService/GetInfo");
    if (info.data_dir) where = `${info.data_dir.replace(/\/+$/, "")}/admin.token`;
  } catch { /* beyond loopback without a credential: say where it is by default */ }
  const local = !me?.principal || me.principal === "local";
  return h("div", { class: "notice notice-info admin-needed", role: "status" },
    h("p", {}, h("strong", {}, `${what} needs the admin.`), " ",
      local ? "You are browsing as local (no credential), which may use memories, runs, traces, models and activity but not this."
        : `You are signed in as ${me.principal}, which may not see it.`),
    h("p", {}, signInHere("Sign in with the admin token"), ": the text of the file ",
      h("code", { class: "path" }, where ?? "admin.token"), where ? "" : " in the kernel's data dir (~/.cortex unless configured)",
      ", on the machine the kernel runs on; the kernel writes it at its first start. The sign-in lasts until this tab is closed."),
    !local && error ? h("p", { class: "meta" }, `The kernel said: ${error.code}: ${error.message}`) : null);
}

// An error of a page whose data is the admin's: a refusal to anyone else is adminNeeded's
// guidance; any other failure (and a refusal of the admin) is an error.
// a page refused as a whole to one who is not the admin: how to sign in as the admin, not an error
export const needsTheAdmin = (me, error) => error?.code === "PERMISSION_DENIED" && !me?.admin;

export async function adminPageError(what, me, error) {
  return needsTheAdmin(me, error) ? adminNeeded(what, me, error) : errorNotice(error);
}

export function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

export function when(value) {
  if (!value) return "";
  const date = typeof value === "number" ? new Date(value) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function pretty(json) {
  if (!json) return "";
  try { return JSON.stringify(typeof json === "string" ? JSON.parse(json) : json, null, 2); } catch { return String(json); }
}

// A section of a page with its own heading.
export function section(title, ...content) {
  const id = uid("s");
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...content);
}

// A button that runs `action` once at a time, saying it is busy meanwhile.
export function button(text, action, attrs = {}) {
  const node = h("button", { type: "button", ...attrs }, text);
  node.addEventListener("click", async () => {
    node.disabled = true;
    node.setAttribute("aria-busy", "true");
    try { await action(node); } finally { node.disabled = false; node.removeAttribute("aria-busy"); }
  });
  return node;
}

// A form whose submit runs `action(data)`; its result or error lands in `output`.
export function form(label, fields, submitText, action) {
  const output = h("div", { class: "form-output" });
  const submit = h("button", { type: "submit" }, submitText);
  const node = h("form", { "aria-label": label, novalidate: true }, fields, h("div", { class: "actions" }, submit), output);
  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    node.setAttribute("aria-busy", "true");
    output.replaceChildren();
    try {
      const shown = await action(new FormData(node), output);
      if (shown) output.replaceChildren(shown);
    } catch (error) {
      output.replaceChildren(errorNotice(error));
    } finally {
      submit.disabled = false;
      node.removeAttribute("aria-busy");
    }
  });
  return node;
}

// Ask before doing something that cannot be undone (a native, accessible modal dialog).
export function confirmAction(question, confirmText) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { "aria-labelledby": "confirm-title", class: "confirm" },
      h("h2", { id: "confirm-title" }, question),
      h("div", { class: "actions" },
        h("button", { type: "button", value: "no", class: "secondary", onclick: () => dialog.close("no") }, "Cancel"),
        h("button", { type: "button", value: "yes", class: "danger", onclick: () => dialog.close("yes") }, confirmText)));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(dialog.returnValue === "yes"); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export const tags = (list) => (list ?? []).map((t) => h("span", { class: "tag" }, t));

// a status shown as a coloured word: badge(map, value) with map value -> [word, "ok" | "warn" | "bad"]
export function badge(map, value) {
  const [text, kind] = map[value] ?? ["unknown", "warn"];
  return h("span", { class: `badge badge-${kind}` }, text);
}

export const EFFECT = { EFFECT_ALLOW: ["allow", "ok"], EFFECT_DENY: ["deny", "bad"], EFFECT_ASK: ["ask", "warn"] };

// a traced step's state, as people say it (cortex.cerebrum.v1.StepRecord.State)
export const STEP_STATE = { STATE_FINISHED: "done", STATE_FAILED: "failed", STATE_SKIPPED: "skipped", STATE_STARTED: "running",
  STATE_WAITING: "waiting for approval" };

// each page is pages/<its path>.js; the console's root is the overview
const PAGES = new Set(["memories", "run", "traces", "audit", "approvals", "policies", "models", "activity", "login"]);

async function whoAmI() {
  const who = document.getElementById("who");
  try {
    const me = await api("cortex.console.v1.ConsoleService/WhoAmI");
    const signedIn = sessionStorage.getItem(CREDENTIAL);
    who.replaceChildren(h("span", {}, "Signed in as ", h("strong", {}, me.principal)),
      signedIn ? button("Sign out", () => { signOut(); location.assign(`${BASE}/login`); }, { class: "link-button" })
        : link("login", "Sign in"));
    return me;
  } catch (error) {
    who.replaceChildren(link(`login?next=${encodeURIComponent(location.pathname)}`, "Sign in"));
    return { principal: "", admin: false, error };
  }
}

async function main() {
  const parts = location.pathname.slice(BASE.length).split("/").filter(Boolean);
  const name = PAGES.has(parts[0]) ? parts[0] : "overview";
  for (const a of document.querySelectorAll(".nav a")) {
    const target = a.getAttribute("href").slice(BASE.length).replace(/^\//, "");
    if (target === (parts[0] ?? "")) a.setAttribute("aria-current", "page");
  }
  const main = document.getElementById("main");
  const loading = import(`./pages/${name}.js`); // fetched while the kernel says who this is
  const me = name === "login" ? { principal: "", admin: false } : await whoAmI();
  const page = await loading;
  const content = h("div", { class: "page" });
  try {
    await page.render(content, { me, parts: parts.slice(1), params: new URLSearchParams(location.search) });
  } catch (error) {
    content.append(errorNotice(error));
  }
  main.replaceChildren(content);
  const title = main.querySelector("h1")?.textContent;
  if (title) document.title = `${title} · Cortex-OS console`;
  performance.mark("console-drawn"); // how long a page takes to show its data (the browser tests report it)
  document.documentElement.dataset.ready = "true"; // for tests and for people: the page is drawn
}

main();
