"""What a user sees from outside: kill -9 mid-burst, the CLI, importing notes, and relevance."""

from __future__ import annotations

import json
import signal
import textwrap
import threading

import grpc

from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc

from ..conftest import cortex_env, run_cli

ONLY_LOCAL = '["ollama", "openai"]'


def test_kill_9_during_a_burst_loses_no_acknowledged_memory(tmp_path, serve_process, channel_to, stored_at_rest):
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED=ONLY_LOCAL, **stored_at_rest.env)
    kernel = serve_process(env=env)
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(kernel.target))
    acknowledged: list[tuple[str, str]] = []
    stop = threading.Event()

    def burst(worker: int) -> None:
        i = 0
        while not stop.is_set():
            text = f"burst {worker}-{i}: remember item {i} of worker {worker}"
            try:
                reply = stub.Store(pb.StoreRequest(text=text, tags=["burst"]), timeout=10)
            except grpc.RpcError:
                return  # the kernel died under us: this one was never acknowledged
            acknowledged.append((reply.id, text))
            i += 1

    workers = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    while len(acknowledged) < 60:
        threading.Event().wait(0.01)
    kernel.proc.send_signal(signal.SIGKILL)
    kernel.proc.wait(10)
    stop.set()
    for w in workers:
        w.join(10)
    db = stored_at_rest.connect(tmp_path / "data" / "memories" / "memories.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    restarted = serve_process(env=env)
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(restarted.target))
    for memory_id, text in acknowledged:
        assert stub.Get(pb.GetRequest(id=memory_id), timeout=10).memory.text == text
    fts = stub.Search(pb.SearchRequest(query="burst", mode=pb.SEARCH_MODE_KEYWORD, top_k=100), timeout=30)
    assert len(fts.results) >= min(100, len(acknowledged))  # the full-text index is consistent too


def test_cli_remember_recall_stats_list_get_delete(tmp_path, serve_process):
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED=ONLY_LOCAL)
    kernel = serve_process(env=env)
    env["CORTEX_TARGET"] = kernel.target
    stored = json.loads(run_cli("remember", "Renew the car insurance in March", "--kind", "task", "--tag", "car", "--json", env=env).stdout)
    assert stored["created"] is True
    memory_id = stored["id"]
    assert "already remembered" in run_cli("remember", "Renew the car insurance in March", "--kind", "task", "--tag", "car", env=env).stdout
    recalled = json.loads(run_cli("recall", "vehicle policy renewal", "--mode", "semantic", "-k", "3", "--json", env=env).stdout)
    assert recalled["results"][0]["memory"]["id"] == memory_id and recalled["results"][0]["score"] > 0
    stats = json.loads(run_cli("memories", "stats", "--json", env=env).stdout)
    assert stats["total"] == 1 and stats["by_kind"] == {"task": "1"}
    listed = json.loads(run_cli("memories", "list", "--json", env=env).stdout)
    assert [m["id"] for m in listed["memories"]] == [memory_id]
    assert json.loads(run_cli("memories", "get", memory_id, env=env).stdout)["text"] == "Renew the car insurance in March"
    assert run_cli("memories", "delete", memory_id, env=env).returncode == 0
    missing = run_cli("memories", "get", memory_id, env=env)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    bad = run_cli("recall", "x", "-k", "0", env=env)
    assert bad.returncode == 1 and "top_k is 0" in bad.stderr


def test_import_a_folder_of_notes(tmp_path, serve_process):
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "garden.md").write_text(textwrap.dedent("""\
        ---
        title: Garden
        tags: [garden, home]
        ---
        # Tomatoes
        Plant them after the last frost.

        # Roses
        Prune in **late** winter ([how](https://example.org/roses)).
        ```
        # a comment in code, not a heading
        ```
        """))
    (notes / "sub" / "ideas.txt").write_text("An app that waters plants by itself.\n")
    (notes / "sub" / "list.md").write_text("---\ntags:\n  - errands\n---\nPick up the parcel.\n")
    (notes / "skip.png").write_bytes(b"\x89PNG")
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED=ONLY_LOCAL)
    kernel = serve_process(env=env)
    env["CORTEX_TARGET"] = kernel.target
    result = run_cli("memories", "import", str(notes), "--split", "headings", env=env)
    assert result.returncode == 0, result.stderr
    assert "imported 4 new memories from 3 files" in result.stdout
    again = run_cli("memories", "import", str(notes), "--split", "headings", env=env)
    assert "imported 0 new memories from 3 files (4 already known)" in again.stdout
    listed = json.loads(run_cli("memories", "list", "--json", env=env).stdout)["memories"]
    by_source = {m["source"].split("notes/")[-1]: m for m in listed}
    assert set(by_source) == {"garden.md#Tomatoes", "garden.md#Roses", "sub/ideas.txt", "sub/list.md"}
    assert by_source["garden.md#Roses"]["tags"] == ["garden", "home"] and by_source["sub/list.md"]["tags"] == ["errands"]
    # a section reads as a watched folder's passage: its heading, then text without the markup
    assert by_source["garden.md#Roses"]["text"] == "Roses\nPrune in late winter (how).\n# a comment in code, not a heading"
    found = json.loads(run_cli("recall", "when should I cut back the flowers", "-k", "1", "--json", env=env).stdout)
    assert found["results"][0]["memory"]["source"].endswith("garden.md#Roses")


