"""When a new memory restates an older one's fact: the deterministic rule Store applies.

A person writes "the dentist moved to Thursday" next to "dentist on Monday": two memories, and the
older one must stop winning searches. The rule links them (the newer supersedes the older; Search
ranks it above) when both hold:

- the new memory is about the same thing: its nearest memory of the same kind has a cosine of at
  least `restatement_min_similarity` (0.5 by default);
- it says that something changed: a word such as moved, switched, now, instead, new, raised.

Similarity alone is not enough: "Dr. Hartmann's practice is on Lindenstrasse" and "appointment with
Dr. Hartmann on Monday" are close (0.69 with MiniLM) and both stay true. The older memory is kept,
not overwritten: a newer note rarely restates everything (the climbing group's new day, without who
organises it), so both stay findable, in the right order. The rule that decided is recorded with
the link (History shows it); a Store that names `supersedes` decides for itself.
"""

from __future__ import annotations

import re

DEFAULT_MIN_SIMILARITY = 0.5
CUES = re.compile(
    r"\b(moved|moves|switched|switch(?:ed)? to|changed|rebooked|rescheduled|postponed|replaced|instead|now|no longer|"
    r"new|raised|lowered|increased|decreased|goes up|goes down|went up|went down|updated|retired|cancelled|canceled)\b",
    re.IGNORECASE,
)


def change_cue(text: str) -> str:
    """The first word of `text` that says something changed, or ''."""
    match = CUES.search(text)
    return match.group(0).lower() if match else ""


def restates(text: str, nearest: list[tuple[str, float]], min_similarity: float) -> tuple[str, str] | None:
    """(id of the memory `text` supersedes, the rule as said) or None; `nearest` is the semantic
    search for `text` among memories of its kind, best first."""
    if not nearest:
        return None
    memory_id, cosine = nearest[0]
    cue = change_cue(text)
    if cosine < min_similarity or not cue:
        return None
    return memory_id, f"restatement: cosine {cosine:.2f} >= {min_similarity:.2f}, says {cue!r}"
