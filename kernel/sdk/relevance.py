"""How well a passage answers a query, from an embedding model: what a RerankService provider
without a cross-encoder serves (mlx serves it with MiniLM; any provider with Embed can).

A bi-encoder's cosine alone says "about the same thing", not "answers it": "What is my blood type?"
and "Blood pressure averaged 128 over 82" are close in meaning. So the score adds the share of the
query's key terms that the passage holds (the question's words less the function words, light
stemming: "risks" finds "Risks"), and maps the sum through a logistic around a threshold calibrated
on eval/answers' dev split (scripts/eval_answers.py --calibrate): 0.5 is the boundary the contract
names, "answers" above it, "does not" below. Words count where meaning is unsure; neither alone
decides.

One check is older than embeddings (factoid question answering's answer types): a question that
asks "when" is not answered by a passage without a date, day, time or duration, nor "what time"
without a clock time, nor "how much" or "what is the PIN" without a number (digits or words), nor
"what is Anna's email" without an address. Such a passage scores far below the boundary, however
close its meaning. The patterns are English, as the stop words are.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

WORD = re.compile(r"\w+(?:['\u2019]\w+)*", re.UNICODE)  # "anna's", "don't": one word each
STOPWORDS = frozenset(
    "a an and are as at be been but by can could do does did for from had has have how i if in into is it its me "
    "my mine of on or our ours so that the their them then there these they this those to was we were what when "
    "where which who whom whose why will with would you your yours about know noted note notes tell say said any "
    "much many long get got go goes going should shall i'm i've i'd i'll it's what's whats that's there's where's "
    "who's how's when's let's don't doesn't didn't isn't aren't wasn't weren't can't won't couldn't shouldn't".split()
)
# Calibrated on eval/answers' dev split (scripts/eval_answers.py --calibrate): the raw score
# (cosine + TERMS_WEIGHT * coverage) at which a passage starts to answer, and how sharply the
# logistic turns around it.
TERMS_WEIGHT = 0.3
THRESHOLD = 0.55
SLOPE = 12.0
WRONG_TYPE = 1.0  # taken off the raw score of a passage without the kind of answer asked for

MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|december|"
          "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")
WEEKDAYS = "(monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?|tues|thurs|weds"
DAYS = (f"{WEEKDAYS}|weekends?|weekdays?|today|tomorrow|tonight|yesterday|morning|afternoon|evening|night|noon|"
        "midnight|overnight|daily|weekly|monthly|yearly|annually|every|each|fortnight|bedtime|breakfast|lunch|dinner")
# "one" and "no" are left out: "the blue one" is not a number
NUMBER_WORDS = ("two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
                "seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|"
                "million|dozen|half|couple|twice|none")
DURATIONS = "seconds?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?|decades?"
CLOCK = re.compile(r"\b\d{1,2}[:.h]\d{2}\b|\b\d{1,2}\s?[ap]\.?m\b|\b\d{1,2}ish\b|\b(at|by|until|around|from|before|after)"
                   r"\s+\d{1,2}\b|o['\u2019]clock|\bhalf past\b|\bquarter (past|to)\b|\bnoon\b|\bmidnight\b", re.IGNORECASE)
DATE = re.compile(rf"\d|\b({MONTHS}|{DAYS}|{DURATIONS}|{NUMBER_WORDS}|spring|summer|autumn|fall|winter|christmas|"
                  r"easter)\b", re.IGNORECASE)
NUMBER = re.compile(rf"\d|\b({NUMBER_WORDS})\b", re.IGNORECASE)
EMAIL = re.compile(r"@")
ASKS_CLOCK = re.compile(r"\bwhat time\b(?!\s+(zone|of))", re.IGNORECASE)
ASKS_DATE = re.compile(r"^\W*(when|until when|by when|since when)\b|\bwhen\W*$|\b(what|which) (date|day|days|month|year)\b|"
                       r"\bhow often\b|\bhow long\b", re.IGNORECASE)
# not "code": a dress code or a promo code is no number
ASKS_NUMBER = re.compile(r"^\W*how (much|many)\b|\b(number|pin|price|cost|costs|salary|iban|extension|temperature|"
                         r"pressure|percent|rate|amount|fee|balance)\b", re.IGNORECASE)
# the address asked for ("Anna's email?", "my email address"), not what an email said
ASKS_EMAIL = re.compile(r"\be-?mail\s+address\b|^\W*(what|what's|whats)(\s+is)?\s+(\S+\s+){0,3}?e-?mail\W*$",
                        re.IGNORECASE)


def stem(word: str) -> str:
    """A crude, consistent stem: query and passage go through the same cut, so "risks" meets "risk"
    and "booked" meets "booking"; precision does not matter, consistency does."""
    if word.endswith("'s") and len(word) > 3:  # a possessive first: "mees's" and "Mees" meet
        word = word[:-2]
    for suffix in ("ies", "ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def words(text: str) -> list[str]:
    """The words of `text`, case folded, accents off ("Zoë" is "zoe", "Straße" "strasse"): as people
    type names either way; a possessive or a contraction stays one word ("anna's", "don't")."""
    plain = unicodedata.normalize("NFKD", text.casefold())
    return WORD.findall("".join(c for c in plain if not unicodedata.combining(c)).replace("\u2019", "'"))


def key_terms(text: str) -> set[str]:
    return {stem(w) for w in words(text) if w not in STOPWORDS}


def coverage(query_terms: set[str], passage: str) -> float:
    """The share of the query's key terms that `passage` holds (0 when the query has none)."""
    if not query_terms:
        return 0.0
    return len(query_terms & key_terms(passage)) / len(query_terms)


