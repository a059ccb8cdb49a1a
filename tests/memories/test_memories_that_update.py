"""Memories that update: a restated fact supersedes (or, by config, updates) the older memory,
every change keeps a version, Revert restores one, and exact duplicates never replace anything."""

from __future__ import annotations

import json

import grpc
import pytest

from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc

from ..conftest import cortex_env, plugin_of, run_cli
from .conftest import with_backend

CONFIG = '[plugins]\ndisabled = ["ollama", "openai"]\n'
MONDAY = "Dentist appointment with Dr. Hartmann on Monday 9 March at 10:00 for the yearly check-up and cleaning."
MOVED = "The dentist appointment with Dr. Hartmann moved to Thursday 12 March at 15:00; the Monday slot was cancelled."
PRACTICE = "Dr. Amelia Hartmann is my dentist; her practice is on Lindenstrasse 12 and she prefers appointments booked by phone."


@pytest.fixture
def memories(start_kernel, channel_to, backend):
    def start(extra: str = ""):
        target, kt = start_kernel(with_backend(CONFIG + ("[plugins.memories]\n" + extra if extra else ""), backend))
        return memories_pb2_grpc.MemoryServiceStub(channel_to(target)), kt

    return start


def store(stub, text, **kw):
    return stub.Store(pb.StoreRequest(text=text, **{"tags": ["health"], **kw}), timeout=60)


def search(stub, query, **kw):
    return [r.memory for r in stub.Search(pb.SearchRequest(query=query, top_k=5, **kw), timeout=60).results]


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_a_restated_fact_supersedes_the_older_memory_and_ranks_above_it(memories):
    stub, _ = memories()
    monday = store(stub, MONDAY).id
    practice = store(stub, PRACTICE)
    assert practice.supersedes == "" and practice.rule == ""  # close in meaning, but nothing changed
    moved = store(stub, MOVED)
    assert moved.created and moved.supersedes == monday
    assert moved.rule.startswith("restatement: cosine ") and "says 'moved'" in moved.rule
    for mode in (pb.SEARCH_MODE_HYBRID, pb.SEARCH_MODE_SEMANTIC, pb.SEARCH_MODE_KEYWORD):
        found = search(stub, "When is my dentist appointment with Dr. Hartmann?", mode=mode)
        order = [m.id for m in found]
        assert order.index(moved.id) < order.index(monday), (mode, order)
        assert next(m for m in found if m.id == monday).superseded_by == moved.id
        assert next(m for m in found if m.id == moved.id).superseded_by == ""
    assert stub.Get(pb.GetRequest(id=monday), timeout=5).memory.superseded_by == moved.id
    old = stub.History(pb.HistoryRequest(id=monday), timeout=5)
    assert old.superseded_by.new_id == moved.id and old.superseded_by.rule == moved.rule
    new = stub.History(pb.HistoryRequest(id=moved.id), timeout=5)
    assert [(s.old_id, s.rule) for s in new.supersedes] == [(monday, moved.rule)] and not new.HasField("superseded_by")
    listed = {m.id: m.superseded_by for m in stub.List(pb.ListRequest(page_size=10), timeout=5).memories}
    assert listed == {monday: moved.id, practice.id: "", moved.id: ""}


def test_the_old_code_still_finds_the_old_note(memories):
    """A search for what only the outdated memory holds finds it first: the newer one does not answer."""
    stub, _ = memories()
    first = store(stub, "Summer trip: Porto from 10 to 17 August, flights with TAP, booking reference QX7PLM.").id
    rebooked = store(stub, "The Porto trip was rebooked to 24 to 31 August because of the TAP strike; new booking reference ZR4KTW.")
    assert rebooked.supersedes == first
    assert search(stub, "QX7PLM")[0].id == first
    assert search(stub, "When do we fly to Porto?")[0].id == rebooked.id


def test_supersedes_named_by_the_caller(memories):
    stub, _ = memories()
    old = store(stub, "The bins go out on Thursday evening").id
    named = store(stub, "Bins: Wednesday evening from next month", supersedes=old)
    assert named.supersedes == old and named.rule == "asked"
    code, details = code_of(lambda: store(stub, "Something else entirely", supersedes="m-missing"))
    assert code == grpc.StatusCode.NOT_FOUND and "m-missing" in details
    texts = {m.text for m in stub.List(pb.ListRequest(page_size=10), timeout=5).memories}
    assert texts == {"The bins go out on Thursday evening", "Bins: Wednesday evening from next month"}


