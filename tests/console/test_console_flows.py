"""The console as a person uses it, in headless Chromium against a real governed kernel: search
a memory, add, edit and delete one, run a goal and watch it stream in, replay a trace, verify the
chain (and see it broken), toggle a plugin as admin, add a policy and see its deny explained.
axe-core checks each state it reaches."""

from __future__ import annotations

import re
import sqlite3

import grpc
import pytest
from playwright.sync_api import expect

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
from cortex.kernel.security.credentials import KeyStore

from .browser import assert_accessible, screenshot, wait_ready

pytestmark = pytest.mark.timeout(180)


def test_search_finds_a_memory_by_meaning_and_says_why(console, garden, open_page, axe):
    page = open_page(console, "memories")
    expect(page.get_by_text("3 memories stored")).to_be_visible()
    assert_accessible(page, axe, "the memories page")
    page.get_by_label("Search for").fill("how much can I spend on the vegetable patch")
    page.get_by_label("Mode").select_option("SEARCH_MODE_SEMANTIC")
    page.get_by_role("button", name="Search").click()
    first = page.locator(".results .result").first
    expect(first).to_contain_text("300 euros")
    expect(first).to_contain_text(re.compile(r"Matched by meaning; meaning 0\.\d\d"))
    # filters narrow it: the garden tag keeps the dentist out even for a query about appointments
    page.get_by_label("Search for").fill("appointment")
    page.get_by_label("Tags (all of)").fill("garden")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("form[aria-label='Search memories'] + p[role=status]")).to_have_text(
        re.compile(r"^[12] memor(y|ies) found\.$"))
    for result in page.locator(".results .result").all():
        expect(result.locator(".tag")).to_have_text("garden")
    assert_accessible(page, axe, "search results")
    screenshot(page, "memories-search")
    # nothing asked, a filter given: the newest of those the filter keeps
    page.get_by_label("Search for").fill("")
    page.get_by_label("Tags (all of)").fill("health")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("form[aria-label='Search memories'] + p[role=status]")).to_have_text("1 newest memory shown.")
    expect(page.locator(".results .result")).to_contain_text(["Dentist appointment"])
    assert not page.errors


