"""What `cortex recall` shows a person: the score it ranked by, where each memory comes from, and the
part of it that matched (snippet.py), on a terminal with the query's words in bold; --json as ever."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.memories.v1 import memories_pb2_grpc, sources_pb2_grpc
from cortex.contracts.memories.v1 import sources_pb2 as src
from cortex.kernel.sdk import to_dict
from cortex.plugins.memories.cli import recall
from cortex.plugins.memories.snippet import ELLIPSIS, WIDTH, query_terms, snippet, units

CONFIG = '[plugins]\ndisabled = ["ollama", "openai"]\n[plugins.memories]\nwatch = false\n'
FILLER = "\n".join(f"Line {i} of the house manual says nothing about heating, only the garden shed." for i in range(12))
BOILER = "If the boiler pressure drops below 1 bar, top it up with the grey tap under the sink."
LONG = f"{FILLER}\n{BOILER}\n{FILLER}"
HEALTH = "# Health\n\n## Dentist\nDr. Hartmann on Lindenstrasse, appointment Monday 9 March at 10:00.\n"


# snippet(): pure, no kernel

def test_the_snippet_is_the_sentence_that_matches_from_the_middle_of_a_long_text():
    shown = snippet(LONG, "What is the boiler pressure?")
    assert BOILER in shown.text and shown.text.startswith(ELLIPSIS) and shown.text.endswith(ELLIPSIS)
    assert "\n" not in shown.text and len(shown.text) <= WIDTH + 2
    assert [shown.text[a:b] for a, b in shown.spans] == ["boiler", "pressure"]  # "what", "is", "the": stopwords


def test_words_match_whatever_their_case_and_plural():
    shown = snippet("Winter is coming.\nThe car needs new TYRES before the frost.", "tyre")
    assert shown.text == "Winter is coming. The car needs new TYRES before the frost."
    assert [shown.text[a:b] for a, b in shown.spans] == ["TYRES"]
    assert query_terms("the BOILERS of a house") == {"boiler", "house"}
    assert query_terms("what is it") == {"what", "is", "it"}  # only stopwords: they are all it has


def test_the_best_matching_sentence_wins_and_its_neighbours_fill_the_width():
    text = "The cat sleeps all day. " * 8 + "Feed the cat at seven with the blue tin. " + "The dog barks. " * 10
    shown = snippet(text, "feed cat tin")
    assert "Feed the cat at seven with the blue tin." in shown.text
    assert len(shown.text) <= WIDTH + 2 and shown.text.startswith(ELLIPSIS)


def test_a_sentence_longer_than_the_width_is_cut_around_its_match_on_word_boundaries():
    text = " ".join(["alpha"] * 80 + ["needle"] + ["omega"] * 80)
    shown = snippet(text, "needle")
    assert "needle" in shown.text and shown.text.startswith(ELLIPSIS + "alpha ") and shown.text.endswith(" omega" + ELLIPSIS)
    assert len(shown.text) <= WIDTH
    words = shown.text.strip(ELLIPSIS).split(" ")
    assert set(words) == {"alpha", "needle", "omega"}  # no word cut in half


def test_nothing_matches_gives_the_start_and_abbreviations_do_not_end_sentences():
    assert snippet("First line.\nSecond line.", "xylophone").text == "First line. Second line."
    assert snippet("A" * 300, "xylophone").text.endswith(ELLIPSIS)
    assert units("Dr. Hartmann is in. He is kind.") == ["Dr. Hartmann is in.", "He is kind."]
    assert snippet("", "x").text == ""


def test_control_characters_are_escaped_and_styling_marks_each_word():
    shown = snippet("Paint the \x1b[31m fence\tred", "fence")
    assert "\x1b" not in shown.text and "\\x1b[31m fence red" in shown.text
    assert shown.styled(lambda w: f"<{w}>") == "Paint the \\x1b[31m <fence> red"


# the command, against a kernel

@pytest.fixture
def kernel(start_kernel, channel_to, tmp_path, data_dir):
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "health.md").write_text(HEALTH)
    target, _ = start_kernel(CONFIG)
    channel = channel_to(target)
    sources_pb2_grpc.SourceServiceStub(channel).AddSource(
        src.AddSourceRequest(source=src.Source(name="notes", path=str(vault))), timeout=120)
    memories = memories_pb2_grpc.MemoryServiceStub(channel)
    long_id = memories.Store(mem.StoreRequest(text=LONG, kind="note", source="cli"), timeout=60).id
    env = {"CORTEX_CONFIG": str(tmp_path / "cortex-0.toml"), "CORTEX_DATA_DIR": str(data_dir), "CORTEX_TOKEN": None}

    def cortex_recall(*args: str, color: bool = False):
        result = CliRunner(env=env).invoke(recall, [*args, "--target", target], color=color)
        assert result.exit_code == 0, result.output
        return result.stdout

    return cortex_recall, memories, long_id


def test_recall_shows_the_ranking_score_the_source_and_the_matched_snippet(kernel):
    cortex_recall, _, long_id = kernel
    found = json.loads(cortex_recall("boiler pressure", "--mode", "keyword", "--json"))["results"][0]
    shown = cortex_recall("boiler pressure", "--mode", "keyword")
    header, text = shown.splitlines()[:2]
    assert header.startswith(f"1. keyword {found['score']:.2f} (sem -, kw {found['keyword_score']:.2f})")
    assert f"cli  {long_id}" in header
    assert "boiler pressure drops below 1 bar" in text and "\\n" not in shown and "\x1b" not in shown
    assert not text.strip().startswith("Line 0")  # from where it matched, not from the start
    assert len(text) <= WIDTH + 5

    by_meaning = cortex_recall("when do I see the dentist", "--mode", "hybrid", "-k", "1")
    first = json.loads(cortex_recall("when do I see the dentist", "--mode", "hybrid", "-k", "1", "--json"))["results"][0]
    header, text = by_meaning.splitlines()[:2]
    assert header.startswith(f"1. hybrid {first['score']:.2f} (sem {first['semantic_score']:.2f}, kw ")
    assert "Health > Dentist · notes:health.md#L3-L4" in header
    assert "Dr. Hartmann on Lindenstrasse, appointment Monday" in text and "Health > Dentist" not in text


def test_results_are_apart_and_query_words_bold_on_a_terminal(kernel):
    cortex_recall, _, _ = kernel
    both = cortex_recall("boiler dentist appointment", "--mode", "keyword")
    assert both.count("\n\n") == 1 and both.startswith("1. ") and "\n\n2. " in both
    styled = cortex_recall("boiler pressure", "--mode", "keyword", "-k", "1", color=True)
    assert "\x1b[1mboiler\x1b[0m \x1b[1mpressure\x1b[0m" in styled
    assert cortex_recall("xylophone quartz", "--mode", "keyword").strip() == "nothing found"


def test_recall_json_is_what_clients_read(kernel):
    cortex_recall, memories, long_id = kernel
    printed = json.loads(cortex_recall("boiler pressure", "--mode", "keyword", "-k", "1", "--json"))
    assert printed["mode"] == "keyword" and len(printed["results"]) == 1
    result = printed["results"][0]
    assert set(result) == {"memory", "score", "semantic_score", "keyword_score", "matched"}
    assert result["memory"] == to_dict(memories.Get(mem.GetRequest(id=long_id), timeout=10).memory)
    assert result["matched"] == ["keyword"] and result["score"] == pytest.approx(result["keyword_score"])
