"""The extractive answer's choice and the written answer's reading, as pure functions; and
RerankService through the kernel (the mlx provider, its embedding model)."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.cerebrum.v1 import cerebrum_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.models.v1 import models_pb2, models_pb2_grpc
from cortex.plugins.cerebrum import answer_prompt, extract, names


def memory(memory_id: str, text: str, seconds: int, superseded_by: str = "") -> mem.Memory:
    m = mem.Memory(id=memory_id, text=text, superseded_by=superseded_by)
    m.created_at.seconds = seconds
    return m


def test_nothing_at_the_boundary_is_no_answer_and_one_sentence_is_quoted_not_three():
    memories = [memory("a", "Lasagna bakes at 190 °C for 40 minutes. Serve with salad. Freeze the rest.", 1)]
    sentences = extract.sentences_of([m.text for m in memories])
    assert extract.choose("?", sentences, [0.49, 0.2, 0.1], memories, 3) == []
    chosen = extract.choose("?", sentences, [0.9, 0.6, 0.55], memories, 3)
    assert [c.sentence.text for c in chosen] == ["Lasagna bakes at 190 °C for 40 minutes."]
    close = extract.choose("?", sentences, [0.9, 0.88, 0.1], memories, 3)  # nearly as good: quoted too, best first
    assert [c.sentence.position for c in close] == [0, 1]


def test_the_current_statement_replaces_the_stale_one_and_a_fact_it_does_not_restate_stays():
    old = memory("old", "Rent is 1,340 euros a month. The deposit was 2,680 euros.", 1, superseded_by="new")
    new = memory("new", "From April the rent goes up to 1,395 euros a month.", 2)
    memories = [old, new]  # the search put the stale one first
    sentences = extract.sentences_of([m.text for m in memories])
    chosen = extract.choose("?", sentences, [0.95, 0.2, 0.6], memories, 3)
    assert [c.sentence.text for c in chosen] == ["From April the rent goes up to 1,395 euros a month."]
    assert chosen[0].score == 0.95 and chosen[0].place == 0  # it took the stale statement's score and place
    assert chosen[0].earlier.text == "Rent is 1,340 euros a month."  # kept as history
    deposit = extract.choose("?", sentences, [0.2, 0.9, 0.3], memories, 3)
    assert [c.sentence.text for c in deposit] == ["The deposit was 2,680 euros."]


def test_of_two_unlinked_statements_of_the_same_fact_the_newer_is_quoted():
    memories = [memory("a", "Book club meets at Yara's place on Wednesday.", 1),
                memory("b", "Book club now meets at Yara's place on Thursday.", 5)]
    sentences = extract.sentences_of([m.text for m in memories])
    chosen = extract.choose("?", sentences, [0.9, 0.85], memories, 3)
    assert [c.sentence.text for c in chosen] == ["Book club now meets at Yara's place on Thursday."]


def test_a_written_reply_is_read_back_with_its_citations_renumbered():
    numbered = [pb.Citation(memory_id=x, text=x) for x in ("m1", "m2", "m3")]
    written = answer_prompt.read_answer("It is 300 euros [3], bought at the market [1]. [7]", numbered, "q?")
    assert written.kind == "generated" and written.text == "It is 300 euros [1], bought at the market [2]."
    assert [c.memory_id for c in written.citations] == ["m3", "m1"]
    for reply in ("I don't know.", "  i do not know", ""):
        declined = answer_prompt.read_answer(reply, numbered, "What is my blood type?")
        assert declined.kind == "none" and declined.related and not declined.citations
        assert declined.text == "Nothing in your memories answers “What is my blood type?”."
    assert answer_prompt.read_answer("Noted, it is 3 [1].", numbered, "q").kind == "generated"  # "Noted" is not "no"


def test_the_prompt_numbers_dates_and_marks_replaced_notes():
    old = memory("old", "Dentist on Monday.", 86400 * 365, superseded_by="new")
    new = memory("new", "Dentist moved to Thursday.", 86400 * 366)
    new.metadata["heading"] = "Health > Dentist"
    prompt = answer_prompt.compose("When is the dentist?", [new, old])
    assert "[1] (1971-01-02; Health > Dentist) Dentist moved to Thursday." in prompt.user
    assert "[2] (1971-01-01; replaced by [1]) Dentist on Monday." in prompt.user
    assert prompt.user.endswith("Question: When is the dentist?\nAnswer:") and "[n]" not in prompt.user
    assert [c.memory_id for c in prompt.citations] == ["new", "old"]


@pytest.fixture
def reranker(start_kernel, channel_to):
    target, _ = start_kernel('[plugins]\ndisabled = ["ollama", "openai"]\n')
    return models_pb2_grpc.RerankServiceStub(channel_to(target))


def test_rerank_scores_each_document_in_order_and_refuses_what_it_cannot_score(reranker):
    reply = reranker.Rerank(models_pb2.RerankRequest(query="What are the risks on Project Atlas?", documents=[
        "Banana bread > Method: Bake for 55 minutes at 175 °C.",
        "Project Atlas > Risks: The vendor API may slip by two weeks.",
    ]), timeout=60)
    assert reply.provider == "mlx" and reply.model and len(reply.scores) == 2
    assert reply.scores[1] >= 0.5 > reply.scores[0] and all(0 <= s <= 1 for s in reply.scores)
    for bad in (models_pb2.RerankRequest(query="", documents=["x"]), models_pb2.RerankRequest(query="x"),
                models_pb2.RerankRequest(query="x", documents=["y"], model="no-such-model")):
        with pytest.raises(grpc.RpcError) as caught:
            reranker.Rerank(bad, timeout=30)
        assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), caught.value.details()


def test_an_answer_further_down_is_not_hidden_by_a_weak_sentence_at_the_top():
    memories = [memory("a", "The dentist is on Main Street.", 1), memory("b", "My blood type is O negative.", 2)]
    sentences = extract.sentences_of([m.text for m in memories])
    assert [c.sentence.text for c in extract.choose("?", sentences, [0.45, 0.9], memories, 3)] == ["My blood type is O negative."]


def test_a_chain_of_replacements_ends_at_the_newest_and_a_cycle_drops_nothing():
    rent = [memory("a", "Rent is 1000 euros a month.", 1, superseded_by="b"),
            memory("x", "The rent of the garage is 80 euros.", 2),
            memory("b", "Rent is now 1100 euros a month.", 3, superseded_by="c"),
            memory("c", "Rent is now 1200 euros a month.", 4)]
    sentences = extract.sentences_of([m.text for m in rent])
    chosen = extract.choose("?", sentences, [0.95, 0.7, 0.9, 0.9], rent, 3)
    assert chosen[0].sentence.text == "Rent is now 1200 euros a month." and chosen[0].place == 0
    loop = [memory("a", "Rent is 1000 euros a month.", 1, superseded_by="b"),
            memory("b", "Rent is now 1100 euros a month.", 2, superseded_by="a")]  # a bad link back in time
    sentences = extract.sentences_of([m.text for m in loop])
    assert [c.sentence.text for c in extract.choose("?", sentences, [0.9, 0.9], loop, 1)] == ["Rent is now 1100 euros a month."]


def test_a_short_newer_mention_does_not_replace_an_older_answer():
    memories = [memory("a", "My blood type is O negative.", 1), memory("b", "Blood type checked.", 2)]
    sentences = extract.sentences_of([m.text for m in memories])
    assert extract.choose("?", sentences, [0.9, 0.6], memories, 1)[0].sentence.text == "My blood type is O negative."


def test_replies_that_answer_are_not_read_as_i_do_not_know_and_codes_in_brackets_stay():
    numbered = [pb.Citation(memory_id=f"m{i}") for i in range(1, 13)]
    assert answer_prompt.read_answer("None [1].", numbered, "q").kind == "generated"
    late = answer_prompt.read_answer("I don't know the exact day, but it was in May [2].", numbered, "q")
    assert late.kind == "generated" and late.text.endswith("May [1].")
    code = answer_prompt.read_answer("Your locker code is [042] [12].", numbered, "q")
    assert code.text == "Your locker code is [042] [1]." and [c.memory_id for c in code.citations] == ["m12"]
    several = answer_prompt.read_answer("A [3]. B [5, 7].", numbered, "q")
    assert several.text == "A [1]. B [2, 3]." and [c.memory_id for c in several.citations] == ["m3", "m5", "m7"]


def test_the_prompt_carries_the_memories_labels():
    secret = memory("s", "Locker code 4711.", 1)
    secret.tags.extend(["private", "gym"])
    assert answer_prompt.compose("What is the locker code?", [secret, memory("o", "Other.", 2)]).labels == ["gym", "private"]


@pytest.mark.parametrize(("goal", "question"), [
    ("What is my blood type?", True), ("Is the car insured?", True), ("What did I write about Atlas?", True),
    ("How do I change the filter?", True), ("the garden budget?", True),
    ("Can you remember that my locker code is 4711?", False), ("Store this: should I buy a car?", False),
    ("summarise what I noted about the garden project", False), ("How-to notes: write one for git rebase", False),
    ("Do a weekly review of my notes and store a summary", False),
])
def test_a_question_is_answered_by_the_template_and_a_request_to_act_is_planned(goal, question):
    from cortex.plugins.cerebrum.service import ACTION, QUESTION

    assert bool(QUESTION.search(goal) and not ACTION.search(goal)) is question


@pytest.mark.parametrize(("question", "passage", "holds"), [
    ("How many bananas do I need?", "Buy three ripe bananas.", True),
    ("How many bananas do I need?", "Bananas should be ripe.", False),
    ("How long does the bread rest?", "Let it rest overnight.", True),
    ("When does the bin go out?", "The bin goes out on Thursdays.", True),
    ("When does the bin go out?", "The green bin is for garden waste.", False),
    ("What time is dinner?", "Dinner at half past six.", True),
    ("What time is dinner?", "Dinner is at Yara's place.", False),
    ("What time zone is Lisbon in?", "Lisbon is on Western European Time.", True),
    ("What is the dress code?", "Smart casual.", True),
    ("What did Tom say in his email?", "He is coming on Friday.", True),
    ("What is Anna's email?", "Anna works at the library.", False),
    ("Anna's birthday is when?", "Anna likes cake.", False),
])
def test_a_passage_without_the_kind_of_answer_asked_for_does_not_answer(question, passage, holds):
    from cortex.kernel.sdk import relevance

    assert relevance.typed(question, [passage]) == [holds]


@pytest.mark.parametrize(("question", "text", "named"), [
    ("When is Mees's birthday?", "Mum's birthday is 17 August.", False),
    ("When is Mum's birthday?", "Mum's birthday is 17 August.", True),
    ("WHEN IS ANNA'S BIRTHDAY?", "Anna was born on 12 March.", True),  # capitals say nothing
    ("When Is Anna's Birthday?", "Anna was born on 12 March.", True),
    ("What's the Wi-Fi password?", "The wifi password is on the router.", True),
    ("What's the wifi password for Zoë's flat?", "Zoe's wifi: hunter2.", True),
    ("What's the plan for Monday?", "Gym, then groceries.", True),
    ("When is Will's birthday?", "Mees's birthday is 3 May.", False),
    ("Who is O'Brien's lawyer?", "O'Brien's lawyer is Ms Kaur.", True),
    ("When I'm in Paris, where do I stay?", "Hotel Lutetia, Paris.", True),
    ("Where does Mees's band play?", "Mees plays with the band on Fridays.", True),
    ("Which café is on the Große Straße?", "The café on the Grosse Strasse opens at 8.", True),
])
def test_a_memory_answers_only_about_what_the_question_names(question, text, named):
    assert names.mentions(mem.Memory(text=text), names.names(question)) is named


def test_without_a_reranker_or_embeddings_the_answer_step_scores_by_key_terms_and_answer_type():
    import asyncio
    from types import SimpleNamespace

    from cortex.plugins.cerebrum.service import CerebrumServicer

    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "no provider"

    async def call(*_args, **_kwargs):
        raise Unavailable()

    servicer = CerebrumServicer(SimpleNamespace(channel=SimpleNamespace(method=lambda path: None, call=call)))
    scores = asyncio.run(servicer.relevance("When is the garden party?", [
        "The garden party is on Saturday 4 June.", "The garden party is at Anna's place.", "Buy new tyres."], []))
    assert scores == [1.0, 0.0, 0.0]  # every key term, a date; no date; nothing


def test_a_capitalised_thing_after_a_name_is_not_the_name_and_another_persons_restatement_does_not_hide_it():
    assert not names.mentions(mem.Memory(text="Mum's birthday is 17 August."), names.names("When is Mees's Birthday?"))
    memories = [memory("mees", "Mees's birthday dinner is on Saturday 3 May at the Italian place.", 1),
                memory("mum", "Mum's birthday dinner is on Saturday 3 May at the Italian place.", 2)]
    sentences = extract.sentences_of([m.text for m in memories])
    chosen = extract.choose("When is Mees's birthday dinner?", sentences, [0.9, 0.9], memories, 3)
    assert [c.sentence.memory_index for c in chosen] == [0]


def test_a_created_time_no_calendar_holds_is_shown_without_a_date():
    for seconds in (253402300800, 2**40, -62135596801):
        prompt = answer_prompt.compose("q?", [memory("m", "Text.", seconds)])
        assert prompt.user.startswith("Notes:\n[1] () Text.")
