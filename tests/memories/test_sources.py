"""Watched note folders: a folder of Markdown, text and PDF notes kept in sync with memories,
file by file, with every passage citable and `Open` resolving the citation."""

from __future__ import annotations

import json
import textwrap
import time

import grpc
import pytest

from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc, sources_pb2_grpc
from cortex.contracts.memories.v1 import sources_pb2 as pb

from ..conftest import cortex_env, run_cli
from .pdf_file import pdf_bytes

CONFIG = '[plugins]\ndisabled = ["ollama", "openai"]\n[plugins.memories]\nwatch = false\n'
HEALTH = textwrap.dedent("""\
    ---
    tags: [health]
    ---
    # Health

    ## Dentist
    Dr. Hartmann on Lindenstrasse, appointment Monday 9 March at 10:00.

    ## Physio
    Knee physio with Jonas on Tuesdays at 17:30.
    """)


def vault(root):
    (root / "drafts").mkdir(parents=True)
    (root / ".obsidian").mkdir()
    (root / "health.md").write_text(HEALTH)
    (root / "home.md").write_text("# Home\n\nThe spare key is with Mrs. Weber on the second floor.\n")
    (root / "work.txt").write_text("The VPN needs the authenticator app.\n\nExpense reports go to Carla by the 5th.\n")
    (root / "boiler.pdf").write_bytes(pdf_bytes([["Service every autumn by Vaillant."],
                                                 ["The reset button is under the front cover."]], title="Boiler manual"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF at all")
    (root / "drafts" / "secret.md").write_text("# Draft\n\nNot for the index.\n")
    (root / ".obsidian" / "workspace.md").write_text("# Editor state\n")
    (root / "photo.jpg").write_bytes(b"\xff\xd8\xff")


@pytest.fixture
def kernel(start_kernel, channel_to, tmp_path):
    root = tmp_path / "vault"
    vault(root)
    target, _ = start_kernel(CONFIG)
    channel = channel_to(target)
    return sources_pb2_grpc.SourceServiceStub(channel), memories_pb2_grpc.MemoryServiceStub(channel), root


def add(stub, root, **kw):
    return stub.AddSource(pb.AddSourceRequest(source=pb.Source(name="notes", path=str(root), exclude=["drafts/**"], **kw)),
                          timeout=120)


def sync(stub, full=False):
    events = list(stub.SyncSource(pb.SyncSourceRequest(name="notes", full=full), timeout=120))
    assert events[-1].phase == "done"
    return events, events[-1].report


def counts(report, *names):
    return {n: getattr(report, n) for n in names}


CHUNK_FIELDS = ("chunks_added", "chunks_updated", "chunks_removed", "chunks_moved")
FILE_FIELDS = ("files_seen", "files_read", "files_unchanged", "files_removed", "files_moved", "files_failed")


def passages(memories):
    listed = memories.List(mem.ListRequest(page_size=100), timeout=10).memories
    return {(m.metadata["file"], m.metadata["heading"], m.metadata["lines"]): m for m in listed}


def test_a_folder_synced_edited_deleted_and_renamed(kernel):
    stub, memories, root = kernel
    first = add(stub, root)
    assert counts(first.report, *FILE_FIELDS) == {"files_seen": 5, "files_read": 5, "files_unchanged": 0, "files_removed": 0,
                                                  "files_moved": 0, "files_failed": 1}
    found = passages(memories)
    assert set(found) == {
        ("health.md", "Health > Dentist", "6-7"), ("health.md", "Health > Physio", "9-10"),  # "# Health" alone: no passage
        ("home.md", "Home", "1-3"), ("work.txt", "", "1-3"), ("boiler.pdf", "Boiler manual", "1-1"),
        ("boiler.pdf", "Boiler manual", "2-2")}
    dentist = found[("health.md", "Health > Dentist", "6-7")]
    assert dentist.text == "Health > Dentist\nDr. Hartmann on Lindenstrasse, appointment Monday 9 March at 10:00."
    assert list(dentist.tags) == ["health"] and dentist.source == "notes:health.md#L6-L7" and dentist.kind == "note"
    assert first.report.chunks_added == 6
    status = stub.SourceStatus(pb.SourceStatusRequest(name="notes"), timeout=10)
    by_path = {f.path: f for f in status.files}
    assert set(by_path) == {"health.md", "home.md", "work.txt", "boiler.pdf", "broken.pdf"}  # drafts, hidden, jpg left out
    assert by_path["broken.pdf"].state == pb.FILE_STATE_FAILED and "not a readable PDF" in by_path["broken.pdf"].reason
    assert by_path["health.md"].state == pb.FILE_STATE_INDEXED and by_path["health.md"].chunks == 2
    assert (status.source.files_indexed, status.source.files_failed, status.source.chunks) == (4, 1, 6)

    # nothing changed: nothing read
    _, report = sync(stub)
    assert counts(report, "files_read", "files_unchanged", *CHUNK_FIELDS) == {
        "files_read": 1, "files_unchanged": 4, "chunks_added": 0, "chunks_updated": 0, "chunks_removed": 0, "chunks_moved": 0}
    # (the failed file is retried every sync; the others are not even opened)

    # edit one section, add one above another: one passage rewritten, one added, one moved down
    (root / "health.md").write_text(HEALTH.replace("Monday 9 March at 10:00", "Thursday 12 March at 15:00").replace(
        "## Physio", "## Eyes\nNew glasses from Fielmann in May.\n\n## Physio"))
    _, report = sync(stub)
    assert counts(report, "files_read", "files_unchanged", *CHUNK_FIELDS) == {
        "files_read": 2, "files_unchanged": 3, "chunks_added": 1, "chunks_updated": 1, "chunks_removed": 0, "chunks_moved": 0}
    found = passages(memories)
    moved = found[("health.md", "Health > Dentist", "6-7")]
    assert moved.id == dentist.id and "Thursday 12 March" in moved.text  # the same memory, rewritten
    history = memories.History(mem.HistoryRequest(id=dentist.id), timeout=10)
    assert [v.cause for v in history.versions] == ["sync: health.md changed"] and "Monday" in history.versions[0].memory.text
    physio = found[("health.md", "Health > Physio", "12-13")]
    assert memories.History(mem.HistoryRequest(id=physio.id), timeout=10).versions == []  # only its lines moved
    assert ("health.md", "Health > Eyes", "9-10") in found

    # delete one file, rename another: its passages go, or move without being embedded again
    home = found[("home.md", "Home", "1-3")]
    (root / "work.txt").unlink()
    (root / "house").mkdir()
    (root / "home.md").rename(root / "house" / "home.md")
    _, report = sync(stub)
    assert counts(report, "files_removed", "files_moved", *CHUNK_FIELDS) == {
        "files_removed": 1, "files_moved": 1, "chunks_added": 0, "chunks_updated": 0, "chunks_removed": 1, "chunks_moved": 1}
    found = passages(memories)
    assert not any(f == "work.txt" for f, _, _ in found)
    renamed = found[("house/home.md", "Home", "1-3")]
    assert renamed.id == home.id and renamed.source == "notes:house/home.md#L1-L3"
    assert renamed.embedding_model == home.embedding_model and renamed.dimension == 384
    hits = memories.Search(mem.SearchRequest(query="who has the spare key?", top_k=1), timeout=60).results
    assert hits[0].memory.id == home.id

    # a full sync reads everything and changes nothing
    _, report = sync(stub, full=True)
    assert (report.files_read, report.files_removed) == (4, 0) and all(getattr(report, f) == 0 for f in CHUNK_FIELDS)

    removed = stub.RemoveSource(pb.RemoveSourceRequest(name="notes"), timeout=30)
    assert removed.memories_deleted == 6
    assert memories.List(mem.ListRequest(page_size=100), timeout=10).memories == []
    assert stub.ListSources(pb.ListSourcesRequest(), timeout=10).sources == []


def test_notes_indexed_by_an_older_chunker_are_cut_again_at_the_next_sync(kernel, monkeypatch):
    """CHUNKER_VERSION is kept with every indexed file: after an upgrade that cuts notes differently,
    the next sync reads and cuts again every file indexed under the old version, though none changed
    on disk, and rewrites its passages in place (the same memories); the sync after that reads none."""
    from cortex.plugins.memories import chunking, source_sync

    assert chunking.CHUNKER_VERSION == 2  # 2: Markdown passages as plain text, no heading-only passages
    stub, memories, root = kernel

    def version_1(name, data):  # an older chunker: each passage cut otherwise (here, marked "v1 ")
        return [chunking.Chunk(f"v1 {c.text}", c.heading, c.first, c.last, c.tags) for c in chunking.chunks_of(name, data)]

    monkeypatch.setattr(source_sync, "CHUNKER_VERSION", 1)
    monkeypatch.setattr(source_sync, "chunks_of", version_1)
    add(stub, root)
    before = passages(memories)
    assert len(before) == 6 and all(m.text.startswith("v1 ") for m in before.values())
    monkeypatch.undo()

    _, report = sync(stub)
    assert counts(report, "files_read", "files_unchanged", *CHUNK_FIELDS) == {
        "files_read": 5, "files_unchanged": 0, "chunks_added": 0, "chunks_updated": 6, "chunks_removed": 0, "chunks_moved": 0}
    after = passages(memories)
    assert {key: m.id for key, m in after.items()} == {key: m.id for key, m in before.items()}
    assert after[("health.md", "Health > Dentist", "6-7")].text == (
        "Health > Dentist\nDr. Hartmann on Lindenstrasse, appointment Monday 9 March at 10:00.")
    _, report = sync(stub)
    assert (report.files_read, report.files_unchanged) == (1, 4)  # only the broken PDF, retried every sync


def test_open_resolves_citations_and_refuses_what_is_not_one(kernel):
    stub, memories, root = kernel
    add(stub, root)
    dentist = passages(memories)[("health.md", "Health > Dentist", "6-7")]
    for ref in (dentist.source, dentist.id):
        opened = stub.Open(pb.OpenRequest(ref=ref), timeout=10)
        assert (opened.source, opened.path, opened.first_line, opened.last_line) == ("notes", "health.md", 6, 7)
        assert opened.text == "## Dentist\nDr. Hartmann on Lindenstrasse, appointment Monday 9 March at 10:00."
        assert opened.memory_id == dentist.id and opened.heading == "Health > Dentist" and opened.note == ""
    page = stub.Open(pb.OpenRequest(ref="notes:boiler.pdf#L2"), timeout=10)
    assert "reset button" in page.text and "Vaillant" not in page.text
    (root / "health.md").write_text(HEALTH.replace("10:00", "11:00"))
    changed = stub.Open(pb.OpenRequest(ref=dentist.source), timeout=10)
    assert "11:00" in changed.text and "changed since it was indexed" in changed.note
    for ref, code in (("notes:../../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
                      ("notes:drafts/secret.md", grpc.StatusCode.NOT_FOUND),
                      ("elsewhere:health.md", grpc.StatusCode.NOT_FOUND),
                      ("m-not-a-memory", grpc.StatusCode.NOT_FOUND), ("", grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.RpcError) as err:
            stub.Open(pb.OpenRequest(ref=ref), timeout=10)
        assert err.value.code() == code, ref


def test_bad_sources_are_refused_with_what_to_fix(kernel, tmp_path):
    stub, _, root = kernel
    for source, message in (
        (pb.Source(name="my notes", path=str(root)), "letters, digits"),
        (pb.Source(name="notes", path="relative/folder"), "absolute folder"),
        (pb.Source(name="notes", path=str(tmp_path / "missing")), "is not a folder"),
        (pb.Source(name="notes", path=str(root), include=["/etc/*"]), "relative globs"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.AddSource(pb.AddSourceRequest(source=source), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()
    add(stub, root)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(grpc.RpcError) as err:
        stub.AddSource(pb.AddSourceRequest(source=pb.Source(name="notes", path=str(other))), timeout=10)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as err:
        list(stub.SyncSource(pb.SyncSourceRequest(name="nope"), timeout=10))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_configured_source_is_watched_and_a_new_note_appears(start_kernel, channel_to, tmp_path):
    root = tmp_path / "vault"
    vault(root)
    config = (CONFIG.replace("watch = false", "watch = true\nwatch_debounce_ms = 50")
              + f'[[plugins.memories.source]]\nname = "notes"\npath = "{root}"\nexclude = ["drafts/**"]\n')
    target, _ = start_kernel(config)
    channel = channel_to(target)
    stub, memories = sources_pb2_grpc.SourceServiceStub(channel), memories_pb2_grpc.MemoryServiceStub(channel)

    def wait_for(condition, what):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"not within 20 s: {what}")

    wait_for(lambda: len(passages(memories)) == 6, "the first sync at start")
    listed = stub.ListSources(pb.ListSourcesRequest(), timeout=10).sources
    assert [(s.name, s.from_config, s.watching) for s in listed] == [("notes", True, True)]
    (root / "garden.md").write_text("# Garden\n\nThe tomatoes need feeding once a week in July.\n")
    wait_for(lambda: ("garden.md", "Garden", "1-3") in passages(memories), "a new note, by the change notification")
    (root / "garden.md").unlink()
    wait_for(lambda: ("garden.md", "Garden", "1-3") not in passages(memories), "a deleted note")


def test_cli_sources_run_cites_and_open_resolves(tmp_path, serve_process):
    root = tmp_path / "vault"
    vault(root)
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED='["ollama", "openai"]', CORTEX_PLUGINS__MEMORIES__WATCH="false")
    env["CORTEX_TARGET"] = serve_process(env=env).target
    added = run_cli("sources", "add", str(root), "--name", "notes", "--exclude", "drafts/**", env=env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"source notes: {root}\n5 files: 5 read")
    status = run_cli("sources", "status", "notes", env=env).stdout
    assert "4 indexed, 0 skipped, 1 failed, 6 passages" in status and "broken.pdf" in status and "not a readable PDF" in status
    synced = json.loads(run_cli("sources", "sync", "notes", "--json", env=env).stdout)
    assert synced["files_unchanged"] == 4
    ran = run_cli("run", "When is my dentist appointment?", env=env)
    assert ran.returncode == 0, ran.stderr
    assert "(notes:health.md#L6-L7, Health > Dentist)" in ran.stdout
    opened = run_cli("open", "notes:health.md#L6-L7", env=env)
    assert opened.stdout == ("notes:health.md lines 6-7  (Health > Dentist)\n"
                             "## Dentist\nDr. Hartmann on Lindenstrasse, appointment Monday 9 March at 10:00.\n")
    listed = run_cli("sources", "list", env=env).stdout
    assert "notes" in listed and str(root) in listed
    assert run_cli("sources", "remove", "notes", env=env).stdout == "removed source notes; 6 memories deleted\n"


def test_only_admin_adds_or_removes_a_source(start_kernel, channel_to, data_dir, tmp_path):
    """AddSource makes the kernel read a folder as its own user: a key holder or a caller without
    a credential cannot point it at ~/.ssh. Reading what was added is for the owner's callers (a
    key holder has a namespace of its own: the owner's notes do not exist for it)."""
    from cortex.kernel.security.credentials import KeyStore

    root = tmp_path / "vault"
    vault(root)
    target, _ = start_kernel(CONFIG, governance=True)
    admin = sources_pb2_grpc.SourceServiceStub(channel_to(target))
    anonymous = sources_pb2_grpc.SourceServiceStub(channel_to(target, as_admin=False))
    key = (("authorization", f"Bearer {KeyStore(data_dir).create('reader', [])}"),)
    request = pb.AddSourceRequest(source=pb.Source(name="secrets", path=str(tmp_path)))
    for metadata in (key, ()):
        with pytest.raises(grpc.RpcError) as err:
            anonymous.AddSource(request, timeout=10, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "builtin/sources-admin" in err.value.details()
    add(admin, root)
    assert [s.name for s in anonymous.ListSources(pb.ListSourcesRequest(), timeout=10).sources] == ["notes"]
    assert "Hartmann" in anonymous.Open(pb.OpenRequest(ref="notes:health.md#L6-L7"), timeout=10).text
    assert [s.name for s in anonymous.ListSources(pb.ListSourcesRequest(), timeout=10, metadata=key).sources] == []
    with pytest.raises(grpc.RpcError) as err:
        anonymous.Open(pb.OpenRequest(ref="notes:health.md#L6-L7"), timeout=10, metadata=key)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        anonymous.RemoveSource(pb.RemoveSourceRequest(name="notes"), timeout=10, metadata=key)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_note_written_while_the_first_sync_runs_is_seen_at_once(start_kernel, channel_to, tmp_path, monkeypatch):
    """The folder is watched before it is first synced: a note that appears while that sync runs
    (a person saving as the kernel starts) comes in by its change notification, not at the next
    rescan five minutes later."""
    from cortex.plugins.memories.source_service import SourceServicer

    root = tmp_path / "vault"
    vault(root)
    first_sync = SourceServicer._sync_quietly

    async def saved_meanwhile(self, name):
        await first_sync(self, name)
        if not (root / "late.md").exists():  # just after the first sync read the folder
            (root / "late.md").write_text("# Late\n\nThe shed key hangs behind the door.\n")

    monkeypatch.setattr(SourceServicer, "_sync_quietly", saved_meanwhile)
    config = (CONFIG.replace("watch = false", "watch = true\nwatch_debounce_ms = 50")
              + f'[[plugins.memories.source]]\nname = "notes"\npath = "{root}"\nexclude = ["drafts/**"]\n')
    target, _ = start_kernel(config)
    memories = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    deadline = time.monotonic() + 20
    while ("late.md", "Late", "1-3") not in passages(memories):
        assert time.monotonic() < deadline, "a note saved during the first sync was missed until the rescan"
        time.sleep(0.1)