def answer_type(query: str) -> re.Pattern[str] | None:
    """What a passage must hold to answer `query`, when the question says (None: it does not)."""
    for asks, holds in ((ASKS_CLOCK, CLOCK), (ASKS_DATE, DATE), (ASKS_NUMBER, NUMBER), (ASKS_EMAIL, EMAIL)):
        if asks.search(query):
            return holds
    return None


def typed(query: str, passages: Sequence[str]) -> list[bool]:
    """Per passage: whether it holds the kind of answer `query` asks for (True when it asks none)."""
    holds = answer_type(query)
    return [holds is None or bool(holds.search(p)) for p in passages]


def raw_scores(cosines: np.ndarray, query: str, passages: Sequence[str]) -> np.ndarray:
    """Cosine plus the weighted key-term coverage, less WRONG_TYPE for a passage without the kind of
    answer asked for, per passage: what the threshold is set on."""
    terms = key_terms(query)
    return combined(cosines, [coverage(terms, p) for p in passages], [not ok for ok in typed(query, passages)])


def combined(cosines: np.ndarray, covered: Sequence[float], wrong: Sequence[bool], weight: float = TERMS_WEIGHT) -> np.ndarray:
    """The raw score from its parts: one formula for the scorer and for its calibration, which
    tries other weights on parts it recorded (scripts/eval_answers.py --calibrate)."""
    return (cosines.astype(np.float64) + weight * np.asarray(covered, dtype=np.float64)
            - WRONG_TYPE * np.asarray(wrong, dtype=np.float64))


def calibrated(raw: np.ndarray, threshold: float = THRESHOLD, slope: float = SLOPE) -> np.ndarray:
    """Raw scores as the contract's 0..1, 0.5 at the threshold."""
    return 1.0 / (1.0 + np.exp(-slope * (raw - threshold)))


def relevance(query_vector: np.ndarray, passage_vectors: np.ndarray, query: str, passages: Sequence[str]) -> list[float]:
    """RerankResponse.scores for `passages`, given L2-normalised embeddings of the query and of each."""
    cosines = passage_vectors @ query_vector if len(passages) else np.zeros(0)
    return [round(float(s), 6) for s in calibrated(raw_scores(cosines, query, passages))]

