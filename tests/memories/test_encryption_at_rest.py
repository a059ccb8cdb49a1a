"""Encryption at rest (kernel/sdk/at_rest.py, `cortex memories encrypt`): what a user does to turn
it on, what stays on disk afterwards (nothing of the memories' text, in any file), what
`cortex serve` says without the right key, and the hostile cases (a key beside the data, an
empty passphrase)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2, cerebrum_pb2_grpc
from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc, sources_pb2, sources_pb2_grpc
from cortex.kernel.sdk import at_rest

from ..conftest import cortex_env, run_cli

PASSPHRASE = "correct horse battery staple"
NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}  # a developer's own keyring stays out of it
# the words no file may hold once the data dir is encrypted: a memory's, a watched note's, an event's
MEMORY_WORD, NOTE_WORD, EVENT_WORD = "quokkafern", "lighthousewick", "zephyrcart"
LOCAL = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp", "http"]\n[plugins.memories]\nann_threshold = 2\n'


def files_holding(folder: Path, *words: str) -> dict[str, list[str]]:
    """{file under `folder`: the `words` its bytes hold}, for every file there."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        content = path.read_bytes()
        if hits := [w for w in words if w.encode() in content]:
            found[str(path.relative_to(folder))] = hits
    return found


def encrypt(data_dir: Path, **env: str):
    return run_cli("memories", "encrypt", env=cortex_env(data_dir, **NO_KEYRING, **env))


def use(channel, vault: Path) -> dict[str, str]:
    """What a person does with a kernel: remembers, watches a folder, plans from memories, publishes
    an event. {memory id: text}."""
    memories = memories_pb2_grpc.MemoryServiceStub(channel)
    texts = [f"The {MEMORY_WORD} seedlings go in the north bed in April.",
             f"Water the {MEMORY_WORD} every second evening.",
             "The bike lock code is written in the blue notebook."]
    stored = {memories.Store(pb.StoreRequest(text=t), timeout=60).id: t for t in texts}
    vault.mkdir(exist_ok=True)
    (vault / "notes.md").write_text(f"# Lamps\n\nThe {NOTE_WORD} lamp needs a new wick every winter.\n")
    sources = sources_pb2_grpc.SourceServiceStub(channel)
    sources.AddSource(sources_pb2.AddSourceRequest(source=sources_pb2.Source(name="notes", path=str(vault))), timeout=120)
    cerebrum = cerebrum_pb2_grpc.CerebrumServiceStub(channel)
    run = list(cerebrum.Execute(cerebrum_pb2.ExecuteRequest(goal=f"when do the {MEMORY_WORD} seedlings go out?"), timeout=120))
    assert run[-1].summary.trace_id
    bus = events_pb2_grpc.EventServiceStub(channel)
    bus.Publish(events_pb2.PublishRequest(event=events_pb2.Event(type="note.saved", data=f'{{"text": "{EVENT_WORD}"}}')),
                timeout=10)
    return stored


def assert_found(channel, stored: dict[str, str]) -> None:
    """Every memory reads back, and keyword and semantic search find them."""
    memories = memories_pb2_grpc.MemoryServiceStub(channel)
    for memory_id, text in stored.items():
        assert memories.Get(pb.GetRequest(id=memory_id), timeout=10).memory.text == text
    keyword = memories.Search(pb.SearchRequest(query=MEMORY_WORD, mode=pb.SEARCH_MODE_KEYWORD, top_k=10), timeout=30)
    assert {r.memory.id for r in keyword.results} == {i for i, t in stored.items() if MEMORY_WORD in t}
    lock = next(i for i, t in stored.items() if "bike" in t)
    semantic = memories.Search(pb.SearchRequest(query="bike lock code notebook", mode=pb.SEARCH_MODE_SEMANTIC, top_k=1), timeout=30)
    assert semantic.results[0].memory.id == lock
    notes = memories.Search(pb.SearchRequest(query=NOTE_WORD, mode=pb.SEARCH_MODE_KEYWORD, top_k=5), timeout=30)
    assert [NOTE_WORD in r.memory.text for r in notes.results] == [True]
    stats = memories.Stats(pb.StatsRequest(), timeout=30)  # (its page count and size are SQLCipher's own pragmas)
    assert stats.total == len(stored) + 1 and stats.storage_bytes > 0


def test_an_encrypted_data_dir_holds_no_text_in_any_file(start_kernel, channel_to, data_dir, tmp_path, monkeypatch):
    made = encrypt(data_dir, CORTEX_PASSPHRASE=PASSPHRASE)
    assert made.returncode == 0, made.stderr
    assert "held no database yet" in made.stdout and (data_dir / at_rest.MARKER).exists()
    monkeypatch.setenv("CORTEX_PASSPHRASE", PASSPHRASE)
    target, kt = start_kernel(LOCAL, governance=True)
    stored = use(channel_to(target), tmp_path / "vault")
    assert_found(channel_to(target), stored)
    words = (MEMORY_WORD, NOTE_WORD, EVENT_WORD)
    assert files_holding(data_dir, *words) == {}  # while it runs: the -wal files hold the newest pages
    kt.stop()
    on_disk = {str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file()}
    assert {"memories/memories.db", "cerebrum/traces.db", "events/events.db", "governance/audit.db"} <= on_disk
    assert any(name.endswith(".usearch") for name in on_disk)  # the HNSW index was saved at stop, and checked below
    assert files_holding(data_dir, *words) == {}
    assert files_holding(tmp_path / "vault", NOTE_WORD) == {"notes.md": [NOTE_WORD]}  # (the search can find a word)


