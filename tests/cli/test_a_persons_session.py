"""What a person does at the terminal, against a running `cortex serve`: import notes, remember,
recall, look after the store, run a goal, look at traces, teach and replay. Each command's output
is what a person reads, so the assertions are on that text."""

from __future__ import annotations

import json
import re

import pytest

from ..conftest import cortex_env, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(tmp_path, serve_process):
    env = cortex_env(tmp_path / "data", CORTEX_PLUGINS__DISABLED='["ollama", "openai"]')
    env["CORTEX_TARGET"] = serve_process(env=env).target

    def cortex(*args: str, ok: bool = True) -> str:
        result = run_cli(*args, env=env)
        assert (result.returncode == 0) == ok, f"cortex {' '.join(args)}: {result.stdout}{result.stderr}"
        return result.stdout + result.stderr  # notes and errors go to stderr: a person sees both

    return cortex


def test_memories_from_the_terminal(cli, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "garden.md").write_text("---\ntags: [garden, plans]\n---\n# Beds\nRaised beds on the south fence.\n"
                                     "# Budget\nThree hundred euros for soil.\n")
    (notes / "car.txt").write_text("The car needs new tyres before winter.")
    (notes / "empty.md").write_text("   \n")
    imported = cli("memories", "import", str(notes), "--split", "headings")
    assert "imported 3 new memories" in imported, imported
    assert "remembered: m" in cli("remember", "The heron nests by the lake", "--tag", "birds")
    assert "already remembered" in cli("remember", "The heron nests by the lake", "--tag", "birds")

    recalled = cli("recall", "where do birds live", "--mode", "semantic", "-k", "1")
    assert recalled.startswith("1. semantic ") and "heron" in recalled and "  cli  m" in recalled
    by_words = cli("recall", "tyres", "--mode", "keyword")
    assert by_words.startswith("1. keyword ") and "car needs new tyres" in by_words and "car.txt" in by_words
    assert cli("recall", "xylophone quartz", "--mode", "keyword").strip() == "nothing found"

    listed = cli("memories", "list", "--tag", "garden", "--json")
    garden = json.loads(listed)["memories"]
    assert {m["source"].rsplit("#", 1)[-1] for m in garden} == {"Beds", "Budget"}
    assert all(m["tags"] == ["garden", "plans"] for m in garden)
    one = json.loads(cli("memories", "get", garden[0]["id"]))
    assert one["id"] == garden[0]["id"] and one["text"].split("\n")[0] in ("Beds", "Budget")  # plain text

    stats = cli("memories", "stats")
    assert stats.startswith("4 memories") and "all-MiniLM-L6-v2" in stats and "note" in stats
    assert "reindexed 0 memories" in cli("memories", "reindex")
    assert "reindexed 4 memories" in cli("memories", "reindex", "--all")

    assert f"deleted {one['id']}" in cli("memories", "delete", one["id"])
    assert f"no memory {one['id']}" in cli("memories", "delete", one["id"], ok=False)
    assert "NOT_FOUND" in cli("memories", "get", one["id"], ok=False)


def test_goals_traces_and_learning_from_the_terminal(cli, tmp_path):
    cli("remember", "The orchids need repotting in spring")
    planned = cli("plan", "when do the orchids need repotting?")
    assert "(template)" in planned and "ExtractAnswer" in planned and "no language model is configured" in planned
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(cli("plan", "when do the orchids need repotting?", "--json"))
    simulated = cli("simulate", str(plan_file))
    assert "recall: cortex.memories.v1.MemoryService/Search -> memories: allowed" in simulated
    (tmp_path / "notes.txt").write_text("not JSON")
    assert "not a plan file" in cli("simulate", str(tmp_path / "notes.txt"), ok=False)

    ran = cli("run", str(plan_file))
    assert "finished recall" in ran and "The orchids need repotting in spring [1]" in ran
    trace_id = re.search(r"succeeded: trace (\w+)", ran).group(1)
    listed = cli("traces", "list")
    assert listed.splitlines()[0].split()[:3] == ["WHEN", "STATUS", "STEPS"]
    row = next(line for line in listed.splitlines() if trace_id in line)
    assert "succeeded" in row and " 2/2 " in row and " run " in row and "when do the orchids need repotting?" in row
    shown = json.loads(cli("traces", "show", trace_id))
    assert shown["id"] == trace_id and shown["summary"]["answer_kind"] == "extractive"
    assert shown["steps"][0]["request"]["query"] and "request_json" not in shown["steps"][0]  # JSON, not a string of it

    assert cli("critique", trace_id).startswith("score ")
    assert "identical" in cli("replay", trace_id)
    assert f"replay of {trace_id[:12]}" in cli("traces", "list")  # a replay is told from a run
    taught = cli("teach", trace_id)
    assert taught.startswith("taught: memory m")
    # the taught example is how to plan, not something known: the next answer does not quote it
    again = cli("run", "when do the orchids need repotting?")
    assert "The orchids need repotting in spring [1]" in again and "[2]" not in again, again
    assert "NOT_FOUND" in cli("traces", "show", "no-such-trace", ok=False)