def test_restatements_off_links_only_what_the_caller_names(memories):
    stub, _ = memories('restatements = "off"\n')
    store(stub, MONDAY)
    assert store(stub, MOVED).supersedes == ""


def test_exact_duplicates_are_idempotent_and_replace_nothing(memories):
    """mem0 #1674: adding the same memory twice deleted the old one. Here it is the same memory."""
    stub, _ = memories('restatements = "update"\n')
    first = store(stub, MOVED)
    again = store(stub, MOVED)
    assert (again.id, again.created, again.updated, again.supersedes) == (first.id, False, False, "")
    history = stub.History(pb.HistoryRequest(id=first.id), timeout=5)
    assert list(history.versions) == [] and list(history.supersedes) == [] and history.memory.text == MOVED
    assert [m.id for m in stub.List(pb.ListRequest(page_size=10), timeout=5).memories] == [first.id]


def test_update_keeps_every_version_and_revert_restores_one(memories):
    stub, _ = memories()
    memory_id = store(stub, "The spare key is with Mrs. Weber on the second floor").id
    for text in ("The spare key is with Mr. Okafor next door", "The spare key is in the key safe, code 4711"):
        stub.Update(pb.UpdateRequest(id=memory_id, text=text, update_mask={"paths": ["text"]}), timeout=60)
    stub.Update(pb.UpdateRequest(id=memory_id, tags=["home"], update_mask={"paths": ["tags"]}), timeout=60)
    history = stub.History(pb.HistoryRequest(id=memory_id), timeout=5)
    assert [(v.version, v.memory.text, list(v.memory.tags), v.cause) for v in history.versions] == [
        (1, "The spare key is with Mrs. Weber on the second floor", ["health"], "update"),
        (2, "The spare key is with Mr. Okafor next door", ["health"], "update"),
        (3, "The spare key is in the key safe, code 4711", ["health"], "update"),
    ]
    assert all(v.replaced_at.ToMilliseconds() > 0 for v in history.versions)
    reverted = stub.Revert(pb.RevertRequest(id=memory_id, version=1), timeout=60).memory
    assert (reverted.id, reverted.text, list(reverted.tags)) == (
        memory_id, "The spare key is with Mrs. Weber on the second floor", ["health"])
    # the revert kept what it replaced, so it can be undone; search finds the restored text
    history = stub.History(pb.HistoryRequest(id=memory_id), timeout=5)
    assert (history.versions[-1].version, history.versions[-1].cause, history.versions[-1].memory.text) == (
        4, "revert to 1", "The spare key is in the key safe, code 4711")
    assert search(stub, "Weber", mode=pb.SEARCH_MODE_KEYWORD)[0].id == memory_id
    assert search(stub, "4711", mode=pb.SEARCH_MODE_KEYWORD) == []
    # an update that changes nothing keeps no version
    stub.Update(pb.UpdateRequest(id=memory_id, tags=["health"], update_mask={"paths": ["tags"]}), timeout=60)
    assert len(stub.History(pb.HistoryRequest(id=memory_id), timeout=5).versions) == 4


def test_history_and_revert_refuse_what_does_not_exist(memories):
    stub, kt = memories()
    memory_id = store(stub, "Water the tomatoes every evening").id
    code, details = code_of(lambda: stub.Revert(pb.RevertRequest(id=memory_id, version=1), timeout=5))
    assert code == grpc.StatusCode.NOT_FOUND and "no earlier versions" in details
    stub.Update(pb.UpdateRequest(id=memory_id, text="Water the tomatoes every morning", update_mask={"paths": ["text"]}), timeout=60)
    code, details = code_of(lambda: stub.Revert(pb.RevertRequest(id=memory_id, version=7), timeout=5))
    assert code == grpc.StatusCode.NOT_FOUND and "versions 1 to 1" in details
    assert stub.Get(pb.GetRequest(id=memory_id), timeout=5).memory.text == "Water the tomatoes every morning"
    for call in (lambda: stub.History(pb.HistoryRequest(id="m-nope"), timeout=5),
                 lambda: stub.Revert(pb.RevertRequest(id="m-nope", version=1), timeout=5)):
        assert code_of(call)[0] == grpc.StatusCode.NOT_FOUND
    # deleting a memory deletes its history and its links
    newer = store(stub, "Water the tomatoes now twice a day in the heat", supersedes=memory_id).id
    assert stub.Delete(pb.DeleteRequest(id=memory_id), timeout=5).deleted
    assert code_of(lambda: stub.History(pb.HistoryRequest(id=memory_id), timeout=5))[0] == grpc.StatusCode.NOT_FOUND
    assert list(stub.History(pb.HistoryRequest(id=newer), timeout=5).supersedes) == []
    store_ = plugin_of(kt, "memories").store
    assert store_.versions(memory_id) == [] and store_.links([memory_id, newer]) == []