def test_cortex_serve_without_the_right_key_refuses_saying_what_is_missing(data_dir, tmp_path):
    assert encrypt(data_dir, CORTEX_PASSPHRASE=PASSPHRASE).returncode == 0

    def serve(**env: str):
        return run_cli("serve", "--listen", "127.0.0.1:0", env=cortex_env(data_dir, **NO_KEYRING, **env), timeout=30)

    missing = serve()
    assert missing.returncode == 1
    assert "is encrypted" in missing.stderr and "CORTEX_PASSPHRASE" in missing.stderr and "CORTEX_KEY_FILE" in missing.stderr
    wrong = serve(CORTEX_PASSPHRASE="not the passphrase at all")
    assert wrong.returncode == 1 and "does not match this data dir" in wrong.stderr
    inside = data_dir / "passphrase.txt"
    inside.write_text(PASSPHRASE + "\n")
    beside = serve(CORTEX_KEY_FILE=str(inside))
    assert beside.returncode == 1 and "is inside the data dir" in beside.stderr
    empty = serve(CORTEX_PASSPHRASE="")
    assert empty.returncode == 1 and "empty" in empty.stderr
    both = serve(CORTEX_PASSPHRASE=PASSPHRASE, CORTEX_KEY_FILE=str(inside))
    assert both.returncode == 1 and "set one of them" in both.stderr


def test_a_key_file_outside_the_data_dir_opens_it_and_a_wrong_key_breaks_the_plugin_by_name(
        start_kernel, channel_to, data_dir, tmp_path, monkeypatch):
    """In a kernel started in-process (no `cortex serve` to check first) the stores refuse alone."""
    key_file = tmp_path / "elsewhere" / "cortex.key"
    key_file.parent.mkdir()
    key_file.write_text(PASSPHRASE + "\n")  # an editor's final newline is not part of it
    assert encrypt(data_dir, CORTEX_KEY_FILE=str(key_file)).returncode == 0
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", NO_KEYRING["PYTHON_KEYRING_BACKEND"])
    monkeypatch.setenv("CORTEX_PASSPHRASE", "a guess that is wrong")
    _, kt = start_kernel(LOCAL)
    broken = kt.kernel.host.records["memories"]
    assert broken.state == "broken" and "does not match this data dir" in broken.error
    kt.stop()
    monkeypatch.delenv("CORTEX_PASSPHRASE")
    monkeypatch.setenv("CORTEX_KEY_FILE", str(key_file))
    target, _ = start_kernel(LOCAL)
    memories = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    memory_id = memories.Store(pb.StoreRequest(text=f"{MEMORY_WORD} behind a key file"), timeout=60).id
    assert memories.Get(pb.GetRequest(id=memory_id), timeout=10).memory.text == f"{MEMORY_WORD} behind a key file"


def test_cortex_memories_encrypt_turns_a_plain_store_into_an_encrypted_one(start_kernel, channel_to, data_dir, tmp_path):
    target, kt = start_kernel(LOCAL, governance=True)
    stored = use(channel_to(target), tmp_path / "vault")
    refused = encrypt(data_dir, CORTEX_PASSPHRASE=PASSPHRASE)  # the kernel still holds the databases
    assert refused.returncode == 1 and "stop `cortex serve`" in refused.stderr
    assert not (data_dir / at_rest.MARKER).exists()
    kt.stop()
    words = (MEMORY_WORD, NOTE_WORD, EVENT_WORD)
    plain = files_holding(data_dir, *words)
    assert {"memories/memories.db", "cerebrum/traces.db", "events/events.db"} <= set(plain)
    short = encrypt(data_dir, CORTEX_PASSPHRASE="short")
    assert short.returncode == 1 and "at least 8" in short.stderr and files_holding(data_dir, *words) == plain

    done = encrypt(data_dir, CORTEX_PASSPHRASE=PASSPHRASE)
    assert done.returncode == 0, done.stderr
    assert "memories/memories.db: encrypted copy checked (memories 4," in done.stderr  # 3 memories and the note's passage
    assert "events/events.db: encrypted copy checked" in done.stderr and "left readable" in done.stdout
    assert files_holding(data_dir, *words) == {}
    assert not [p for p in data_dir.rglob("*") if p.name.endswith((".encrypting", ".tmp"))]
    again = encrypt(data_dir, CORTEX_PASSPHRASE=PASSPHRASE)
    assert again.returncode == 0 and "already encrypted; nothing was left plain" in again.stdout

    with pytest.MonkeyPatch.context() as env:
        env.setenv("CORTEX_PASSPHRASE", PASSPHRASE)
        target, kt = start_kernel(LOCAL, governance=True)
        assert_found(channel_to(target), stored)
        kt.stop()
    verified = run_cli("proofs", "verify", "--all", env=cortex_env(data_dir))
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout + verified.stderr
    assert files_holding(data_dir, *words) == {}


def test_opening_a_plain_file_left_in_an_encrypted_data_dir_says_how_to_finish(data_dir):
    from cortex.plugins.memories.store import SqliteStore

    SqliteStore(data_dir / "memories" / "memories.db").close()  # a plain store...
    marker, _ = at_rest.create(data_dir, PASSPHRASE)
    at_rest.write_marker(data_dir, marker)  # ...and a crash after the marker, before its copy replaced it
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CORTEX_PASSPHRASE", PASSPHRASE)
        with pytest.raises(at_rest.AtRestError, match=r"is not encrypted, though its data dir is.*cortex memories encrypt"):
            SqliteStore(data_dir / "memories" / "memories.db")