def test_models_from_the_terminal(cli):
    listed = cli("models", "list")
    assert re.search(r"mlx +cortex-tiny-llama +generation .*for tests only", listed)
    assert re.search(r"mlx +all-MiniLM-L6-v2 +embedding", listed)
    embedded = json.loads(cli("embed", "a heron", "a lake", "--json"))
    assert embedded["dimension"] == 384 and len(embedded["vectors"]) == 2 and embedded["provider"] == "mlx"
    assert "(384 dims, all-MiniLM-L6-v2 via mlx)" in cli("embed", "a heron")
    once = cli("generate", "hello", "--max-tokens", "8", "--seed", "3", "--temperature", "0.7")
    streamed = cli("generate", "hello", "--max-tokens", "8", "--seed", "3", "--temperature", "0.7", "--stream")
    assert once.splitlines()[0] == streamed.splitlines()[0]  # same seed, same text, however it is read
    assert "[mlx cortex-tiny-llama: 8 tokens, length]" in once
    assert "cortex-tiny-llama (mlx) is the built-in model for tests" in once  # its text is noise: said so
    chunks = [json.loads(line) for line in cli("generate", "hi", "--max-tokens", "4", "--stream", "--json").splitlines()]
    assert chunks[-1]["done"] and chunks[-1]["provider"] == "mlx"
    assert "INVALID_ARGUMENT" in cli("generate", "hi", "--temperature", "9", ok=False)


def test_policies_and_evidence_from_the_terminal(cli, tmp_path):
    listed = cli("policy", "list")
    assert listed.startswith("default: allow") and "builtin/policy-admin" in listed
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nid = "x"\neffect = "maybe"\n')
    assert f"{bad}:3: rule x: 'effect' must be" in cli("policy", "add", str(bad), ok=False)
    good = tmp_path / "quiet.toml"
    good.write_text('[[rule]]\nid = "no-remote-generation"\neffect = "deny"\nservices = ["cortex.models.v1.ModelService"]\n'
                    'methods = ["Generate"]\nprovider = "remote"\ndescription = "generation stays here"\n')
    assert cli("policy", "add", str(good)).startswith("added no-remote-generation (kept in ")
    explained = cli("policy", "explain", "cortex.models.v1.ModelService/Generate", "--remote", "--field", "local_only=false")
    assert explained.startswith("DENY") and "no-remote-generation: generation stays here" in explained
    as_json = json.loads(cli("policy", "explain", "cortex.memories.v1.MemoryService/Search", "--json"))
    assert as_json["effect"] == "EFFECT_ALLOW"
    assert "expected SERVICE/METHOD" in cli("policy", "explain", "nonsense", ok=False)
    assert "expected NAME=VALUE" in cli("policy", "explain", "a.v1.S/M", "--field", "novalue", ok=False)
    assert "removed no-remote-generation (from " in cli("policy", "remove", "no-remote-generation")

    cli("remember", "evidence for everything")
    tail = cli("audit", "tail", "-n", "50")
    assert "cortex.memories.v1.MemoryService/Store by " in tail and "add rule no-remote-generation" in tail
    entries = json.loads(cli("audit", "tail", "-n", "5", "--json"))
    proof = next(e for e in reversed(entries) if "proof" in e)
    shown = json.loads(cli("proofs", "show", proof["call_id"]))
    assert shown["proof"]["call_id"] == proof["call_id"] and shown["proof_id"].startswith("p-")
    assert "no proof 'nothing-here'" in cli("proofs", "show", "nothing-here", ok=False)
    exported = cli("proofs", "export", str(tmp_path / "chain.jsonl"))
    assert exported.startswith("exported ") and (tmp_path / "chain.jsonl.pub.pem").exists()


def test_the_kernel_from_the_terminal(cli):
    info = cli("info")
    assert info.startswith("cortex 0.1.0 at 127.0.0.1:") and "privacy mode: off" in info and "(embedded defaults)" in info
    assert "governance:   on (governance)" in info
    health = cli("health")
    assert re.search(r"\(overall\) +SERVING", health) and re.search(r"cortex.memories.v1.MemoryService +SERVING", health)
    unknown = cli("health", "--service", "no.such.v1.Service", ok=False)
    assert re.search(r"no.such.v1.Service +SERVICE_UNKNOWN", unknown)
    contracts = cli("contracts", "list")
    assert "cortex.models.v1.ModelService (v1)" in contracts and "provider:  mlx (in-process, local)" in contracts
    assert "Subscribe [stream]" in contracts
