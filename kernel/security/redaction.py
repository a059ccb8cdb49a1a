"""Personal data taken out of a request before it leaves for a remote model provider, and put back
into the answer (issue 33).

`Redactor.redact(request)` finds personal data in every string field of a protobuf request (nested
messages, repeated fields and map values too) and returns a copy with each value replaced by a
placeholder, `<EMAIL_1>`, `<PHONE_2>`: the same value gets the same placeholder throughout the
request, numbered per kind, so the model can still refer to "the second phone number". The answer's
placeholders are put back locally (`Redacted.restore`, or `Redacted.stream()` for a streamed
answer), so a false positive costs the remote model some context, never the answer; detectors still
prefer precision, and each says below what it refuses and why.

What is detected (`kinds`):

- ``email``: practical RFC 5322 addresses (dot-atoms, a domain with a letter TLD); not
  ``icon@2x.png``-style asset names (an image extension as "TLD").
- ``phone``: ``phonenumbers.PhoneNumberMatcher`` (leniency VALID) for each region, run only on
  runs of 7+ digits a cheap regex found (the matcher alone took 120-210 ms per region on 20 KB); a
  match written with ``+``/``00``, ``(`` or a trunk ``0`` is taken, any other (``30 123456 10``,
  which VALID calls a US number) must also pass STRICT_GROUPING and have separators: a bare
  10-digit run is an id far more often than a phone. A run longer than 48 characters is looked at
  in bounded windows, and each text's phone work is capped (past the cap, a regex that errs towards
  redacting takes over), so the cost is linear in the text whatever it holds.
- ``card``: 13-19 digits, optionally in groups of 3+ set off by single spaces, dashes or dots, with a known IIN prefix
  (Visa, Mastercard, Amex, Discover, JCB, Diners, Maestro, UnionPay) and a valid Luhn digit.
- ``iban``: country code, check digits and BBAN, optionally in groups set off by spaces or dashes,
  the country's registered length and the ISO 13616 mod-97 check; upper or lower case, not mixed.
- ``postcode``: only formats with structure: UK (``SW1A 1AA``), Canada (``K1A 0B1``), US ZIP+4
  (``12345-6789``), and NL (``1012 LG``) when a town follows or the word postcode is near, since
  ``4090 TI`` or ``1500 MB`` have the same shape. Never bare 5-digit numbers (US ZIP, German,
  French...): most 5-digit numbers in notes are amounts, counts or ids.
- ``national_id``: US SSN (``AAA-GG-SSSS`` with its validity rules; dotted or 9 bare digits only
  next to "SSN"/"social security"), UK NINO, NL BSN (11-proof, and only with "BSN"/"burgerservicenummer"
  nearby, as Presidio does: 1 in 11 random 9-digit numbers passes the 11-proof).

Detectors see each text normalised (Unicode spaces as a space, zero-width characters dropped,
fullwidth forms as ASCII); what they find is mapped back, and the original characters replaced.

Regions (ISO codes) choose the phone numbering plans and which of the postcode and national-id
formats run (US, CA, GB, NL). Extra detectors come from config as `patterns`: kind -> regex.

Placeholders are ``<KIND_N>``: upper-case words in angle brackets are copied verbatim by LLMs and
almost never occur in prose. Numbers skip any placeholder-shaped text already in the request (each
kind takes the smallest free number), so a placeholder never names text the request had. Restoring is exact-but-robust: it
accepts what a model does to a token without changing its meaning (case, spaces inside the
brackets, ``-``/space for ``_``: ``< email 1 >``), never a placeholder without its brackets (that
could be the model's own words), and only numbers this request issued.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import phonenumbers
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)  # the request's type
Mr = TypeVar("Mr", bound=Message)  # a response's type

BUILTIN_KINDS = ("email", "phone", "card", "iban", "postcode", "national_id")
DEFAULT_REGIONS = ("US", "CA", "GB", "IE", "NL", "BE", "DE", "FR", "ES", "IT")
# on equal length, the more specific detector wins an overlap (a user's pattern most of all)
_PRIORITY = {"iban": 1, "card": 2, "email": 3, "national_id": 4, "postcode": 5, "phone": 6}
_CUSTOM_PRIORITY = 0


class Span(NamedTuple):
    start: int
    end: int
    kind: str


# ---- placeholders ---------------------------------------------------------------------------

# A placeholder as a model may give it back: case, spaces and `_`/`-`/space between words and
# number are free; the brackets are not. Kind names are letters and underscores only, so the label
# (letters) and the number never run into each other.
_LOOSE = re.compile(r"<[ \t]*([A-Za-z]+(?:[ _-][A-Za-z]+)*)[ _-]*(\d{1,12})[ \t]*>")
# the tail of a streamed string that may still grow into a placeholder ("<", "<EMA", "<EMAIL_1")
_PARTIAL = re.compile(r"<[ \t]*[A-Za-z _-]*\d*[ \t]*")
_MAX_PARTIAL = 64
_ISSUED = re.compile(r"<[A-Z]+(?:_[A-Z]+)*_\d+>")  # a placeholder exactly as issued
_MAX_ROUNDS = 3  # of finding what replacing uncovered (one more is rare, two almost never)
_KIND_NAME = re.compile(r"[A-Za-z]+(?:_[A-Za-z]+)*")
_NOT_LETTER = re.compile(r"[^A-Za-z]")


def _label_key(label: str) -> str:
    """The letters of a placeholder's label, upper case: the same for every spelling a model uses."""
    return _NOT_LETTER.sub("", label).upper()