def test_restatements_update_folds_the_new_text_into_the_old_memory(memories):
    stub, _ = memories('restatements = "update"\n')
    monday = store(stub, MONDAY, metadata={"from": "calendar"})
    moved = store(stub, MOVED)
    assert (moved.id, moved.created, moved.updated, moved.supersedes) == (monday.id, False, True, "")
    assert moved.rule.startswith("restatement: ") and moved.memory.text == MOVED
    assert dict(moved.memory.metadata) == {"from": "calendar"}  # kept: the Store gave none
    assert [m.text for m in stub.List(pb.ListRequest(page_size=10), timeout=5).memories] == [MOVED]
    assert search(stub, "dentist Thursday")[0].id == monday.id
    history = stub.History(pb.HistoryRequest(id=monday.id), timeout=5)
    assert [(v.memory.text, v.cause) for v in history.versions] == [(MONDAY, moved.rule)]
    assert stub.Revert(pb.RevertRequest(id=monday.id, version=1), timeout=60).memory.text == MONDAY


def test_a_bad_restatements_setting_is_refused_with_what_to_write(start_kernel):
    _, kt = start_kernel(CONFIG + '[plugins.memories]\nrestatements = "merge"\n')
    record = kt.kernel.host.records["memories"]
    assert record.state == "broken" and '"link", "update" or "off"' in record.error
    _, kt = start_kernel(CONFIG + "[plugins.memories]\nrestatement_min_similarity = 1.5\n")
    assert "restatement_min_similarity" in kt.kernel.host.records["memories"].error


def test_cli_remember_history_and_revert(tmp_path, serve_process):
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED='["ollama", "openai"]',
                     CORTEX_PLUGINS__MEMORIES__RESTATEMENTS="update")
    env["CORTEX_TARGET"] = serve_process(env=env).target
    memory_id = json.loads(run_cli("remember", MONDAY, "--json", env=env).stdout)["id"]
    folded = run_cli("remember", MOVED, env=env).stdout
    assert folded.startswith(f"updated {memory_id} (restatement: cosine ")
    shown = run_cli("memories", "history", memory_id, env=env).stdout
    assert f"now: {memory_id}" in shown and "version 1, replaced " in shown and repr(MONDAY[:70]) in shown
    assert run_cli("memories", "revert", memory_id, "1", env=env).stdout.startswith(f"reverted {memory_id} to version 1")
    history = json.loads(run_cli("memories", "history", memory_id, "--json", env=env).stdout)
    assert history["memory"]["text"] == MONDAY
    assert [(v["version"], v["cause"]) for v in history["versions"]] == [(1, folded.split("(", 1)[1].split(")")[0]), (2, "revert to 1")]
    missing = run_cli("memories", "revert", memory_id, "9", env=env)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "versions 1 to 2" in missing.stderr
    # bulk: the dry run is shown; unanswered (no terminal), nothing is deleted; --yes deletes
    for i in range(3):
        run_cli("remember", f"Old shopping list {i}", "--kind", "task", env=env)
    asked = run_cli("memories", "delete-matching", "--kind", "task", env=env)
    assert asked.returncode == 1 and asked.stdout.count("Old shopping list") == 3 and "Delete 3 memories?" in asked.stderr
    assert len(json.loads(run_cli("memories", "list", "--json", env=env).stdout)["memories"]) == 4
    assert run_cli("memories", "delete-matching", "--kind", "task", "--yes", env=env).stdout.endswith("deleted 3 of 3\n")
    retag = run_cli("memories", "tag-matching", "--add", "dentist", "--meta", "nokey", "--yes", env=env)
    assert retag.returncode == 2 and "KEY=VALUE" in retag.stderr
    assert run_cli("memories", "tag-matching", "--add", "dentist", "--yes", env=env).stdout.endswith("retagged 1 of 1\n")
    assert json.loads(run_cli("memories", "get", memory_id, env=env).stdout)["tags"] == ["dentist"]


