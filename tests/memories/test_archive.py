"""Portable memories: `cortex memories export` on one kernel and `import` on another give the same
memories (ids, namespaces, times, versions, links, sources, vectors), byte for byte when exported
again; an import is idempotent, never overwrites, and refuses a cut or edited archive before
writing anything."""

from __future__ import annotations

import json
import textwrap

import grpc
import pytest

from cortex.contracts.memories.v1 import archive_pb2 as ar
from cortex.contracts.memories.v1 import archive_pb2_grpc, memories_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as pb

from ..conftest import cortex_env, run_cli

OFFLINE = {"CORTEX_PLUGINS__DISABLED": '["ollama", "openai"]', "CORTEX_PLUGINS__MEMORIES__WATCH": "false"}


def kernel(serve_process, root, **settings):
    env = cortex_env(root, **OFFLINE, **settings)
    proc = serve_process(env=env)
    env["CORTEX_TARGET"] = proc.target
    return proc, env


def cli(*args, env):
    done = run_cli(*args, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def body(path) -> list[str]:
    """An archive's lines but the manifest (when and by whom), the end's digest of it, and when
    each source was last synced (the importing kernel syncs the folder itself)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    lines[-1]["end"].pop("sha256")
    for line in lines:
        line.get("source", {}).get("source", {}).pop("lastSynced", None)
    return [json.dumps(line, sort_keys=True) for line in lines]


@pytest.fixture(params=["sqlite", "postgres"])
def importer(request) -> dict[str, str]:
    """Where the importing kernel keeps its memories: a SQLite file, or PostgreSQL (a household
    moving its memories onto the team's server)."""
    if request.param == "sqlite":
        return {}
    return {"CORTEX_PLUGINS__MEMORIES__BACKEND": "postgres", "CORTEX_POSTGRES_DSN": request.getfixturevalue("postgres_dsn")}


def test_an_archive_moves_memories_exactly_between_kernels(serve_process, channel_to, tmp_path, importer):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "health.md").write_text(textwrap.dedent("""\
        # Health

        ## Dentist
        Dr. Hartmann, appointment Monday 9 March at 10:00.
        """))
    a, env_a = kernel(serve_process, tmp_path / "a")
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(a.target))
    insurer = stub.Store(pb.StoreRequest(text="The car is insured with Allianz.", tags=["car"], metadata={"policy": "A-17"}),
                         timeout=60)
    stub.Update(pb.UpdateRequest(id=insurer.id, text="The car is insured with Allianz, policy A-17."), timeout=60)
    switched = stub.Store(pb.StoreRequest(text="We switched the car insurance to HUK.", tags=["car"], supersedes=insurer.id),
                          timeout=60)
    stub.Store(pb.StoreRequest(text="Passport renewal due in 2031.", kind="task", ttl_seconds=10 * 365 * 86400), timeout=60)
    cli("sources", "add", str(notes), "--name", "notes", env=env_a)
    exported = tmp_path / "a.jsonl"
    held = stub.Stats(pb.StatsRequest(), timeout=10).total  # 3 stored, and the note's passages
    assert cli("memories", "export", str(exported), env=env_a).stdout == (
        f"exported {held} memories, 1 links, 1 sources to {exported}\n")

    b, env_b = kernel(serve_process, tmp_path / "b", **importer)
    imported = cli("memories", "import", str(exported), env=env_b).stdout
    assert imported == f"imported {held} memories (0 already here, 0 skipped, 0 embedded here), 1 links, 1 sources\n"
    again = tmp_path / "b.jsonl"
    cli("memories", "export", str(again), env=env_b)
    assert body(again) == body(exported)  # the same memories, to the byte

    # ... and they behave as they did: versions, the newer fact first, found by meaning, cited
    there = memories_pb2_grpc.MemoryServiceStub(channel_to(b.target))
    history = there.History(pb.HistoryRequest(id=insurer.id), timeout=10)
    assert [v.memory.text for v in history.versions] == ["The car is insured with Allianz."]
    assert history.superseded_by.new_id == switched.id
    found = there.Search(pb.SearchRequest(query="which company insures the car?", top_k=2), timeout=60).results
    assert [r.memory.id for r in found] == [switched.id, insurer.id]
    assert "Hartmann" in cli("open", "notes:health.md#L3-L4", env=env_b).stdout
    assert "1 indexed" in cli("sources", "status", "notes", env=env_b).stdout

    # importing twice changes nothing; a memory changed here is not overwritten by the archive
    there.Update(pb.UpdateRequest(id=switched.id, text="We switched the car insurance to HUK in May."), timeout=60)
    twice = cli("memories", "import", str(exported), env=env_b)
    assert twice.stdout.startswith(f"imported 0 memories ({held - 1} already here, 1 skipped")
    assert f"skipped {switched.id}: id in use by another memory here" in twice.stderr
    assert there.Get(pb.GetRequest(id=switched.id), timeout=10).memory.text.endswith("in May.")