# ---- detectors ------------------------------------------------------------------------------

_DIGIT = re.compile(r"\d")
_NOT_DIGIT = re.compile(r"\D")

# an address is found from its "@" (rare in text) rather than by a regex tried at every word
_EMAIL_LOCAL = re.compile(r"(?<![\w.%+-])[\w%+-]+(?:\.[\w%+-]+)*\Z")
_EMAIL_DOMAIN = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+([^\W\d_]{2,63})(?![\w-])")
_MAX_LOCAL = 64
# image and document extensions that are no TLD: `icon@2x.png` is a file name, not an address
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "heic", "tif", "tiff", "pdf", "avif"})

# a run of digits and phone separators holding a candidate phone number: the matcher runs on these
_PHONE_RUN = re.compile(r"[+(]?\d[\d ().\-/]{5,}\d")
# a run longer than this (a table of numbers, or text built to be slow: the matcher's cost grows
# with what it is given) is looked at in windows of this many characters, each starting half a
# window after the last, so every number of up to half a window (24 characters: a phone number
# with all its separators is at most ~20) lies whole in one of them
_MAX_RUN = 48
# the phone work one text may cost, in rough microseconds: a cached verdict, the plans' pre-check
# of a window, one matcher call for one region. Past it (~0.3 s of work; an ordinary 20 KB prompt
# costs a few per cent of it) the rest of the text is judged by _PHONE_EVIDENT alone, which errs
# towards redacting: a false positive costs the model context, a miss would leak the number
_PHONE_BUDGET = 300_000
_COST_CACHED, _COST_PRECHECK, _COST_MATCHER = 20, 100, 300
_GLUED_BEFORE = re.compile(r"\d[/.-]?\Z")
_GLUED_AFTER = re.compile(r"[/.-]?\d")
_CACHE_SIZE = 4096  # windows are at most _MAX_RUN + 2 * _PHONE_CONTEXT characters: ~1 MB at most
# the fallback: a number marked as one by an international prefix, brackets or a trunk 0, or
# grouped as in North America (3-3-4)
_PHONE_EVIDENT = re.compile(
    r"[+(\d](?<![\w.,+/-].)(?:(?<=[+(0])\d(?:[ ().\-/]{0,2}\d){5,16}|(?<=\d)\d\d([-. ])\d{3}\1\d{4})(?![\w-]|[.,/]\d)"
)
_SEVEN_DIGITS = re.compile(r"(?:\D*\d){7}")
# runs the matcher would refuse anyway, skipped for speed: dates and IPv4 addresses
_NOT_PHONE_RUN = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}|\d{1,3}(?:\.\d{1,3}){3}")
_MIN_PHONE_DIGITS = 7
_ISBN_WORD = re.compile(r"ISBN(?:-1[03])?:?[ \t]*\Z", re.IGNORECASE)
_ISBN_SHAPE = re.compile(r"(?:97[89]-)?\d{1,5}-\d{1,7}-\d{1,7}-\d")
_MIN_NATIONAL_DIGITS = 6  # digits of a national number a region's plan is asked about
_MAX_PHONE_DIGITS = 17
_DIGITS = re.compile(r"\d+")
_PHONE_CONTEXT = 2  # characters either side the matcher sees (it refuses a number glued to a letter)

# 13-19 digits bare, or groups of 3+ digits each set off by one separator (space, dash or dot, mixed
# or not); a run of 13+ digits at most, so a long table of numbers is never one run
_CARD_RUN = re.compile(
    r"(?<![\w.,-])(?=\d{3})(?=(?:[ .-]?\d){13})(?:\d{13,19}|\d{3,19}(?:[ .-]\d{3,19}){1,6})(?![\w-]|[.,]\d)"
)
_CARD_GROUPS = re.compile(r"\d+")
_CARD_FIRST_DIGITS = "23456"  # every scheme below starts with one of these
# IIN prefix ranges and the lengths each scheme issues
_CARD_SCHEMES: tuple[tuple[int, int, int, frozenset[int]], ...] = tuple(
    (len(str(lo)), lo, hi, frozenset(lengths))
    for lo, hi, lengths in (
        (4, 4, (13, 16, 19)),  # Visa
        (51, 55, (16,)), (2221, 2720, (16,)),  # Mastercard
        (34, 34, (15,)), (37, 37, (15,)),  # American Express
        (6011, 6011, (16, 19)), (644, 649, (16, 19)), (65, 65, (16, 19)),  # Discover
        (3528, 3589, (16, 17, 18, 19)),  # JCB
        (300, 305, (14, 16, 19)), (36, 36, (14, 16, 19)), (38, 39, (16, 19)),  # Diners Club
        (50, 50, (13, 16, 19)), (56, 58, (13, 16, 19)), (67, 67, (13, 16, 19)),  # Maestro
        (62, 62, (16, 17, 18, 19)),  # UnionPay
    )
)

_IBAN_START = re.compile(r"[A-Za-z](?<![A-Za-z0-9][A-Za-z])[A-Za-z]\d\d(?=[ -]?[A-Za-z0-9])")
# ISO 13616 registry: country -> IBAN length
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 18, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}

