"""Side doors follow the front door's rules: an archive import is admitted line by line as the
direct calls would be. Before, any caller (local without a credential, any key) imported a
`source` line pointing at the kernel's data dir and read admin.token back as a memory; file rows
and links naming another namespace's memories deleted or superseded them."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.memories.v1 import archive_pb2 as ar
from cortex.contracts.memories.v1 import archive_pb2_grpc, memories_pb2_grpc, sources_pb2, sources_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.kernel.security.credentials import KeyStore

from ..conftest import bearer

MANIFEST = ar.ArchiveManifest(format="cortex-memories", version=1)
CONFIG = '[plugins]\ndisabled = ["ollama", "openai"]\n[plugins.memories]\nwatch = false\n'


@pytest.fixture
def kernel(start_kernel, channel_to, data_dir):
    target, _ = start_kernel(CONFIG, governance=True)
    keys = KeyStore(data_dir)
    alice, bob = bearer(keys.create("alice", [])), bearer(keys.create("bob", []))
    anonymous = channel_to(target, as_admin=False)
    return {
        "memories": memories_pb2_grpc.MemoryServiceStub(anonymous),
        "archives": archive_pb2_grpc.ArchiveServiceStub(anonymous),
        "sources": sources_pb2_grpc.SourceServiceStub(anonymous),
        "admin": channel_to(target), "alice": alice, "bob": bob, "local": (),
    }


def source_line(name: str, path, files=()) -> ar.ArchiveLine:
    return ar.ArchiveLine(source=ar.ArchivedSource(source=sources_pb2.Source(name=name, path=str(path)), files=files))


def secrets_found(kernel, text: str) -> list:
    admin = memories_pb2_grpc.MemoryServiceStub(kernel["admin"])
    query = mem.SearchRequest(query=text, mode=mem.SEARCH_MODE_KEYWORD, top_k=5, filter=mem.Filter(namespaces=["*"]))
    return list(admin.Search(query, timeout=30).results)


@pytest.mark.parametrize("who", ["local", "alice"])
def test_an_imported_source_line_is_an_add_source_and_only_admin_adds_one(kernel, data_dir, tmp_path, who):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "plan.md").write_text("the quarterly plan mentions zanzibar\n")
    reply = kernel["archives"].Import(ar.ImportRequest(manifest=MANIFEST, lines=[
        source_line("loot", data_dir), source_line("notes", notes)]), timeout=60, metadata=kernel[who])
    assert reply.sources == 0 and len(reply.problems) == 2
    assert all("not imported: PERMISSION_DENIED" in p and "builtin/sources-admin" in p for p in reply.problems)
    listed = sources_pb2_grpc.SourceServiceStub(kernel["admin"]).ListSources(sources_pb2.ListSourcesRequest(), timeout=10)
    assert not listed.sources
    token = (data_dir / "admin.token").read_text().strip()
    assert not secrets_found(kernel, token) and not secrets_found(kernel, "zanzibar")


def test_even_admin_never_imports_or_adds_the_data_dir_as_a_source(kernel, data_dir):
    admin = archive_pb2_grpc.ArchiveServiceStub(kernel["admin"])
    reply = admin.Import(ar.ImportRequest(manifest=MANIFEST, lines=[source_line("loot", data_dir),
                                                                    source_line("gov", data_dir / "governance")]),
                         timeout=60)
    assert reply.sources == 0 and all("kernel's data dir" in p for p in reply.problems)
    with pytest.raises(grpc.RpcError) as err:
        sources_pb2_grpc.SourceServiceStub(kernel["admin"]).AddSource(
            sources_pb2.AddSourceRequest(source=sources_pb2.Source(name="loot", path=str(data_dir.parent))), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "data dir" in err.value.details()
    assert not secrets_found(kernel, (data_dir / "admin.token").read_text().strip())


def test_an_imported_sources_files_never_claim_another_namespaces_memories(kernel, tmp_path):
    bobs = kernel["memories"].Store(mem.StoreRequest(text="bob's diary entry about the lighthouse"), timeout=30,
                                    metadata=kernel["bob"])
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("alice's own note\n")
    # admin may import a source, but a file row naming bob's memory is dropped: the sync that
    # would have deleted it (the file no longer holds that passage) reads the file afresh instead
    admin = archive_pb2_grpc.ArchiveServiceStub(kernel["admin"])
    row = ar.ArchivedFile(path="a.md", size=1, mtime_ns=1, content_hash="x", state="indexed", memory_ids=[bobs.id])
    line = source_line("notes", notes, [row])
    line.source.source.namespace = "key:alice"
    reply = admin.Import(ar.ImportRequest(manifest=MANIFEST, lines=[line]), timeout=60)
    assert reply.sources == 1, reply.problems
    synced = list(sources_pb2_grpc.SourceServiceStub(kernel["admin"]).SyncSource(
        sources_pb2.SyncSourceRequest(name="notes", full=True), timeout=60))
    assert synced[-1].report.files_read == 1 and synced[-1].report.chunks_removed == 0
    got = kernel["memories"].Get(mem.GetRequest(id=bobs.id), timeout=10, metadata=kernel["bob"])
    assert got.memory.text == "bob's diary entry about the lighthouse"


def test_imported_links_join_only_the_importers_own_memories(kernel):
    memories, archives = kernel["memories"], kernel["archives"]
    bobs = memories.Store(mem.StoreRequest(text="bob: the meeting is on Monday"), timeout=30, metadata=kernel["bob"])
    alices = memories.Store(mem.StoreRequest(text="alice: the meeting moved to Friday"), timeout=30,
                            metadata=kernel["alice"])
    older = memories.Store(mem.StoreRequest(text="alice: the meeting is on Tuesday"), timeout=30, metadata=kernel["alice"])
    links = [ar.ArchiveLine(link=mem.Supersession(old_id=bobs.id, new_id=alices.id, rule="import")),
             ar.ArchiveLine(link=mem.Supersession(old_id=older.id, new_id=alices.id, rule="import"))]
    reply = archives.Import(ar.ImportRequest(manifest=MANIFEST, lines=links), timeout=60, metadata=kernel["alice"])
    assert reply.links == 1 and "one namespace you may write" in reply.problems[0]
    got = memories.Get(mem.GetRequest(id=bobs.id), timeout=10, metadata=kernel["bob"])
    assert not got.memory.superseded_by, "bob's memory was marked superseded by alice's"


def test_an_imported_memory_without_a_namespace_lands_in_the_importers_own(kernel):
    from cortex.plugins.memories.service import content_hash

    text = "a memory that names no namespace"
    line = ar.ArchiveLine(memory=ar.ArchivedMemory(memory=mem.Memory(
        id="m-planted-0001", kind="note", text=text, content_hash=content_hash("note", text, [], "default"))))
    reply = kernel["archives"].Import(ar.ImportRequest(manifest=MANIFEST, lines=[line]), timeout=60,
                                      metadata=kernel["alice"])
    assert reply.added == 1, reply.problems
    got = kernel["memories"].Get(mem.GetRequest(id="m-planted-0001"), timeout=10, metadata=kernel["alice"])
    assert got.memory.namespace == "key:alice"


def test_no_text_or_tag_can_make_another_namespaces_content_hash(kernel):
    memories = kernel["memories"]
    alices = memories.Store(mem.StoreRequest(text="alice secret plan", tags=["work"], metadata={"pin": "4711"}),
                            timeout=30, metadata=kernel["alice"])
    # the fields and the namespace joined as alice's hash joins them, sent by local (the owner's namespace)
    forged = memories.Store(mem.StoreRequest(text="alice secret plan\x1fwork\x1fnamespace=key:alice"), timeout=30)
    assert forged.created and forged.id != alices.id and forged.memory.namespace == "default"
    assert "4711" not in str(forged)
    # a tag that reads like the namespace part does not pre-empt bob's memory either
    planted = memories.Store(mem.StoreRequest(text="bob future", tags=["namespace=key:bob"]), timeout=30)
    bobs = memories.Store(mem.StoreRequest(text="bob future"), timeout=30, metadata=kernel["bob"])
    assert bobs.created and bobs.id != planted.id and bobs.memory.namespace == "key:bob"


def test_an_imported_version_or_time_is_checked_as_a_store_would_be(kernel):
    from cortex.plugins.memories.service import content_hash

    def line(**versions) -> ar.ArchiveLine:
        text = "an archived note"
        archived = ar.ArchivedMemory(memory=mem.Memory(id="m-archived-0001", kind="note", text=text,
                                                       content_hash=content_hash("note", text, [], "default")))
        archived.versions.add(version=1, memory=mem.Memory(**versions))
        return archived

    archives = kernel["archives"]
    bad_version = ar.ArchiveLine(memory=line(kind="no-such-kind", text="x" * 10))
    reply = archives.Import(ar.ImportRequest(manifest=MANIFEST, lines=[bad_version]), timeout=60, metadata=kernel["alice"])
    assert (reply.added, reply.skipped) == (0, 1) and "kind" in reply.problems[0]
    far = ar.ArchiveLine(memory=line(kind="note", text="older"))
    far.memory.memory.created_at.seconds = 2**62
    with pytest.raises(grpc.RpcError) as err:
        archives.Import(ar.ImportRequest(manifest=MANIFEST, lines=[far]), timeout=60, metadata=kernel["alice"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "created_at" in err.value.details()


def test_an_imported_vector_must_fit_this_kernels_index(kernel, channel_to):
    """A manifest claiming 3-value vectors: before, the row was written, and after a restart every
    search of every caller failed (a 3-dim vector in a 384-dim index). Vectors of another size,
    or not finite, are dropped and the text embedded here instead."""
    import numpy as np

    from cortex.plugins.memories.service import content_hash

    kernel["memories"].Store(mem.StoreRequest(text="alice's first note"), timeout=60, metadata=kernel["alice"])
    model = memories_pb2_grpc.MemoryServiceStub(kernel["admin"]).Stats(mem.StatsRequest(), timeout=30).embedding_model
    assert model, "the kernel embeds (MiniLM on MLX)"
    manifest = ar.ArchiveManifest(format="cortex-memories", version=1, vectors=True, embedding_model=model, dimension=3)
    lines = []
    for n, vector in enumerate((np.ones(3, "<f4"), np.full(384, np.nan, "<f4"))):
        text = f"planted vector {n}"
        lines.append(ar.ArchiveLine(memory=ar.ArchivedMemory(vector=vector.tobytes(), memory=mem.Memory(
            id=f"m-planted-vec{n}", kind="note", text=text, embedding_model=model,
            content_hash=content_hash("note", text, [], "default")))))
    reply = kernel["archives"].Import(ar.ImportRequest(manifest=manifest, lines=lines), timeout=60, metadata=kernel["local"])
    assert reply.added == 2 and reply.embedded == 2, reply
    found = kernel["memories"].Search(mem.SearchRequest(query="planted vector", top_k=3, mode=mem.SEARCH_MODE_SEMANTIC),
                                      timeout=30, metadata=kernel["alice"])
    assert found is not None  # every caller's search still works


def test_an_imported_memory_line_is_admitted_as_a_store(kernel, channel_to):
    from cortex.contracts.governance.v1 import governance_pb2 as gpb
    from cortex.contracts.governance.v1 import governance_pb2_grpc
    from cortex.plugins.memories.service import content_hash

    governance_pb2_grpc.GovernanceServiceStub(kernel["admin"]).AddPolicy(gpb.AddPolicyRequest(toml=(
        '[[rule]]\nid = "bob-reads-only"\neffect = "deny"\nprincipals = ["key:bob"]\n'
        'services = ["cortex.memories.v1.MemoryService"]\nmethods = ["Store"]\n')), timeout=10)
    text = "bob may not write this"
    line = ar.ArchiveLine(memory=ar.ArchivedMemory(memory=mem.Memory(
        id="m-bob-0001", kind="note", text=text, content_hash=content_hash("note", text, [], "default"))))
    reply = kernel["archives"].Import(ar.ImportRequest(manifest=MANIFEST, lines=[line]), timeout=60, metadata=kernel["bob"])
    assert reply.added == 0 and "PERMISSION_DENIED" in reply.problems[0] and "bob-reads-only" in reply.problems[0]


def test_an_event_cannot_pre_empt_another_namespaces_event(kernel):
    from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc

    events = events_pb2_grpc.EventServiceStub(kernel["admin"])
    forged = events_pb2.Event(type="note.saved", source="key:alice", id="S\0I")  # alice's (S, I), joined as the bus joins
    with pytest.raises(grpc.RpcError) as err:
        events.Publish(events_pb2.PublishRequest(event=forged), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "NUL" in err.value.details()
