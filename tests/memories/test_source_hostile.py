"""Watched folders and citations against a hostile user: a symbolic link in the folder that leads
out of it (to a file holding a secret, to the data dir's admin token, to a folder elsewhere) is
never read into memory, even when it is swapped in after the folder was listed; a citation's line
range is parsed strictly (INVALID_ARGUMENT naming the ref and the form) and clamped to the file."""

from __future__ import annotations

import json
import os

import grpc
import httpx
import pytest

from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc, sources_pb2_grpc
from cortex.contracts.memories.v1 import sources_pb2 as pb

from ..conftest import plugin_of

CONFIG = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp"]\n[plugins.memories]\nwatch = false\n'
SECRET = "the launch code is ZEBRA-7781"


@pytest.fixture
def kernel(start_kernel, channel_to, tmp_path):
    target, kt = start_kernel(CONFIG)
    channel = channel_to(target)
    http = httpx.Client(base_url=f"http://{plugin_of(kt, 'http').address}", timeout=60)
    return sources_pb2_grpc.SourceServiceStub(channel), memories_pb2_grpc.MemoryServiceStub(channel), http, kt


def everything_stored(memories) -> str:
    listed = memories.List(mem.ListRequest(page_size=500), timeout=10).memories
    return "\n".join(m.text for m in listed)


def test_sync_never_follows_a_link_out_of_its_folder(kernel, tmp_path):
    stub, memories, _, kt = kernel
    outside = tmp_path / "outside"
    (outside / "deeper").mkdir(parents=True)
    (outside / "secret.md").write_text(f"# Secret\n\n{SECRET}\n")
    (outside / "deeper" / "also.md").write_text(f"# Also secret\n\n{SECRET} (deeper)\n")
    token = (kt.data_dir / "admin.token").read_text().strip()
    root = tmp_path / "vault"
    (root / "sub").mkdir(parents=True)
    (root / "note.md").write_text("# Note\n\nThe kettle is in the blue cupboard.\n")
    (root / "sub" / "real.md").write_text("# Real\n\nThe spare key is with Mrs. Weber.\n")
    (root / "leak.md").symlink_to(outside / "secret.md")
    (root / "token.txt").symlink_to(kt.data_dir / "admin.token")
    (root / "passwd.txt").symlink_to("/etc/passwd")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "escape.md").symlink_to("../../outside/secret.md")
    (root / "inner.md").symlink_to(root / "sub" / "real.md")  # stays inside: may be followed

    added = stub.AddSource(pb.AddSourceRequest(source=pb.Source(name="vault", path=str(root))), timeout=120)
    stored = everything_stored(memories)
    assert "ZEBRA-7781" not in stored and token not in stored and "root:" not in stored, stored
    assert "blue cupboard" in stored and "Mrs. Weber" in stored
    found = memories.Search(mem.SearchRequest(query="launch code ZEBRA-7781", top_k=20), timeout=60)
    assert all("ZEBRA" not in r.memory.text for r in found.results)
    status = {f.path: f for f in stub.SourceStatus(pb.SourceStatusRequest(name="vault"), timeout=10).files}
    for rel in ("leak.md", "token.txt", "passwd.txt", "sub/escape.md"):
        assert status[rel].state == pb.FILE_STATE_SKIPPED and "outside" in status[rel].reason, (rel, status[rel])
        assert status[rel].chunks == 0
    assert not any(p.startswith("elsewhere/") for p in status)
    assert status["note.md"].state == status["inner.md"].state == pb.FILE_STATE_INDEXED
    assert added.report.files_skipped >= 4 and added.source.files_skipped >= 4

    # a file indexed once, then swapped for a link out: its memories go, the secret never comes
    (root / "note.md").unlink()
    (root / "note.md").symlink_to(outside / "secret.md")
    report = list(stub.SyncSource(pb.SyncSourceRequest(name="vault"), timeout=120))[-1].report
    assert report.files_skipped >= 5
    assert "ZEBRA-7781" not in everything_stored(memories) and "blue cupboard" not in everything_stored(memories)
    with pytest.raises(grpc.RpcError) as err:
        stub.Open(pb.OpenRequest(ref="vault:note.md"), timeout=10)
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert "ZEBRA" not in (err.value.details() or "")