_UK_POSTCODE = re.compile(
    r"[A-PR-UWYZ](?<![\w-][A-Z])(?:\d[A-HJKPSTUW]?|\d\d|[A-HK-Y]\d[ABEHMNPRVWXY]?|[A-HK-Y]\d\d|(?<=G)IR) ?"
    r"\d[ABD-HJLNP-UW-Z]{2}(?![\w-])"
)
_CA_POSTCODE = re.compile(r"[ABCEGHJ-NPRSTVXY](?<![\w-][ABCEGHJ-NPRSTVXY])\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d(?![\w-])")
_US_ZIP4 = re.compile(r"\d(?<![\w.,-]\d)\d{4}-\d{4}(?![\w-]|[.,]\d)")
_NL_POSTCODE = re.compile(r"[1-9](?<![\w.,-][1-9])\d{3} ?([A-Z]{2})(?![\w-])")
_NL_TOWN_AFTER = re.compile(r",?[ \t]+(?:[A-Z][a-z]|'s-[A-Z])")
_POSTCODE_WORD = re.compile(r"\b(?:postcode|postal code|zip)\b", re.IGNORECASE)
# letter pairs never issued (SA, SD, SS) and the units, eras and suffixes a 4-digit number carries
_NL_NOT_POSTCODE = frozenset({
    "SA", "SD", "SS", "AD", "BC", "CE", "AM", "PM", "KB", "MB", "GB", "TB", "PB", "KM", "CM", "MM", "KG", "MG",
    "HZ", "KW", "MW", "GW", "HP", "PS", "TI", "BV", "NV", "EU", "US", "UK", "NL", "GT", "XT", "SE",
})
# memory sizes look like UK inward codes ("Apple M1 8GB"): refused
_UK_NOT_INWARD = ("GB", "TB")

# nine digits as an SSN (AAA-GG-SSSS, spaces or nothing between) or a BSN (123456782, 123 456 782,
# 123.456.782, 1234.56.782) writes them: one pass, told apart after
_NINE = re.compile(
    r"\d(?<![\w.,-]\d)\d\d(?:(?P<ssn>[-. ]?)\d\d(?P=ssn)\d{4}|(?P<bsn>[ .])\d{3}(?P=bsn)\d{3}|\d\.\d\d\.\d{3})"
    r"(?![\w-]|[.,]\d)"
)
_SSN_INVALID = re.compile(r"000|666|9|...00|.....0000")  # area, group and serial numbers never issued
_SSN_WORD = re.compile(r"\b(?:ssn|social security(?: number| no\.?)?)\b", re.IGNORECASE)
_SSN_NEVER = frozenset({"078051120", "219099999", "123456789"})  # published (and so reused) example numbers
_NINO_NEVER = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})  # prefixes never issued
_NINO = re.compile(
    r"[A-CEGHJ-PR-TW-Z](?<![\w-][A-Z])[A-CEGHJ-NPR-TW-Z]( ?)\d{2}\1\d{2}\1\d{2}\1[A-D](?![\w-])"
)
_BSN_WORD = re.compile(r"\b(?:bsn|burgerservicenummer|sofi-?nummer|citizen service number)\b", re.IGNORECASE)
_CONTEXT_BEFORE = 48  # characters before an id searched for its context word
_CONTEXT_AFTER = 24


# ---- the normalising pre-pass ----------------------------------------------------------------
# Detectors see text with Unicode spaces as a space, hyphens as "-", fullwidth forms as ASCII (what
# NFKC makes of U+FF01-FF5E) and zero-width characters dropped; spans map back to the original, so
# the original text is what gets replaced (and restored).
_SPACES = "\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_ZERO_WIDTH = "\u00ad\u180e\u200b-\u200d\u2060\ufeff"
_ONE_TO_ONE = re.compile(f"[{_SPACES}\u2010\u2011\uff01-\uff5e]")
_ONE_TO_ONE_TABLE = {
    **dict.fromkeys((0xA0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000), " "),
    0x2010: "-", 0x2011: "-",
    **{cp: chr(cp - 0xFEE0) for cp in range(0xFF01, 0xFF5F)},
}
_ZERO_WIDTH_RUN = re.compile(f"[{_ZERO_WIDTH}]+")