def test_bulk_delete_and_tag_take_a_dry_run_first(memories):
    stub, _ = memories()
    old = [store(stub, f"Shopping list {i}: oat milk, coffee", kind="task").id for i in range(3)]
    keep = store(stub, "Renew the passport before June").id  # kind note, tag health
    by_kind = pb.Filter(kinds=["task"])
    dry = stub.DeleteMatching(pb.DeleteMatchingRequest(filter=by_kind, dry_run=True), timeout=10).outcome
    assert (dry.matched, dry.changed, sorted(m.id for m in dry.sample)) == (3, 0, sorted(old)) and dry.confirm
    assert len(stub.List(pb.ListRequest(page_size=10), timeout=5).memories) == 4  # a dry run changes nothing
    code, details = code_of(lambda: stub.DeleteMatching(pb.DeleteMatchingRequest(filter=by_kind), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "dry-run first" in details
    # the token binds the request: another filter, or a forged token, changes nothing
    for request in (pb.DeleteMatchingRequest(filter=pb.Filter(tags_all=["health"]), confirm=dry.confirm),
                    pb.DeleteMatchingRequest(filter=by_kind, confirm=dry.confirm[:-2] + "AA")):
        assert code_of(lambda r=request: stub.DeleteMatching(r, timeout=10))[0] == grpc.StatusCode.FAILED_PRECONDITION
    # a memory that arrived after the dry run makes its token stale: nothing deleted unseen
    late = store(stub, "Shopping list 9: bread", kind="task").id
    code, details = code_of(lambda: stub.DeleteMatching(pb.DeleteMatchingRequest(filter=by_kind, confirm=dry.confirm), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "matches 4 now" in details
    dry = stub.DeleteMatching(pb.DeleteMatchingRequest(filter=by_kind, dry_run=True), timeout=10).outcome
    done = stub.DeleteMatching(pb.DeleteMatchingRequest(filter=by_kind, confirm=dry.confirm), timeout=10).outcome
    assert (done.matched, done.changed) == (4, 4)
    assert [m.id for m in stub.List(pb.ListRequest(page_size=10), timeout=5).memories] == [keep]
    assert all(code_of(lambda i=i: stub.Get(pb.GetRequest(id=i), timeout=5))[0] == grpc.StatusCode.NOT_FOUND for i in [*old, late])
    assert stub.Search(pb.SearchRequest(query="shopping oat milk", top_k=5), timeout=60).results[0].memory.id == keep

    tagged = [store(stub, f"Receipt {i} for the tax return", tags=["money", "2025"]).id for i in range(2)]
    request = pb.TagMatchingRequest(filter=pb.Filter(tags_all=["2025"]), add_tags=["tax"], remove_tags=["2025"])
    dry = stub.TagMatching(pb.TagMatchingRequest(**{**_fields(request), "dry_run": True}), timeout=10).outcome
    assert dry.matched == 2
    done = stub.TagMatching(pb.TagMatchingRequest(**{**_fields(request), "confirm": dry.confirm}), timeout=10).outcome
    assert (done.matched, done.changed, list(done.skipped)) == (2, 2, [])
    for memory_id in tagged:
        memory = stub.Get(pb.GetRequest(id=memory_id), timeout=5).memory
        assert list(memory.tags) == ["money", "tax"]
        history = stub.History(pb.HistoryRequest(id=memory_id), timeout=5)
        assert [(list(v.memory.tags), v.cause) for v in history.versions] == [(["money", "2025"], "tag")]
    code, details = code_of(lambda: stub.TagMatching(pb.TagMatchingRequest(dry_run=True), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "add_tags, remove_tags" in details


def _fields(message) -> dict:
    return {f.name: v for f, v in message.ListFields()}