def test_add_edit_and_delete_a_memory(console, garden, open_page, axe):
    memories = console.kt.stub(memories_pb2_grpc.MemoryServiceStub)
    page = open_page(console, "memories")
    add = page.get_by_role("form", name="Add a memory")
    add.get_by_role("button", name="Add memory").click()  # empty: refused here, before any call
    expect(add.get_by_role("alert")).to_contain_text("Write the memory's text first")
    expect(add.get_by_label("Text")).to_have_attribute("aria-invalid", "true")
    add.get_by_label("Text").fill("The heron nests by the lake in spring.")
    add.get_by_label("Tags").fill("birds, lake")
    add.get_by_role("button", name="Add memory").click()
    expect(add.get_by_text("Added:")).to_be_visible()
    add.get_by_role("link", name="open it").click()
    wait_ready(page)
    memory_id = page.url.rsplit("/", 1)[1]
    assert memories.Get(memories_pb2.GetRequest(id=memory_id)).memory.tags == ["birds", "lake"]
    assert_accessible(page, axe, "a memory")

    edit = page.get_by_role("form", name="Edit memory")
    edit.get_by_label("Text").fill("The heron nests by the lake in early spring.")
    edit.get_by_role("button", name="Save changes").click()
    expect(edit.get_by_text("Saved.")).to_be_visible()
    assert memories.Get(memories_pb2.GetRequest(id=memory_id)).memory.text == "The heron nests by the lake in early spring."
    expect(page.locator("pre").first).to_have_text("The heron nests by the lake in early spring.")
    page.reload()
    wait_ready(page)
    expect(page.get_by_role("table", name=re.compile("Earlier versions"))).to_contain_text("in spring.")
    screenshot(page, "memory")

    page.get_by_role("button", name="Delete memory").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("cannot be undone")
    assert_accessible(page, axe, "the delete confirmation")
    dialog.get_by_role("button", name="Cancel").click()  # nothing happens
    assert memories.Get(memories_pb2.GetRequest(id=memory_id)).memory.id == memory_id
    page.get_by_role("button", name="Delete memory").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(r"/console/memories\?deleted=1$"))
    wait_ready(page)
    expect(page.get_by_text("The memory was deleted.")).to_be_visible()
    with pytest.raises(grpc.RpcError) as gone:
        memories.Get(memories_pb2.GetRequest(id=memory_id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert not page.errors


def test_run_a_goal_see_steps_stream_in_then_replay_its_trace(console, garden, open_page, axe):
    page = open_page(console, "run")
    # record, in the page, the order in which steps and the answer arrive
    page.evaluate("""() => { window.arrivals = [];
      new MutationObserver((records) => { for (const r of records) for (const n of r.addedNodes) {
        if (n.dataset?.step) window.arrivals.push('step'); if (n.classList?.contains('run-answer')) window.arrivals.push('answer'); } })
      .observe(document.getElementById('main'), {childList: true, subtree: true}); }""")
    page.get_by_role("textbox", name="Goal").fill("summarise what I noted about the garden project")
    page.get_by_role("button", name="Run").click()
    answer = page.locator(".run-answer")
    expect(answer).to_contain_text("300 euros", timeout=60_000)
    arrivals = page.evaluate("window.arrivals")
    assert arrivals.count("step") >= 2 and arrivals[-1] == "answer", arrivals  # each step shown before the end
    expect(page.get_by_role("list", name="Steps as they run").locator("li").first).to_contain_text("done")
    expect(answer.locator(f'a[href="/console/memories/{garden}"]')).to_have_count(1)  # the memory it used, cited
    assert_accessible(page, axe, "a finished run")
    screenshot(page, "run")

    answer.get_by_role("link", name="Open the trace").click()
    wait_ready(page)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Trace ")
    page.get_by_text(re.compile("^JSON of ")).first.click()  # a step's request and response
    expect(page.locator("details[open] pre").first).to_contain_text("{")
    page.get_by_role("button", name="Replay this trace").click()
    expect(page.locator(".notice-ok")).to_contain_text("Identical", timeout=60_000)
    assert_accessible(page, axe, "a replayed trace")
    page.get_by_role("button", name="Critique this trace").click()
    expect(page.get_by_text(re.compile(r"^Score \d\.\d\d$"))).to_be_visible()
    page.get_by_role("button", name="Teach from this trace").click()
    expect(page.get_by_text("Remembered:")).to_be_visible()
    screenshot(page, "trace")
    page.goto(f"{console.url}/traces")
    wait_ready(page)
    page.get_by_label("Filter by goal, id, status or answer").fill("no trace has this")
    expect(page.get_by_text("No trace matches the filter.")).to_be_visible()
    assert not page.errors


def test_replay_shows_the_first_diverging_step_side_by_side(console, garden, open_page):
    """A memory the run read changes: the replay names the step and shows both responses."""
    memories = console.kt.stub(memories_pb2_grpc.MemoryServiceStub)
    page = open_page(console, "run")
    page.get_by_role("textbox", name="Goal").fill("what is the garden project budget")
    page.get_by_role("button", name="Run").click()
    expect(page.locator(".run-answer")).to_be_visible(timeout=60_000)
    memories.Update(memories_pb2.UpdateRequest(id=garden, text="Garden project budget is 450 euros for soil and seeds.",
                                               update_mask={"paths": ["text"]}))
    page.locator(".run-answer").get_by_role("link", name="Open the trace").click()
    wait_ready(page)
    page.get_by_role("button", name="Replay this trace").click()
    diverged = page.locator(".notice-warn")
    expect(diverged).to_contain_text("at step", timeout=60_000)
    expect(page.locator(".side-by-side")).to_contain_text("300 euros")
    expect(page.locator(".side-by-side")).to_contain_text("450 euros")
    memories.Update(memories_pb2.UpdateRequest(id=garden, text="Garden project budget is 300 euros for soil and seeds.",
                                               update_mask={"paths": ["text"]}))
    assert not page.errors


def test_verify_the_chain_and_see_where_it_breaks(console, open_page, axe, tmp_path):
    page = open_page(console, "audit", as_admin=True)
    expect(page.get_by_role("table", name=re.compile("newest"))).to_contain_text("cortex.")
    page.get_by_role("button", name="Verify the whole chain").click()
    expect(page.locator(".notice-ok")).to_contain_text(re.compile(r"Intact: \d+ entries verified"))
    assert_accessible(page, axe, "the audit page")
    screenshot(page, "audit")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export the checkpoint").click()
    saved = tmp_path / "checkpoint.json"
    download.value.save_as(saved)
    assert '"root_hash"' in saved.read_text()

    # an entry altered on disk (the hash column left as it was): the page says where
    chain = console.kt.data_dir / "governance" / "audit.db"
    db = sqlite3.connect(chain)
    try:
        (body,) = db.execute("SELECT body FROM entries WHERE seq = 3").fetchone()
        db.execute("UPDATE entries SET body = ? WHERE seq = 3", (bytes(body).replace(b"cortex", b"xortex", 1),))
        db.commit()
        page.get_by_role("button", name="Verify the whole chain").click()
        expect(page.locator(".notice-error")).to_contain_text("Broken at entry 3")
        screenshot(page, "audit-broken")
    finally:
        db.execute("UPDATE entries SET body = ? WHERE seq = 3", (body,))
        db.commit()
        db.close()
    page.get_by_role("button", name="Verify the whole chain").click()
    expect(page.locator(".notice-ok")).to_contain_text("Intact")
    assert not page.errors


def test_admin_toggles_a_plugin_and_local_cannot(console, open_page, axe):
    kernel = console.kt.stub(kernel_pb2_grpc.KernelServiceStub)

    def state() -> str:
        plugins = kernel.ListPlugins(kernel_pb2.ListPluginsRequest()).plugins
        return kernel_pb2.Plugin.State.Name(next(p.state for p in plugins if p.name == "marketplace"))

    local = open_page(console, "")
    expect(local.get_by_text("Sign in with the admin token to enable or disable plugins.")).to_be_visible()
    expect(local.get_by_role("button", name="Disable marketplace")).to_have_count(0)

    page = open_page(console, "", as_admin=True)
    expect(page.locator("#who")).to_contain_text("Signed in as admin")
    page.get_by_role("button", name="Disable marketplace").click()
    expect(page.get_by_text("marketplace disabled.")).to_be_visible()
    assert state() == "STATE_DISABLED"
    assert_accessible(page, axe, "the overview after a toggle")
    page.get_by_role("button", name="Enable marketplace").click()
    expect(page.get_by_text("marketplace enabled.")).to_be_visible()
    assert state() == "STATE_LOADED"
    screenshot(page, "overview")
    assert not page.errors and not local.errors


def test_a_deny_is_explained_where_it_happens(console, garden, open_page, axe):
    """Without a credential, the audit page says it needs the admin and how (not an error); a
    policy the admin adds in the console (its TOML errors shown inline first) denies local a
    search, and the memories page says which rule; removing it in the console lifts it."""
    local = open_page(console, "audit")
    expect(local.locator(".admin-needed")).to_contain_text("The audit chain needs the admin.")
    expect(local.get_by_role("alert")).to_have_count(0)
    assert_accessible(local, axe, "a page that needs the admin")

    admin = open_page(console, "policies", as_admin=True)
    add = admin.get_by_role("form", name="Add a policy file")
    add.get_by_label("File name").fill("no-local-search")
    add.get_by_label("Policy (TOML)").fill('[[rule]]\nid = "no-local-search"\neffect = "maybe"\n')
    add.get_by_role("button", name="Add policy").click()
    expect(add.get_by_role("alert")).to_contain_text("INVALID_ARGUMENT")
    expect(add.get_by_label("Policy (TOML)")).to_have_attribute("aria-invalid", "true")
    assert_accessible(admin, axe, "a policy refused with its errors")
    add.get_by_label("Policy (TOML)").fill(
        '[[rule]]\nid = "no-local-search"\ndescription = "searches need a key"\neffect = "deny"\n'
        'services = ["cortex.memories.v1.MemoryService"]\nmethods = ["Search"]\nprincipals = ["local"]\n')
    add.get_by_role("button", name="Add policy").click()
    expect(add.get_by_text("Added no-local-search")).to_be_visible()
    expect(admin.get_by_role("table", name="Rules in force")).to_contain_text("no-local-search")
    expect(admin.get_by_role("button", name="Remove builtin/policy-admin")).to_have_count(0)  # built in: not removable
    screenshot(admin, "policies")

    local.goto(f"{console.url}/memories")
    wait_ready(local)
    local.get_by_label("Search for").fill("garden")
    local.get_by_role("button", name="Search").click()
    deny = local.get_by_role("alert")
    expect(deny).to_contain_text("PERMISSION_DENIED")
    expect(deny).to_contain_text("no-local-search")
    screenshot(local, "deny-explained")

    admin.get_by_role("button", name="Remove no-local-search").click()
    admin.get_by_role("dialog").get_by_role("button", name="Remove").click()
    expect(admin.get_by_text("Removed no-local-search.")).to_be_visible()
    local.get_by_role("button", name="Search").click()
    expect(local.locator(".results .result").first).to_be_visible()
    assert not local.errors and not admin.errors


def test_sign_in_with_a_key_then_out(console, open_page):
    key = KeyStore(console.kt.data_dir).create("console-tester", [])
    page = open_page(console, "login?next=/console/memories")
    page.get_by_label("Admin token or API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("UNAUTHENTICATED")
    page.get_by_label("Admin token or API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console/memories$"))
    wait_ready(page)
    expect(page.locator("#who")).to_contain_text("Signed in as key:console-tester")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/console/login$"))
    page.goto(f"{console.url}/")
    wait_ready(page)
    expect(page.locator("#who")).to_contain_text("Signed in as local")
    # an off-site `next` is not followed
    page.goto(f"{console.url}/login?next=//example.org/")
    wait_ready(page)
    page.get_by_label("Admin token or API key").fill(console.admin_token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console/$"))
    assert not page.errors


def test_import_note_files(console, open_page, tmp_path):
    notes = [tmp_path / "kettle.md", tmp_path / "train.txt"]
    notes[0].write_text("# Kitchen\nThe kettle lives in the blue cupboard above the sink.\n")
    notes[1].write_text("The train to Lyon leaves at 7:42 from platform 3.\n")
    page = open_page(console, "memories")
    imports = page.get_by_role("form", name="Import notes")
    imports.get_by_role("button", name="Import").click()
    expect(imports.get_by_role("alert")).to_contain_text("Choose one or more note files first")
    imports.get_by_label("Note files").set_input_files([str(n) for n in notes])
    imports.get_by_label("Tags").fill("imported")
    imports.get_by_role("button", name="Import").click()
    expect(imports.get_by_text("2 files read, 2 new memories.")).to_be_visible()
    found = console.kt.stub(memories_pb2_grpc.MemoryServiceStub).Search(memories_pb2.SearchRequest(
        query="where is the kettle", top_k=1, filter=memories_pb2.Filter(tags_all=["imported"])))
    assert found.results[0].memory.source == "kettle.md"
    imports.get_by_role("button", name="Import").click()  # the same files again: nothing new
    expect(imports.get_by_text("2 files read, 0 new memories.")).to_be_visible()
    assert not page.errors


def test_a_proof_is_shown_and_verified(console, open_page, axe):
    page = open_page(console, "audit", as_admin=True)
    proofs = page.get_by_role("form", name="Find a proof")
    proofs.get_by_label("Proof or call id").fill("p-2")
    proofs.get_by_role("button", name="Show and verify").click()
    expect(proofs.locator(".notice-ok")).to_contain_text("p-2: signed, linked and in the signed tree.")
    expect(proofs.locator("pre")).to_contain_text('"seq": "2"')
    proofs.get_by_label("Proof or call id").fill("p-999999")
    proofs.get_by_role("button", name="Show and verify").click()
    expect(proofs.get_by_role("alert")).to_contain_text("NOT_FOUND")
    assert_accessible(page, axe, "a proof not found")
    assert not page.errors


def test_try_a_generation_and_an_embedding(console, open_page):
    page = open_page(console, "models")
    expect(page.get_by_role("table", name="Models by provider")).to_contain_text("all-MiniLM-L6-v2")
    generate = page.get_by_role("form", name="Try a generation")
    generate.get_by_label("Most tokens").fill("0")
    generate.get_by_role("button", name="Generate").click()
    expect(generate.get_by_role("alert")).to_contain_text("from 1 to 4096")
    generate.get_by_label("Most tokens").fill("8")
    generate.get_by_role("button", name="Generate").click()
    expect(generate.locator(".meta")).to_contain_text("by mlx", timeout=60_000)
    embed = page.get_by_role("form", name="Try an embedding")
    embed.get_by_role("button", name="Embed").click()
    expect(embed).to_contain_text("384 dimensions from all-MiniLM-L6-v2 by mlx")
    assert not page.errors


def test_activity_charts_what_was_called(console, garden, open_page):
    page = open_page(console, "activity")
    expect(page.locator(".chart canvas")).to_have_count(5)
    expect(page.get_by_role("table", name="Calls in the last hour by method and provider")).to_contain_text(
        "cortex.memories.v1.MemoryService/Store")
    page.get_by_text("Calls per second as a table").click()
    expect(page.get_by_role("table", name="Calls per second, newest first")).to_be_visible()
    assert not page.errors


def test_watched_folders_show_their_state(console, open_page, tmp_path):
    from cortex.contracts.memories.v1 import sources_pb2, sources_pb2_grpc

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "bikes.md").write_text("# Bikes\nThe red bike needs a new chain before June.\n")
    sources = console.kt.stub(sources_pb2_grpc.SourceServiceStub)
    sources.AddSource(sources_pb2.AddSourceRequest(source=sources_pb2.Source(name="notes", path=str(folder))), timeout=60)
    try:
        page = open_page(console, "memories")
        folders = page.get_by_role("table", name="Folders whose notes are kept as memories")
        expect(folders).to_contain_text("notes")
        expect(folders).to_contain_text("1 / 0 / 0")
        assert not page.errors
    finally:
        sources.RemoveSource(sources_pb2.RemoveSourceRequest(name="notes"))


def test_page_through_the_audit_chain(console, open_page):
    from cortex.contracts.governance.v1 import governance_pb2, governance_pb2_grpc

    governance = console.kt.stub(governance_pb2_grpc.GovernanceServiceStub)
    for _ in range(60):  # more than a page of entries, whatever ran before
        governance.GetCheckpoint(governance_pb2.GetCheckpointRequest())
    page = open_page(console, "audit", as_admin=True)
    newest = page.get_by_role("table", name=re.compile(r"^Entries \d+ to \d+ of \d+, newest first$"))
    first, last, size = map(int, re.findall(r"\d+", newest.get_attribute("aria-label") or newest.locator("caption").inner_text()))
    assert last == size and last - first == 49
    expect(page.get_by_role("button", name="Newer entries")).to_have_count(0)
    page.get_by_role("button", name="Older entries").click()
    older = page.get_by_role("table", name=f"Entries {max(1, first - 50)} to {first - 1} of {size}, newest first")
    expect(older).to_be_visible()
    expect(older.locator("tbody tr").first.locator("td").first).to_have_text(str(first - 1))
    expect(page.locator(".table-wrap").first).to_be_focused()
    page.get_by_role("button", name="Newer entries").click()
    expect(page.get_by_role("table", name=f"Entries {first} to {last} of {size}, newest first")).to_be_visible()
    assert not page.errors


# How many lines the text of an element takes: the most line boxes any one of its text nodes is
# laid out on ("succe|eded" broken inside the word is 2; "succeeded" whole is 1).
LINES = """(element) => { let most = 0;
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.textContent.trim()) continue;
    const range = document.createRange(); range.selectNodeContents(node);
    const tops = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
    most = Math.max(most, tops.size); }
  return most; }"""
NARROW = {"width": 320, "height": 640}


def test_the_traces_table_says_when_what_and_how_each_run_went(console, garden, open_page, axe):
    """Each trace by its goal (cut, whole in the title), when, its status as a whole word, its
    steps, the trace it replays, and its id shortened and linked: at 1280 px and at 320 px."""
    from cortex.contracts.cerebrum.v1 import cerebrum_pb2, cerebrum_pb2_grpc

    cerebrum = console.kt.stub(cerebrum_pb2_grpc.CerebrumServiceStub)
    goal = "summarise what I noted about the garden project, its budget and where the raised beds go " * 2
    plan = cerebrum.Plan(cerebrum_pb2.PlanRequest(goal=goal.strip())).plan
    run = [m.summary for m in cerebrum.Execute(cerebrum_pb2.ExecuteRequest(plan=plan)) if m.HasField("summary")][-1]
    replay = cerebrum.Replay(cerebrum_pb2.ReplayRequest(trace_id=run.trace_id))
    assert run.status == "succeeded" and replay.replay_trace_id

    page = open_page(console, "traces")
    traces = page.get_by_role("table", name=re.compile("traces, newest first"))
    expect(traces.locator("thead th")).to_have_text(["When", "Goal", "Status", "Steps ok", "Run or replay", "Trace"])
    row = traces.locator("tbody tr").filter(has=page.locator(f'td:last-child a[href="/console/traces/{run.trace_id}"]'))
    expect(row).to_have_count(1)
    cells = row.locator("td")
    expect(cells.nth(1)).to_contain_text("summarise what I noted about the garden project")
    expect(cells.nth(1).locator("[title]")).to_have_attribute("title", goal.strip())  # the whole goal
    assert len(cells.nth(1).inner_text()) < len(goal.strip())  # cut, with an ellipsis
    expect(cells.nth(1)).to_contain_text("…")
    expect(cells.nth(0)).to_have_text(re.compile(r"\d"))
    expect(cells.nth(2)).to_have_text("succeeded")
    expect(cells.nth(3)).to_have_text(re.compile(r"^\d+ / \d+$"))
    expect(cells.nth(4)).to_have_text("run")
    expect(cells.nth(5).get_by_role("link")).to_have_text(f"{run.trace_id[:12]}…")
    replayed = traces.locator("tbody tr").filter(has=page.locator(f'td:last-child a[href="/console/traces/{replay.replay_trace_id}"]'))
    expect(replayed.locator("td").nth(4)).to_have_text(f"replay of {run.trace_id[:12]}…")
    expect(replayed.locator("td").nth(4).get_by_role("link")).to_have_attribute("href", f"/console/traces/{run.trace_id}")
    for width in ("1280px", "320px"):
        if width == "320px":
            page.set_viewport_size(NARROW)
        for cell in (0, 2, 3, 4, 5):  # when, status, steps, run or replay, id: each on one line
            assert cells.nth(cell).evaluate(LINES) == 1, f"{width}: {cells.nth(cell).inner_text()!r} wraps"
        status = cells.nth(2).locator(".badge").bounding_box()
        line = cells.nth(2).evaluate("(e) => parseFloat(getComputedStyle(e).lineHeight)")
        assert status["height"] < 1.5 * line, (width, status, line)
        assert_accessible(page, axe, f"the traces list at {width}")
    assert page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 1
    screenshot(page, "traces-list-narrow")
    cells.nth(5).get_by_role("link").click()
    wait_ready(page)
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Trace {run.trace_id}")
    assert not page.errors


def test_audit_numbers_stay_whole_and_the_table_scrolls_when_narrow(console, open_page):
    page = open_page(console, "audit", as_admin=True)
    entries = page.get_by_role("table", name=re.compile("newest first"))
    rows = entries.locator("tbody tr")
    expect(rows.first).to_be_visible()
    for width in ("1280px", "320px"):
        if width == "320px":
            page.set_viewport_size(NARROW)
        for i in range(min(5, rows.count())):
            for cell in (0, 1):  # the entry's number and its time
                text = rows.nth(i).locator("td").nth(cell)
                assert text.evaluate(LINES) == 1, f"{width}: {text.inner_text()!r} wraps"
            number = rows.nth(i).locator("td").nth(0)
            assert number.evaluate("(e) => getComputedStyle(e).textAlign") == "right"
    region = page.locator(".table-wrap").filter(has=entries)
    assert region.evaluate("(e) => e.scrollWidth > e.clientWidth")  # the table scrolls in its region...
    assert page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 1  # ...not the page
    screenshot(page, "audit-table-narrow")
    assert not page.errors


def test_as_local_the_admin_pages_say_how_to_sign_in_not_an_error(console, open_page, axe):
    """local (no credential) opening the audit, policies and approvals pages is told they need the
    admin and where its token is, with a sign-in link that brings it back; no PERMISSION_DENIED."""
    token = str(console.kt.data_dir / "admin.token")
    page = open_page(console)
    for path, what in (("policies", "Reading and changing policies"), ("approvals", "Seeing and deciding approvals"),
                       ("audit", "The audit chain")):
        page.goto(f"{console.url}/{path}")
        wait_ready(page)
        guidance = page.locator(".admin-needed")
        expect(guidance).to_contain_text(f"{what} needs the admin.")
        expect(guidance).to_contain_text("You are browsing as local")
        expect(guidance.locator("code")).to_have_text(token)
        expect(page.locator("#main")).not_to_contain_text("PERMISSION_DENIED")
        expect(page.locator("#main")).not_to_contain_text("cortex keys create")
        expect(page.locator(".notice-error, [role=alert]")).to_have_count(0)
        assert_accessible(page, axe, f"{path} as local")
    screenshot(page, "audit-as-local")
    page.locator(".admin-needed").get_by_role("link", name="Sign in with the admin token").click()
    page.wait_for_url(re.compile(r"/console/login\?next=%2Fconsole%2Faudit$"))
    wait_ready(page)
    page.get_by_label("Admin token or API key").fill(console.admin_token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console/audit$"))
    wait_ready(page)
    expect(page.get_by_role("table", name=re.compile("newest first"))).to_be_visible()
    expect(page.locator(".admin-needed")).to_have_count(0)
    assert not page.errors


def test_other_failures_of_an_admin_page_are_still_errors(console, open_page):
    """Only a refusal becomes the sign-in guidance: the kernel unavailable is an error, as local too."""
    page = open_page(console)
    page.route("**/v1/cortex.governance.v1.GovernanceService/GetCheckpoint", lambda route: route.fulfill(
        status=503, content_type="application/json", body='{"error": {"code": "UNAVAILABLE", "message": "governance is restarting"}}'))
    page.goto(f"{console.url}/audit")
    wait_ready(page)
    expect(page.get_by_role("alert")).to_contain_text("UNAVAILABLE: governance is restarting")
    expect(page.locator(".admin-needed")).to_have_count(0)
    assert not page.errors