def test_a_link_swapped_in_after_the_listing_is_caught_at_open(tmp_path):
    """The folder was listed with a plain file; by the time it is read, it is a link out."""
    from cortex.plugins.memories.source_sync import read_file, scan

    outside = tmp_path / "secret.md"
    outside.write_text(f"# Secret\n\n{SECRET}\n")
    root = tmp_path / "vault"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "note.md").write_text("# Note\n\nharmless\n")
    listed = scan(root, [], [])
    assert set(listed) == {"sub/note.md"}
    (root / "sub" / "note.md").unlink()
    (root / "sub" / "note.md").symlink_to(outside)
    read = read_file(root, "sub/note.md", *listed["sub/note.md"])
    assert read.state == "skipped" and "outside" in read.reason and not read.chunks
    # a folder on the way swapped for a link out
    (root / "sub" / "note.md").unlink()
    (root / "sub").rmdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "note.md").write_text(f"# Secret\n\n{SECRET}\n")
    os.symlink(tmp_path / "elsewhere", root / "sub")
    read = read_file(root, "sub/note.md", *listed["sub/note.md"])
    assert read.state == "skipped" and not read.chunks and all("ZEBRA" not in c.text for c in read.chunks)
    # a FIFO in the folder does not hang the sync
    os.mkfifo(root / "pipe.md")
    read = read_file(root, "pipe.md", 0, 0)
    assert read.state == "skipped" and "not a regular file" in read.reason


BAD_RANGES = ["#L1-L99999999999999999999", "#L99999999999999999999", "#L0", "#L0-L2", "#L5-L2", "#Lx", "#L1-L2-L3",
              "#L", "#lines", "#L1-", "#L-1", "#L4294967296"]


def test_open_parses_a_line_range_strictly_over_grpc_and_http(kernel, tmp_path):
    stub, memories, http, _ = kernel
    root = tmp_path / "vault"
    root.mkdir()
    (root / "note.md").write_text("# Note\n\nline three\nline four\nline five\n")
    stub.AddSource(pb.AddSourceRequest(source=pb.Source(name="vault", path=str(root))), timeout=120)
    for fragment in BAD_RANGES:
        ref = f"vault:note.md{fragment}"
        with pytest.raises(grpc.RpcError) as err:
            stub.Open(pb.OpenRequest(ref=ref), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (ref, err.value.code(), err.value.details())
        assert ref in err.value.details() and "#L3-L9" in err.value.details(), err.value.details()
        reply = http.post("/v1/cortex.memories.v1.SourceService/Open", content=json.dumps({"ref": ref}),
                          headers={"Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "INVALID_ARGUMENT", (ref, reply.text)
    # past the end of the file: clamped to the file
    opened = stub.Open(pb.OpenRequest(ref="vault:note.md#L4-L99999"), timeout=10)
    assert (opened.first_line, opened.last_line, opened.text) == (4, 5, "line four\nline five")
    opened = stub.Open(pb.OpenRequest(ref="vault:note.md#L3-5"), timeout=10)
    assert (opened.first_line, opened.last_line, opened.text) == (3, 5, "line three\nline four\nline five")
    with pytest.raises(grpc.RpcError) as err:
        stub.Open(pb.OpenRequest(ref="vault:note.md#L40-L50"), timeout=10)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE and "5 lines" in err.value.details()
    # a memory whose metadata claims such a range (anyone may store metadata) is refused as well
    forged = memories.Store(mem.StoreRequest(text="a forged citation", metadata={
        "source": "vault", "file": "note.md", "lines": "1-99999999999999999999"}), timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        stub.Open(pb.OpenRequest(ref=forged.id), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    reply = http.post("/v1/cortex.memories.v1.SourceService/Open", content=json.dumps({"ref": forged.id}),
                      headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