class _Normalised(NamedTuple):
    text: str
    drops: list[int]  # for each character dropped, where in `text` it would have been

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of text[start:end]: dropped characters inside it are in it."""
        if not self.drops:
            return start, end
        return start + bisect.bisect_right(self.drops, start), end + bisect.bisect_right(self.drops, end - 1)


def _normalise(text: str) -> _Normalised | None:
    """The text the detectors see, or None when that is `text` itself (ASCII text always is)."""
    if text.isascii():
        return None
    out = text.translate(_ONE_TO_ONE_TABLE) if _ONE_TO_ONE.search(text) else text
    drops: list[int] = []
    if _ZERO_WIDTH_RUN.search(out):
        gone = 0
        for m in _ZERO_WIDTH_RUN.finditer(out):
            drops.extend([m.start() - gone] * (m.end() - m.start()))
            gone += m.end() - m.start()
        out = _ZERO_WIDTH_RUN.sub("", out)
    return None if out is text else _Normalised(out, drops)


def _near(text: str, start: int, end: int, word: re.Pattern[str]) -> bool:
    return word.search(text, max(0, start - _CONTEXT_BEFORE), min(len(text), end + _CONTEXT_AFTER)) is not None


def _find_emails(text: str) -> Iterator[tuple[int, int]]:
    at = text.find("@")
    while at >= 0:
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        local = _EMAIL_LOCAL.search(text, max(0, at - _MAX_LOCAL), at) if domain else None
        if local and domain and domain.group(1).lower() not in _FILE_TLDS:
            yield local.start(), domain.end()
        at = text.find("@", at + 1)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_scheme_ok(digits: str) -> bool:
    return any(len(digits) in lengths and lo <= int(digits[:size]) <= hi for size, lo, hi, lengths in _CARD_SCHEMES)


def _card_window(groups: list[str]) -> tuple[int, int] | None:
    """The longest run of groups (of 3+ digits when separated) that is a card."""
    best: tuple[int, int] | None = None
    for i in range(len(groups)):
        if groups[i][0] not in _CARD_FIRST_DIGITS:
            continue
        digits = ""
        for j in range(i, len(groups)):
            digits += groups[j]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and _luhn(digits) and _card_scheme_ok(digits):
                if best is None or j - i > best[1] - best[0]:
                    best = (i, j)
    return best


def _find_cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD_RUN.finditer(text):
        tokens = list(_CARD_GROUPS.finditer(text, m.start(), m.end()))
        window = _card_window([t.group() for t in tokens])
        if window is not None:
            yield tokens[window[0]].start(), tokens[window[1]].end()


def _iban_ok(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _iban_end(text: str, start: int, length: int) -> int | None:
    """Where an IBAN of `length` characters starting at `start` ends (groups set off by single spaces
    or single dashes, one of the two throughout), if it does."""
    count, i, sep = 0, start, ""
    while i < len(text) and count < length:
        ch = text[i]
        if ch.isascii() and ch.isalnum():
            count += 1
        elif ch in " -" and (sep or ch) == ch and count >= 4 and i + 1 < len(text) and text[i + 1].isalnum():
            sep = ch
        else:
            return None
        i += 1
    if count < length or (i < len(text) and (text[i].isalnum() or (text[i] == "-" and text[i + 1: i + 2].isalnum()))):
        return None
    return i


def _find_ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN_START.finditer(text):
        length = _IBAN_LENGTHS.get(m.group()[:2].upper())
        if length is None:
            continue
        end = _iban_end(text, m.start(), length)
        if end is None:
            continue
        iban = text[m.start(): end].replace(" ", "").replace("-", "")
        if (iban.isupper() or iban.islower()) and _iban_ok(iban):  # nl91abna..., not a mixed-case id
            yield m.start(), end


def _is_isbn(text: str, start: int, candidate: str) -> bool:
    """An ISBN (named just before, or hyphenated in four or five groups with a valid check digit):
    `0-306-40615-2` starts with a trunk 0 and would pass for a French number."""
    if _ISBN_WORD.search(text, max(0, start - 12), start):
        return True
    if not _ISBN_SHAPE.fullmatch(candidate):
        return False
    digits = _NOT_DIGIT.sub("", candidate)
    if len(digits) == 10:
        return sum((10 - i) * int(d) for i, d in enumerate(digits)) % 11 == 0
    return len(digits) == 13 and sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10 == 0


class _Plan(NamedTuple):
    """What a cheap pre-check needs of a region's numbering plan."""

    region: str
    trunk: re.Pattern[str] | None  # the national prefix a number may start with ("0"; "1" in NANP)
    numbers: re.Pattern[str]  # every national number the plan has (general_desc), as a regex


def _plan(region: str) -> _Plan:
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    assert meta is not None and meta.general_desc is not None  # noqa: S101 -- SUPPORTED_REGIONS was checked
    trunk = re.compile(meta.national_prefix_for_parsing) if meta.national_prefix_for_parsing else None
    return _Plan(region, trunk, re.compile(meta.general_desc.national_number_pattern or r"\d+"))


def _digit_windows(candidate: str) -> Iterator[str]:
    """The digits of each run of consecutive groups of `candidate` that could be one phone number."""
    groups = _DIGITS.findall(candidate)
    for i in range(len(groups)):
        digits = ""
        for group in groups[i:]:
            digits += group
            if len(digits) > _MAX_PHONE_DIGITS:
                break
            if len(digits) >= _MIN_NATIONAL_DIGITS:
                yield digits