# A small labelled set: each query paraphrases its relevant notes, sharing few or no words.
NOTES = {
    "dentist": "The dentist appointment was moved to Thursday afternoon.",
    "flight": "Flight to Lisbon departs at 7am from terminal 2.",
    "rent": "Rent is due on the first of every month; pay the landlord by transfer.",
    "gym": "Leg day on Mondays, upper body on Wednesdays at the gym.",
    "bread": "Sourdough: feed the starter the night before, bake at 230 degrees.",
    "car": "The car needs new tyres before the winter.",
    "mom": "Mom's birthday is on the 14th of June; she likes orchids.",
    "password": "Rotate the router admin password every quarter.",
    "tax": "Send the receipts to the accountant before the tax deadline in April.",
    "plants": "Water the fern twice a week and keep it out of direct sun.",
    "meeting": "Weekly sync with the design team is on Tuesdays at 10.",
    "vet": "The cat is due for her vaccination at the vet next month.",
}
QUERIES = {
    "when do I see the tooth doctor": {"dentist"},
    "what time does my plane leave": {"flight"},
    "monthly housing payment": {"rent"},
    "workout schedule": {"gym"},
    "how to make a loaf": {"bread"},
    "vehicle maintenance before snow": {"car"},
    "present for my mother": {"mom"},
    "wifi box security": {"password"},
    "paperwork for the IRS": {"tax"},
    "houseplant care": {"plants"},
    "recurring call with designers": {"meeting"},
    "animal doctor for my pet": {"vet"},
}


def test_semantic_and_hybrid_beat_keyword_on_paraphrases(start_kernel, channel_to, capsys):
    target, _ = start_kernel('[plugins]\ndisabled = ["ollama", "openai"]\n')
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
    id_of = {stub.Store(pb.StoreRequest(text=text), timeout=60).id: name for name, text in NOTES.items()}
    recall = {}
    for mode_name, mode in (("keyword", pb.SEARCH_MODE_KEYWORD), ("semantic", pb.SEARCH_MODE_SEMANTIC), ("hybrid", pb.SEARCH_MODE_HYBRID)):
        hits = 0
        for query, relevant in QUERIES.items():
            reply = stub.Search(pb.SearchRequest(query=query, mode=mode, top_k=5), timeout=60)
            hits += len({id_of[r.memory.id] for r in reply.results} & relevant)
        recall[mode_name] = hits / sum(len(r) for r in QUERIES.values())
    with capsys.disabled():
        print(f"\nrecall@5 on {len(QUERIES)} paraphrased queries: {recall}")
    assert recall["semantic"] >= 0.9
    assert recall["semantic"] > recall["keyword"] + 0.3
    assert recall["hybrid"] > recall["keyword"] + 0.3


def test_kill_9_leaves_the_approximate_index_repaired_on_the_next_start(tmp_path, serve_process, channel_to, stored_at_rest):
    """Past ann_threshold semantic search runs on the HNSW index, saved only at stop: after a
    kill -9 it lags the database, and the next start repairs it (every acknowledged memory found)."""
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED=ONLY_LOCAL, CORTEX_PLUGINS__MEMORIES__ANN_THRESHOLD="20",
                     **stored_at_rest.env)
    kernel = serve_process(env=env)
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(kernel.target))
    texts = [f"note {i}: the {['garden', 'passport', 'dentist', 'budget'][i % 4]} entry number {i} in a long list" for i in range(40)]
    ids = {stub.Store(pb.StoreRequest(text=t), timeout=30).id: t for t in texts[:30]}
    assert "approximate" in stub.Stats(pb.StatsRequest(), timeout=30).index or _wait_for_approximate(stub)
    kernel.stop()  # the index is saved at stop...
    kernel = serve_process(env=env)
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(kernel.target))
    ids.update({stub.Store(pb.StoreRequest(text=t), timeout=30).id: t for t in texts[30:]})  # ...these are not
    kernel.proc.send_signal(signal.SIGKILL)
    kernel.proc.wait(10)
    restarted = serve_process(env=env)
    stub = memories_pb2_grpc.MemoryServiceStub(channel_to(restarted.target))
    assert "approximate (HNSW, usearch, half precision), 40 vectors" in stub.Stats(pb.StatsRequest(), timeout=30).index
    for memory_id, text in ids.items():
        found = stub.Search(pb.SearchRequest(query=text, mode=pb.SEARCH_MODE_SEMANTIC, top_k=1), timeout=30)
        assert found.results[0].memory.id == memory_id, text


def _wait_for_approximate(stub) -> bool:
    from ..conftest import wait_for

    wait_for(lambda: "approximate" in stub.Stats(pb.StatsRequest(), timeout=30).index, "the switch to the HNSW index")
    return True