def test_without_vectors_the_importing_kernel_embeds(serve_process, channel_to, tmp_path):
    _a, env_a = kernel(serve_process, tmp_path / "a")
    cli("remember", "The spare key is with Mrs. Weber on the second floor.", env=env_a)
    archive = tmp_path / "small.jsonl"
    cli("memories", "export", str(archive), "--no-vectors", env=env_a)
    assert '"vector"' not in archive.read_text()
    b, env_b = kernel(serve_process, tmp_path / "b")
    assert "1 embedded here" in cli("memories", "import", str(archive), env=env_b).stdout
    found = memories_pb2_grpc.MemoryServiceStub(channel_to(b.target)).Search(
        pb.SearchRequest(query="who has the extra house key?", mode=pb.SEARCH_MODE_SEMANTIC, top_k=1), timeout=60)
    assert "Mrs. Weber" in found.results[0].memory.text


def test_a_cut_or_edited_archive_is_refused_before_anything_is_written(serve_process, channel_to, tmp_path):
    _a, env_a = kernel(serve_process, tmp_path / "a")
    for text in ("Dentist on Monday at ten.", "Gym on Tuesday at six.", "Choir on Thursday at eight."):
        cli("remember", text, env=env_a)
    archive = tmp_path / "a.jsonl"
    cli("memories", "export", str(archive), env=env_a)
    b, env_b = kernel(serve_process, tmp_path / "b")
    stats = memories_pb2_grpc.MemoryServiceStub(channel_to(b.target))
    lines = archive.read_text().splitlines(keepends=True)

    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-2]))
    refused = run_cli("memories", "import", str(cut), env=env_b)
    assert refused.returncode != 0 and "cut short" in refused.stderr and "nothing was imported" in refused.stderr
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(lines).replace("Gym on Tuesday", "Gym on Friday"))
    refused = run_cli("memories", "import", str(edited), env=env_b)
    assert refused.returncode != 0 and "changed after it was written" in refused.stderr
    assert stats.Stats(pb.StatsRequest(), timeout=10).total == 0

    # one who also forges the digest gets past the file check, not past the content hashes
    from google.protobuf import json_format

    from cortex.plugins.memories.archive_file import verify, write

    forged_lines = [json_format.Parse(x, ar.ArchiveLine()) for x in edited.read_text().splitlines()]
    forged = tmp_path / "forged.jsonl"
    write(forged_lines, forged)
    verify(forged)
    imported = run_cli("memories", "import", str(forged), env=env_b)
    assert "imported 2 memories" in imported.stdout
    assert "does not hash to its content_hash" in imported.stderr
    assert stats.Stats(pb.StatsRequest(), timeout=10).total == 2


def test_an_import_writes_only_namespaces_the_caller_may(start_kernel, channel_to, data_dir, tmp_path):
    from cortex.kernel.security.credentials import KeyStore

    target, _ = start_kernel('[plugins]\ndisabled = ["ollama", "openai"]\n', governance=True)
    keys = KeyStore(data_dir)
    alice = (("authorization", f"Bearer {keys.create('alice', [])}"),)
    bob = (("authorization", f"Bearer {keys.create('bob', [])}"),)
    open_channel = channel_to(target, as_admin=False)
    memories = memories_pb2_grpc.MemoryServiceStub(open_channel)
    archives = archive_pb2_grpc.ArchiveServiceStub(open_channel)
    memories.Store(pb.StoreRequest(text="Alice's locker code is 4711."), timeout=60, metadata=alice)
    lines = [r.line for r in archives.Export(ar.ExportRequest(vectors=True), timeout=60, metadata=alice)]
    assert [line.WhichOneof("line") for line in lines] == ["manifest", "memory", "end"]
    assert lines[0].manifest.namespaces == ["key:alice"] and lines[1].memory.memory.namespace == "key:alice"
    assert [r.line.WhichOneof("line") for r in archives.Export(ar.ExportRequest(), timeout=60, metadata=bob)] == [
        "manifest", "end"]
    request = ar.ImportRequest(manifest=lines[0].manifest, lines=lines[1:2])
    with pytest.raises(grpc.RpcError) as err:
        archives.Import(request, timeout=60, metadata=bob)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "into" in err.value.details()
    request.into = "key:bob"  # bob's own copy: a new content hash in his namespace, the same id taken
    reply = archives.Import(request, timeout=60, metadata=bob)
    assert (reply.added, reply.skipped) == (0, 1) and "id in use" in reply.problems[0]
    with pytest.raises(grpc.RpcError) as err:
        archives.Import(ar.ImportRequest(manifest=ar.ArchiveManifest(format="other"), lines=lines[1:2]), timeout=60,
                        metadata=alice)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