def _phone_windows(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The windows of the run text[start:end] the matcher is shown: the run itself when it is short,
    else windows of _MAX_RUN characters cut between digit groups, half a window apart."""
    if end - start <= _MAX_RUN:
        yield start, end
        return
    at = start
    while True:
        stop = min(end, at + _MAX_RUN)
        if stop < end:  # cut before the digit group the window's edge falls in, and its separators
            cut = stop
            while cut > at and text[cut - 1].isdigit() and text[cut].isdigit():
                cut -= 1
            while cut > at and not text[cut - 1].isdigit():
                cut -= 1
            stop = cut if cut > at else stop
        yield at, stop
        if stop >= end:
            return
        nxt = at + _MAX_RUN // 2
        while nxt < end and text[nxt - 1].isdigit() and text[nxt].isdigit():  # to the next group's start
            nxt += 1
        while nxt < end and not text[nxt].isdigit():
            nxt += 1
        if nxt >= end:
            return
        if text[nxt - 1] in "+(":
            nxt -= 1
        at = nxt


class _Budget:
    """What is left of one text's phone work (one per call: a Redactor is shared between threads)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = _PHONE_BUDGET


class _PhoneFinder:
    """phonenumbers' matcher, run only around the digit runs that could hold a phone number, and
    only for the regions whose plan has a number there (a regex check of each plan's number
    pattern): the matcher costs ~100-400 us per region per window, the check ~20-130 us. Long runs
    are cut into bounded windows and each text's work is capped (_PHONE_BUDGET), so the cost is
    linear in the text and bounded, whatever the text."""

    def __init__(self, regions: Sequence[str]) -> None:
        # one region per calling code: VALID asks is_valid_number, so US and CA find the same numbers
        by_code: dict[int, str] = {}
        for region in regions:
            by_code.setdefault(phonenumbers.country_code_for_region(region), region)
        self.plans = [_plan(region) for region in by_code.values()]
        idd00 = [p.region for p in self.plans if phonenumbers.PhoneMetadata.metadata_for_region(p.region).international_prefix == "00"]  # type: ignore[union-attr]
        self.idd00 = idd00[:1] or [p.region for p in self.plans]
        # a chat resends its history every turn: the same windows are judged again and again
        self._cache: dict[tuple[str, str], tuple[tuple[int, int], ...]] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __call__(self, text: str) -> Iterator[tuple[int, int]]:
        seen: set[tuple[int, int]] = set()
        budget = _Budget()
        for run in _PHONE_RUN.finditer(text):
            candidate = run.group()
            if not _SEVEN_DIGITS.match(candidate) or _NOT_PHONE_RUN.fullmatch(candidate):
                continue
            if _is_isbn(text, run.start(), candidate):
                continue
            for w_start, w_end in _phone_windows(text, run.start(), run.end()):
                if budget.left <= 0:  # the rest of the text, from this window on, by the fallback
                    yield from (span for span in _evident_phones(text, w_start) if span not in seen)
                    return
                window = text[w_start:w_end]
                if w_end - w_start < len(candidate) and not _SEVEN_DIGITS.match(window):
                    continue
                # the matcher sees a little of the text around a run (it refuses a number glued to a
                # letter); a window cut inside a run is shown as it is
                offset = max(0, w_start - _PHONE_CONTEXT) if w_start == run.start() else w_start
                stop = w_end + _PHONE_CONTEXT if w_end == run.end() else w_end
                for start, end in self._match(text[offset:stop], window, budget):
                    found = (offset + start, offset + end)
                    if found not in seen and not _glued(text, *found):
                        seen.add(found)
                        yield found

    def _match(self, window: str, candidate: str, budget: _Budget) -> tuple[tuple[int, int], ...]:
        key = (window, candidate)
        found = self._cache.get(key)
        if found is not None:
            budget.left -= _COST_CACHED
            return found
        budget.left -= _COST_PRECHECK
        spans: list[tuple[int, int]] = []
        for region in self._regions_for(candidate):
            budget.left -= _COST_MATCHER
            for match in phonenumbers.PhoneNumberMatcher(window, region, leniency=phonenumbers.Leniency.VALID):
                if _phone_shape_ok(match.raw_string, region):
                    spans.append((match.start, match.end))
        found = tuple(spans)
        with self._lock:
            if len(self._cache) >= _CACHE_SIZE:  # the oldest out
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[key] = found
        return found

    def _regions_for(self, candidate: str) -> list[str]:
        if candidate.startswith("+"):  # parses alike in every region: one matcher is enough
            return [self.plans[0].region]
        if candidate.startswith("00"):
            return self.idd00
        windows = list(_digit_windows(candidate))
        return [plan.region for plan in self.plans if any(_plan_has(plan, digits) for digits in windows)]


def _plan_has(plan: _Plan, digits: str) -> bool:
    if plan.numbers.fullmatch(digits):
        return True
    trunk = plan.trunk.match(digits) if plan.trunk else None
    return trunk is not None and plan.numbers.fullmatch(digits, trunk.end()) is not None


def _phone_shape_ok(raw: str, region: str) -> bool:
    """An international prefix, an area code in brackets or a trunk 0 is evidence enough; anything
    else must be grouped as its plan groups it (VALID alone takes `30 123456 10` for a US number)."""
    if raw[0] in "+(0":
        return True
    if raw.isdigit():  # a bare run of digits: an id more often than a phone
        return False
    matches = phonenumbers.PhoneNumberMatcher(raw, region, leniency=phonenumbers.Leniency.STRICT_GROUPING)
    return any(m.raw_string == raw for m in matches)


def _glued(text: str, start: int, end: int) -> bool:
    """A match that is part of a longer number: a digit (or a digit and a tight separator) touches
    it (`020/7946 0958` is one number, not `0/7946 0958` after a stray `02`)."""
    return _GLUED_BEFORE.search(text, max(0, start - 2), start) is not None or _GLUED_AFTER.match(text, end) is not None


def _evident_phones(text: str, pos: int) -> Iterator[tuple[int, int]]:
    """Past the phone budget: numbers that look like phone numbers, by one regex pass."""
    for m in _PHONE_EVIDENT.finditer(text, pos):
        if not _NOT_PHONE_RUN.fullmatch(m.group()) and not _is_isbn(text, m.start(), m.group()):
            yield m.span()


def _find_uk_postcodes(text: str) -> Iterator[tuple[int, int]]:
    for m in _UK_POSTCODE.finditer(text):
        if not m.group().endswith(_UK_NOT_INWARD):
            yield m.start(), m.end()


def _find_nl_postcodes(text: str) -> Iterator[tuple[int, int]]:
    for m in _NL_POSTCODE.finditer(text):
        if m.group(1) in _NL_NOT_POSTCODE:
            continue
        if _NL_TOWN_AFTER.match(text, m.end()) or _near(text, m.start(), m.end(), _POSTCODE_WORD):
            yield m.start(), m.end()


def _regex_finder(pattern: re.Pattern[str]) -> Callable[[str], Iterator[tuple[int, int]]]:
    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in pattern.finditer(text):
            yield m.start(), m.end()

    return find


def _find_ninos(text: str) -> Iterator[tuple[int, int]]:
    for m in _NINO.finditer(text):
        if m.group()[:2] not in _NINO_NEVER:
            yield m.start(), m.end()


def _ssn_ok(digits: str) -> bool:
    return not _SSN_INVALID.match(digits) and digits not in _SSN_NEVER


def _eleven_proof(digits: str) -> bool:
    total = sum(int(d) * (9 - i) for i, d in enumerate(digits[:8])) - int(digits[8])
    return total % 11 == 0 and digits != "000000000"


class _NineDigitIds:
    """US SSNs and NL BSNs: written with the SSN's dashes or spaces, an SSN by its rules alone; as
    nine bare digits (an order number as often as not), only with its name nearby."""

    def __init__(self, ssn: bool, bsn: bool) -> None:
        self.ssn, self.bsn = ssn, bsn

    def __call__(self, text: str) -> Iterator[tuple[int, int]]:
        for m in _NINE.finditer(text):
            if self._is_id(text, m):
                yield m.start(), m.end()

    def _is_id(self, text: str, m: re.Match[str]) -> bool:
        digits = _NOT_DIGIT.sub("", m.group())
        if m.group("ssn") == ".":  # 536.22.8726: an SSN only with its name nearby
            return self.ssn and _ssn_ok(digits) and _near(text, m.start(), m.end(), _SSN_WORD)
        if m.group("ssn"):  # 536-22-8726, 536 22 8726
            return self.ssn and _ssn_ok(digits)
        bare = m.group().isdigit()
        if self.ssn and bare and _ssn_ok(digits) and _near(text, m.start(), m.end(), _SSN_WORD):
            return True
        return self.bsn and _eleven_proof(digits) and _near(text, m.start(), m.end(), _BSN_WORD)


Finder = Callable[[str], Iterator[tuple[int, int]]]


def _builtin_finders(kinds: set[str], regions: set[str]) -> list[tuple[str, Finder]]:
    """The detectors to run, in the order they run; `regions` picks the national formats."""
    table: list[tuple[str, Finder, bool]] = [
        ("email", _find_emails, True),
        ("card", _find_cards, True),
        ("iban", _find_ibans, True),
        ("phone", _PhoneFinder(sorted(regions)), bool(regions)),
        ("postcode", _find_uk_postcodes, "GB" in regions),
        ("postcode", _find_nl_postcodes, "NL" in regions),
        ("postcode", _regex_finder(_CA_POSTCODE), "CA" in regions),
        ("postcode", _regex_finder(_US_ZIP4), "US" in regions),
        ("national_id", _NineDigitIds("US" in regions, "NL" in regions), bool({"US", "NL"} & regions)),
        ("national_id", _find_ninos, "GB" in regions),
    ]
    return [(kind, finder) for kind, finder, on in table if on and kind in kinds]


def _choose(candidates: list[tuple[int, int, int, str]]) -> list[Span]:
    """Non-overlapping spans: the longest first, then the most specific kind, then the earliest."""
    candidates.sort(key=lambda c: (c[0] - c[1], c[2], c[0]))
    starts: list[int] = []
    chosen: list[Span] = []
    for start, end, _, kind in candidates:
        i = bisect.bisect_right(starts, start)
        if i and chosen[i - 1].end > start:
            continue
        if i < len(chosen) and chosen[i].start < end:
            continue
        starts.insert(i, start)
        chosen.insert(i, Span(start, end, kind))
    return chosen


# ---- walking a message's strings ----------------------------------------------------------------

# one step of the way to a string: (field name, how, index or key); map keys may be ints, so a
# repeated field's index and a map's key are told apart by `how`
_FIELD, _INDEX, _KEY = range(3)
Step = tuple[str, int, object]
Path = tuple[Step, ...]

_STRING, _MESSAGE, _MAP_STRING, _MAP_MESSAGE, _SKIP = range(5)
_field_kinds: dict[FieldDescriptor, int] = {}


def _field_kind(fd: FieldDescriptor) -> int:
    """What a field holds for the walk, worked out once per field."""
    kind = _field_kinds.get(fd)
    if kind is None:
        kind = _SKIP  # numbers, bytes, enums; extensions are set by number, not by name: left alone
        if fd.is_extension:
            pass
        elif fd.type == FieldDescriptor.TYPE_STRING:
            kind = _STRING
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type is not None:
            kind = _MESSAGE
            if fd.message_type.GetOptions().map_entry:
                value = fd.message_type.fields_by_name["value"].type
                kind = {FieldDescriptor.TYPE_STRING: _MAP_STRING, FieldDescriptor.TYPE_MESSAGE: _MAP_MESSAGE}.get(value, _SKIP)
        _field_kinds[fd] = kind
    return kind


def _strings(message: Message, prefix: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every non-empty string field of a message, recursively, with the path to set it again."""
    for fd, value in message.ListFields():
        kind, name = _field_kind(fd), fd.name
        if kind == _STRING and fd.is_repeated:
            yield from (((*prefix, (name, _INDEX, i)), text) for i, text in enumerate(value) if text)
        elif kind == _STRING:
            yield (*prefix, (name, _FIELD, None)), value
        elif kind == _MESSAGE and fd.is_repeated:
            for i, item in enumerate(value):
                yield from _strings(item, (*prefix, (name, _INDEX, i)))
        elif kind == _MESSAGE:
            yield from _strings(value, (*prefix, (name, _FIELD, None)))
        elif kind == _MAP_STRING:
            yield from (((*prefix, (name, _KEY, key)), text) for key, text in value.items() if text)
        elif kind == _MAP_MESSAGE:
            for key, item in value.items():
                yield from _strings(item, (*prefix, (name, _KEY, key)))


def _step(target: Any, step: Step) -> Any:
    """Go one step down, creating the element of a repeated field a later stream message lacks."""
    name, how, where = step
    container = getattr(target, name)
    if how == _FIELD:
        return container
    if how == _INDEX:
        assert isinstance(where, int)  # noqa: S101 -- a path this module built
        while len(container) <= where:
            container.add()
    return container[where]


def _set_string(message: Message, path: Path, text: str) -> None:
    """Set the string at `path`, creating what leads to it."""
    target: Any = message
    for step in path[:-1]:
        target = _step(target, step)
    name, how, where = path[-1]
    if how == _FIELD:
        setattr(target, name, text)
        return
    container = getattr(target, name)
    if how == _INDEX:
        assert isinstance(where, int)  # noqa: S101 -- a path this module built
        container.extend([""] * (where + 1 - len(container)))
    container[where] = text


def _get_string(message: Message, path: Path) -> str:
    """The string at `path`, or "" where the message has none (nothing is created)."""
    target: Any = message
    for name, how, where in path:
        target = getattr(target, name)
        if how == _INDEX and not (isinstance(where, int) and where < len(target)):
            return ""
        if how == _KEY and where not in target:
            return ""
        if how != _FIELD:
            target = target[where]
    return target if isinstance(target, str) else ""


class Redactor:
    """Finds personal data in text and takes it out of protobuf requests; built once, from config."""

    def __init__(
        self,
        kinds: Iterable[str] | None = None,
        patterns: Mapping[str, str] | None = None,
        regions: Sequence[str] = DEFAULT_REGIONS,
    ) -> None:
        patterns = dict(patterns or {})
        chosen = set(BUILTIN_KINDS if kinds is None else kinds)
        unknown = chosen - set(BUILTIN_KINDS) - set(patterns)
        if unknown:
            raise ValueError(f"privacy kinds: unknown {sorted(unknown)}; built in: {list(BUILTIN_KINDS)}, or name a pattern")
        self._custom = [(name, self._compile(name, regex)) for name, regex in patterns.items()]
        self._builtins = _builtin_finders(chosen, self._regions(regions))
        self._labels = self._check_labels()

    @staticmethod
    def _regions(regions: Sequence[str]) -> set[str]:
        codes = {r.upper() for r in regions}
        bad = codes - phonenumbers.SUPPORTED_REGIONS
        if bad:
            raise ValueError(f"privacy regions: unknown {sorted(bad)} (ISO 3166 codes, e.g. 'NL')")
        return codes

    @staticmethod
    def _compile(name: str, regex: str) -> re.Pattern[str]:
        if not _KIND_NAME.fullmatch(name):
            raise ValueError(f"privacy pattern {name!r}: a name is letters and underscores (it becomes <{name.upper()}_1>)")
        try:
            return re.compile(regex)
        except re.error as err:
            raise ValueError(f"privacy pattern {name!r}: bad regular expression {regex!r}: {err}") from None

    def _check_labels(self) -> dict[str, str]:
        """kind -> placeholder label; two kinds that a model's spelling could confuse are refused."""
        labels = {kind: kind.upper() for kind in BUILTIN_KINDS}
        for name, _ in self._custom:
            clash = [k for k in labels if _label_key(k) == _label_key(name)]
            if clash:
                raise ValueError(f"privacy pattern {name!r}: its placeholder would be read as {clash[0]!r}'s")
            labels[name] = name.upper()
        return labels

    def clear_cache(self) -> None:
        """Forget the phone matcher's verdicts on runs already seen (benchmarks measure a cold start)."""
        for _, finder in self._builtins:
            if isinstance(finder, _PhoneFinder):
                finder.clear()

    def find(self, text: str) -> list[Span]:
        """Personal data in `text`, in order, non-overlapping (the longest, then most specific, wins)."""
        candidates: list[tuple[int, int, int, str]] = []
        for name, pattern in self._custom:
            candidates.extend((m.start(), m.end(), _CUSTOM_PRIORITY, name) for m in pattern.finditer(text) if m.end() > m.start())
        normalised = _normalise(text) if self._builtins else None
        seen = normalised.text if normalised else text
        if self._builtins and ("@" in seen or _DIGIT.search(seen)):  # every built-in needs one or the other
            for kind, finder in self._builtins:
                found = finder(seen)
                if normalised is not None:
                    found = (normalised.span(start, end) for start, end in found)
                candidates.extend((start, end, _PRIORITY[kind], kind) for start, end in found)
        return _choose(candidates) if candidates else []

    def redact(self, message: M) -> Redacted[M] | None:
        """A copy of `message` with every personal value replaced by a placeholder, or None (no copy
        made) when there is nothing to take out."""
        texts = list(_strings(message))
        hits = [(path, text, spans) for path, text in texts if (spans := self.find(text))]
        if not hits:
            return None
        issuer = _Issuer(self._labels, texts)
        changes = [(path, self._replace_all(issuer, text, spans)) for path, text, spans in hits]
        copy = type(message)()
        copy.CopyFrom(message)
        for path, text in changes:
            _set_string(copy, path, text)
        return Redacted(copy, issuer.counts, _Placeholders(issuer.originals))


    def _replace_all(self, issuer: _Issuer, text: str, spans: list[Span]) -> str:
        """Replace `spans`, then what the replacing uncovered: a value that lost an overlap to a
        longer one, or whose neighbour was glued to it (`ann@example.com1012 LG Amsterdam`), is
        found once the neighbour is a placeholder. Placeholders themselves are never matched again."""
        for _ in range(_MAX_ROUNDS):
            text = issuer.replace(text, spans)
            issued = [m.span() for m in _ISSUED.finditer(text) if m.group() in issuer.placeholders]
            spans = [span for span in self.find(text) if not any(span.start < e and s < span.end for s, e in issued)]
            if not spans:
                break
        return text


class _Issuer:
    """Hands out placeholders for one request: the same value gets the same one; each kind's numbers
    are the smallest that no placeholder-shaped text in the request already uses, so none names the
    request's own text and, whatever numbers that text holds, the issued ones stay small (a request
    quoting `<EMAIL_999999999999>` still gets `<EMAIL_1>`, which _LOOSE can read back)."""

    def __init__(self, labels: Mapping[str, str], texts: Iterable[tuple[Path, str]]) -> None:
        self.labels = labels
        self.used: dict[str, set[int]] = {}
        for _, text in texts:
            if "<" in text:
                for m in _LOOSE.finditer(text):
                    self.used.setdefault(_label_key(m.group(1)), set()).add(int(m.group(2)))
        self.next: dict[str, int] = {}  # per label: no number below it is free
        self.issued: dict[tuple[str, str], str] = {}
        self.placeholders: set[str] = set()
        self.originals: dict[tuple[str, int], str] = {}
        self.counts: dict[str, int] = {}

    def placeholder(self, kind: str, value: str) -> str:
        found = self.issued.get((kind, value))
        if found is None:
            label = self.labels[kind]
            key = _label_key(label)
            used = self.used.setdefault(key, set())
            number = self.next.get(key, 1)
            while number in used:
                number += 1
            used.add(number)
            self.next[key] = number + 1
            found = self.issued[(kind, value)] = f"<{label}_{number}>"
            self.placeholders.add(found)
            self.originals[(key, number)] = value
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return found

    def replace(self, text: str, spans: list[Span]) -> str:
        parts: list[str] = []
        last = 0
        for start, end, kind in spans:
            parts.append(text[last:start])
            parts.append(self.placeholder(kind, text[start:end]))
            last = end
        parts.append(text[last:])
        return "".join(parts)


class _Placeholders:
    """The placeholders one request issued and their values: restores text, whole or streamed."""

    def __init__(self, originals: dict[tuple[str, int], str]) -> None:
        self.originals = originals
        self.keys = {key for key, _ in originals}

    def restore_text(self, text: str) -> str:
        """`text` with the placeholders this request issued put back (any spelling _LOOSE accepts);
        placeholder-shaped text it did not issue stays as it is."""
        if "<" not in text:
            return text
        return _LOOSE.sub(self._original, text)

    def _original(self, m: re.Match[str]) -> str:
        return self.originals.get((_label_key(m.group(1)), int(m.group(2))), m.group())

    def restore(self, message: Mr) -> Mr:
        for path, text in list(_strings(message)):
            restored = self.restore_text(text)
            if restored != text:
                _set_string(message, path, restored)
        return message

    def could_grow(self, tail: str) -> bool:
        """Whether `tail` (from a '<' to the end of a streamed string) may still become a placeholder."""
        if len(tail) > _MAX_PARTIAL or not _PARTIAL.fullmatch(tail):
            return False
        letters = _label_key(tail)
        if any(ch.isdigit() for ch in tail):
            return letters in self.keys
        return any(key.startswith(letters) for key in self.keys)


@dataclass
class Redacted(Generic[M]):
    """A redacted request and what it takes to put its values back into the answer."""

    request: M
    counts: dict[str, int]  # kind -> spans redacted (never the values)
    _placeholders: _Placeholders = field(repr=False)

    def restore(self, message: Mr) -> Mr:
        """Every string field of a response (recursively) with the placeholders put back; in place, returned."""
        return self._placeholders.restore(message)

    def restore_text(self, text: str) -> str:
        return self._placeholders.restore_text(text)

    def stream(self) -> StreamRestorer:
        """A restorer for a streamed response: feed() each message, finish() the last."""
        return StreamRestorer(self._placeholders)


class StreamRestorer:
    """Restores a streamed answer, message by message: a placeholder may arrive split across
    messages ("<EMA" then "IL_1>"), so the tail of a string field that could still become one is
    held back and put in front of the same field of the next message."""

    def __init__(self, placeholders: _Placeholders) -> None:
        self._placeholders = placeholders
        self._held: dict[Path, str] = {}

    def feed(self, message: Mr) -> Mr:
        """Restore what can be restored; hold back a trailing fragment that may become a placeholder."""
        self._prepend_held(message)
        for path, text in list(_strings(message)):
            cut = self._holdback(text)
            if cut < len(text):
                self._held[path] = text[cut:]
            restored = self._placeholders.restore_text(text[:cut])
            if restored != text:
                _set_string(message, path, restored)
        return message

    def finish(self, message: Mr) -> Mr:
        """The last message: what is still held back goes into it (a fragment that never became a
        placeholder is the model's own text, kept verbatim), and it is restored whole."""
        self._prepend_held(message)
        return self._placeholders.restore(message)

    def _prepend_held(self, message: Message) -> None:
        held, self._held = self._held, {}
        for path, fragment in held.items():
            _set_string(message, path, fragment + _get_string(message, path))

    def _holdback(self, text: str) -> int:
        """Where the tail that could still become a placeholder starts (len(text): nothing held)."""
        at = text.rfind("<", max(0, len(text) - _MAX_PARTIAL))
        if at >= 0 and self._placeholders.could_grow(text[at:]):
            return at
        return len(text)
