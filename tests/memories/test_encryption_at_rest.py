"""Encryption at rest (kernel/sdk/at_rest.py, `cortex memories encrypt`): what a user does to turn
it on, what stays on disk afterwards (nothing of the memories' text, in any file), what
`cortex serve` says without the right key, and the hostile cases (a key beside the data, an
empty passphrase)."""

from __future__ import annotations

import json
import os
import sqlite3
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


def write_key_file(path: Path, text: str = PASSPHRASE + "\n", mode: int = 0o600) -> Path:
    """A key file as a careful user makes it: the passphrase (an editor's final newline), yours alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)
    path.chmod(mode)
    return path


def serve(data_dir: Path, **env: str):
    return run_cli("serve", "--listen", "127.0.0.1:0", env=cortex_env(data_dir, **NO_KEYRING, **env), timeout=30)


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
    missing = serve(data_dir)
    assert missing.returncode == 1
    assert "is encrypted" in missing.stderr and "CORTEX_PASSPHRASE" in missing.stderr and "CORTEX_KEY_FILE" in missing.stderr
    wrong = serve(data_dir, CORTEX_PASSPHRASE="not the passphrase at all")
    assert wrong.returncode == 1 and "does not match this data dir" in wrong.stderr
    inside = data_dir / "passphrase.txt"
    write_key_file(inside)
    beside = serve(data_dir, CORTEX_KEY_FILE=str(inside))
    assert beside.returncode == 1 and "is inside the data dir" in beside.stderr
    empty = serve(data_dir, CORTEX_PASSPHRASE="")
    assert empty.returncode == 1 and "empty" in empty.stderr
    both = serve(data_dir, CORTEX_PASSPHRASE=PASSPHRASE, CORTEX_KEY_FILE=str(inside))
    assert both.returncode == 1 and "set one of them" in both.stderr


def test_a_key_file_outside_the_data_dir_opens_it_and_a_wrong_key_breaks_the_plugin_by_name(
        start_kernel, channel_to, data_dir, tmp_path, monkeypatch):
    """In a kernel started in-process (no `cortex serve` to check first) the stores refuse alone."""
    key_file = write_key_file(tmp_path / "elsewhere" / "cortex.key")  # (ending in a newline, not part of it)
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


def test_a_tampered_encrypted_store_refuses_to_read_instead_of_answering_wrong(data_dir, monkeypatch):
    """SQLCipher authenticates every page (HMAC-SHA512): a byte changed on disk is an error on the
    read that meets it, never a memory that quietly says something else."""
    from cortex.plugins.memories.service import content_hash
    from cortex.plugins.memories.store import Record, SqliteStore

    monkeypatch.setenv("CORTEX_PASSPHRASE", PASSPHRASE)
    data_dir.mkdir(parents=True, exist_ok=True)
    marker, _ = at_rest.create(data_dir, PASSPHRASE)
    at_rest.write_marker(data_dir, marker)
    path = data_dir / "memories" / "memories.db"
    store = SqliteStore(path)
    for n in range(200):  # enough pages that the one changed below holds memories, not only the schema
        text = f"{MEMORY_WORD} number {n}: " + "x" * 300
        store.put(Record(id=f"m{n:04d}", kind="note", text=text, tags=[], metadata={}, source="test", created_at=n,
                         updated_at=n, expires_at=None, content_hash=content_hash("note", text, [])), now=n)
    store.close()
    raw = bytearray(path.read_bytes())
    assert len(raw) > 8 * 4096
    raw[len(raw) // 2] ^= 0x01  # one bit, in the middle of the file
    path.write_bytes(bytes(raw))

    def read_all() -> None:
        store = SqliteStore(path)
        try:
            for n in range(200):
                assert store.get(f"m{n:04d}", 1000) is not None
        finally:
            store.close()

    with pytest.raises(at_rest.errors("DatabaseError")):
        read_all()


# -- a passphrase without the marker: never ignored (the data dir would be written in the clear) ----
def plain_store(data_dir: Path, text: str = f"{MEMORY_WORD} in plain text") -> None:
    """A data dir a kernel without a passphrase wrote: one plain memories.db holding `text`."""
    from cortex.plugins.memories.service import content_hash
    from cortex.plugins.memories.store import Record, SqliteStore

    store = SqliteStore(data_dir / "memories" / "memories.db")
    store.put(Record(id="m1", kind="note", text=text, tags=[], metadata={}, source="test", created_at=1, updated_at=1,
                     expires_at=None, content_hash=content_hash("note", text, [])), now=1)
    store.close()


def test_a_passphrase_set_before_the_first_start_is_enough_to_encrypt_a_new_data_dir(
        start_kernel, channel_to, data_dir, monkeypatch):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", NO_KEYRING["PYTHON_KEYRING_BACKEND"])
    monkeypatch.setenv("CORTEX_PASSPHRASE", PASSPHRASE)  # and `cortex memories encrypt` never run
    target, kt = start_kernel(LOCAL)
    memories = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    memory_id = memories.Store(pb.StoreRequest(text=f"The {MEMORY_WORD} seedlings go out in April."), timeout=60).id
    kt.stop()
    assert (data_dir / at_rest.MARKER).exists()
    assert at_rest.databases(data_dir)[0] and not at_rest.databases(data_dir)[1]  # encrypted ones, no plain one
    assert files_holding(data_dir, MEMORY_WORD) == {}
    target, kt = start_kernel(LOCAL)  # the same passphrase opens it again
    memories = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    assert MEMORY_WORD in memories.Get(pb.GetRequest(id=memory_id), timeout=10).memory.text


def test_cortex_serve_refuses_a_passphrase_on_a_plain_data_dir(data_dir, tmp_path):
    plain_store(data_dir)
    for env in ({"CORTEX_PASSPHRASE": PASSPHRASE}, {"CORTEX_KEY_FILE": str(write_key_file(tmp_path / "cortex.key"))}):
        refused = serve(data_dir, **env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        variable = next(iter(env))
        assert (f"{variable} is set but this data dir is not encrypted: run `cortex memories encrypt` (kernel "
                "stopped), or unset it") in refused.stderr
        assert "Traceback" not in refused.stderr
    assert not (data_dir / at_rest.MARKER).exists() and MEMORY_WORD in str(files_holding(data_dir, MEMORY_WORD))
    with pytest.MonkeyPatch.context() as env:  # an embedded kernel's store refuses alike
        env.setenv("CORTEX_PASSPHRASE", PASSPHRASE)
        with pytest.raises(at_rest.NotEncrypted, match="is not encrypted: run `cortex memories encrypt`"):
            at_rest.connect(data_dir / "events" / "events.db", data_dir)
    assert not (data_dir / "events" / "events.db").exists()
    done = encrypt(data_dir, CORTEX_PASSPHRASE=PASSPHRASE)  # what the message says to do
    assert done.returncode == 0, done.stderr
    assert files_holding(data_dir, MEMORY_WORD) == {}


def test_encrypted_databases_without_their_marker_say_the_marker_is_missing(data_dir):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CORTEX_PASSPHRASE", PASSPHRASE)
        data_dir.mkdir(parents=True)
        marker, _ = at_rest.create(data_dir, PASSPHRASE)
        at_rest.write_marker(data_dir, marker)
        plain_store(data_dir)  # (encrypted: the marker is there)
    (data_dir / at_rest.MARKER).unlink()  # deleted, or lost in a partial copy
    for env in ({}, {"CORTEX_PASSPHRASE": PASSPHRASE}):
        refused = serve(data_dir, **env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "memories/memories.db" in refused.stderr and "encryption.json is missing" in refused.stderr
        assert not (data_dir / at_rest.MARKER).exists()  # no new marker: another salt would lock them out
    again = encrypt(data_dir, CORTEX_PASSPHRASE=PASSPHRASE)
    assert again.returncode == 1 and "encryption.json is missing" in again.stderr
    assert not (data_dir / at_rest.MARKER).exists()
    from cortex.plugins.memories.store import SqliteStore

    with pytest.raises(at_rest.MarkerMissing, match=r"encryption\.json is missing"):  # not "file is not a database"
        SqliteStore(data_dir / "memories" / "memories.db")
    with pytest.raises(at_rest.MarkerMissing, match=r"not a plain SQLite file.*encryption\.json is missing"):
        at_rest.open_keyed(data_dir / "memories" / "memories.db", None)


# -- a tampered marker, an exposed key file ----------------------------------------------------------
def tampered(data_dir: Path, change) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    marker, _ = at_rest.create(data_dir, PASSPHRASE)
    raw = json.loads(marker.to_json())
    change(raw)
    (data_dir / at_rest.MARKER).write_text(json.dumps(raw))
    return data_dir


def test_a_tampered_marker_is_damaged_not_a_crash(data_dir):
    tampered(data_dir, lambda raw: raw["kdf"].update(n=2**30))  # scrypt would ask for 1 TiB
    refused = serve(data_dir, CORTEX_PASSPHRASE=PASSPHRASE)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "encryption.json is damaged: scrypt n=1073741824 is not a power of two from 2**14 to 2**20" in refused.stderr


@pytest.mark.parametrize(("change", "says"), [
    (lambda raw: raw["kdf"].update(n=2**21), "scrypt n=2097152"),
    (lambda raw: raw["kdf"].update(n=3 * 2**15), "scrypt n=98304 is not a power of two"),
    (lambda raw: raw["kdf"].update(n="131072"), "scrypt n='131072' is not a whole number"),
    (lambda raw: raw["kdf"].update(r=0), "scrypt r=0"),
    (lambda raw: raw["kdf"].update(r=17), "scrypt r=17"),
    (lambda raw: raw["kdf"].update(p=True), "scrypt p=True is not a whole number"),
    (lambda raw: raw["kdf"].update(p=5), "scrypt p=5"),
    (lambda raw: raw["kdf"].update(salt="AAAA"), "the salt has 3 bytes"),
    (lambda raw: raw["kdf"].update(salt="A" * 100), "the salt has 75 bytes"),
    (lambda raw: raw["kdf"].update(name="pbkdf2"), "'pbkdf2' is not scrypt"),
    (lambda raw: raw["key_check"].update(value="00"), "the key check has 1 bytes"),
    (lambda raw: raw.update(format=0), "format 0 is not the one"),
    (lambda raw: raw.update(kdf=[]), "is wrong or missing"),
])
def test_each_field_of_the_marker_is_checked_on_read(data_dir, change, says):
    tampered(data_dir, change)
    with pytest.raises(at_rest.AtRestError, match=r"encryption.json is damaged: ") as raised:
        at_rest.key(data_dir, at_rest.Passphrase(PASSPHRASE, "a test"))
    assert says in str(raised.value)


def test_parameters_scrypt_refuses_are_an_error_that_says_so():
    too_big = at_rest.Marker(os.urandom(16), b"", n=2**20, r=16, p=1)  # 2 GiB: over the derivation's limit
    with pytest.raises(at_rest.AtRestError, match=r"cannot be derived .*memory limit exceeded.*is damaged"):
        at_rest.derive(PASSPHRASE, too_big)


def test_a_key_file_others_can_read_or_change_is_refused(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", NO_KEYRING["PYTHON_KEYRING_BACKEND"])
    key_file = write_key_file(tmp_path / "elsewhere" / "cortex.key")
    monkeypatch.setenv("CORTEX_KEY_FILE", str(key_file))
    assert at_rest.find_passphrase(data_dir) == at_rest.Passphrase(PASSPHRASE, f"CORTEX_KEY_FILE ({key_file})")
    for mode in (0o644, 0o604, 0o640, 0o620, 0o602, 0o666):
        key_file.chmod(mode)
        with pytest.raises(at_rest.AtRestError, match=rf"can be read or changed by others \(mode {mode:03o}\).*"
                                                      rf"`chmod 600 {key_file}`"):
            at_rest.find_passphrase(data_dir)
    key_file.chmod(0o400)  # read-only for its owner: fine
    assert at_rest.find_passphrase(data_dir).text == PASSPHRASE
    key_file.chmod(0o600)
    monkeypatch.setattr(os, "getuid", lambda: key_file.stat().st_uid + 1)
    with pytest.raises(at_rest.AtRestError, match=r"belongs to another user.*chmod 600"):
        at_rest.find_passphrase(data_dir)
    monkeypatch.undo()
    key_file.chmod(0o644)
    refused = serve(data_dir, CORTEX_KEY_FILE=str(key_file))
    assert refused.returncode == 1 and f"`chmod 600 {key_file}`" in refused.stderr, refused.stderr


# -- approvals ----------------------------------------------------------------------------------------
def test_encrypt_covers_approvals_and_says_what_the_audit_log_keeps(data_dir):
    from cortex.plugins.memories import encrypt_cli

    assert "governance/approvals.db" in encrypt_cli.DATABASES
    (data_dir / "governance").mkdir(parents=True)
    with sqlite3.connect(data_dir / "governance" / "approvals.db") as db:  # (as a plain data dir's governance made it)
        db.execute("CREATE TABLE approvals (id TEXT PRIMARY KEY, summary TEXT)")
        db.execute("INSERT INTO approvals VALUES ('a1', ?)", (f"Store: the {MEMORY_WORD} seedlings",))
    db.close()
    with sqlite3.connect(data_dir / "governance" / "audit.db") as db:
        db.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, request_hash TEXT)")
    db.close()
    done = encrypt(data_dir, CORTEX_PASSPHRASE=PASSPHRASE)
    assert done.returncode == 0, done.stderr
    assert "governance/approvals.db: encrypted copy checked (approvals 1)" in done.stderr
    assert files_holding(data_dir, MEMORY_WORD) == {}
    assert "governance/audit.db (hashes of each call's request and response" in done.stdout
    assert "which may include a Store's tags" in done.stdout and "no request or response content" in done.stdout
