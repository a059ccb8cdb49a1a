"""The redactor used before a request leaves for a remote model provider (kernel/security/redaction.py):
what each detector catches, the near misses it must leave alone, placeholders (consistent, never
colliding with the request's own text), the round trip through real contract messages, streamed
restoring, patterns from config, and properties over random text."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex.contracts.models.v1 import models_pb2 as pb
from cortex.kernel.security import redaction
from cortex.kernel.security.redaction import Redactor, Span

REDACTOR = Redactor()

# kind, text, the value found in it
POSITIVES = [
    ("email", "mail john.smith@example.com today", "john.smith@example.com"),
    ("email", "cc: J.Doe+notes@mail.example.co.uk.", "J.Doe+notes@mail.example.co.uk"),
    ("email", "(anna_devries@voorbeeld.nl)", "anna_devries@voorbeeld.nl"),
    ("phone", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("phone", "office (212) 555-0123, ask for Bob", "(212) 555-0123"),
    ("phone", "mobiel 06 12345678", "06 12345678"),
    ("phone", "mobiel 06-1234 5678", "06-1234 5678"),
    ("phone", "whatsapp +31612345678", "+31612345678"),
    ("phone", "bel 0031 6 12345678", "0031 6 12345678"),
    ("phone", "Paris 01 42 68 53 00", "01 42 68 53 00"),
    ("phone", "Berlin 030 1234567", "030 1234567"),
    ("phone", "US 212-555-0123", "212-555-0123"),
    ("phone", "US +1 415 555 2671", "+1 415 555 2671"),
    ("card", "visa 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
    ("card", "amex 378282246310005", "378282246310005"),
    ("card", "mc 5555-5555-5555-4444", "5555-5555-5555-4444"),
    ("card", "mc2 2223 0031 2200 3222", "2223 0031 2200 3222"),
    ("iban", "IBAN NL91 ABNA 0417 1643 00 please", "NL91 ABNA 0417 1643 00"),
    ("iban", "to DE89370400440532013000.", "DE89370400440532013000"),
    ("iban", "GB82 WEST 1234 5698 7654 32 EUR", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "BE68 5390 0754 7034", "BE68 5390 0754 7034"),
    ("postcode", "10 Downing St, London SW1A 2AA", "SW1A 2AA"),
    ("postcode", "Manchester M1 1AE", "M1 1AE"),
    ("postcode", "Ottawa ON K1A 0B1", "K1A 0B1"),
    ("postcode", "Beverly Hills, CA 90210-1234", "90210-1234"),
    ("postcode", "Damrak 1, 1012 LG Amsterdam", "1012 LG"),
    ("postcode", "postcode: 3511 AB", "3511 AB"),
    ("national_id", "SSN 536-22-8726", "536-22-8726"),
    ("national_id", "her social security number is 536228726", "536228726"),
    ("national_id", "NINO AB 12 34 56 C", "AB 12 34 56 C"),
    ("national_id", "NINO AB123456C", "AB123456C"),
    ("national_id", "mijn BSN is 123456782", "123456782"),
    ("national_id", "burgerservicenummer: 111.222.333", "111.222.333"),
    # Unicode spaces, zero-width characters and fullwidth forms: found, and the original replaced
    ("card", "visa 4111\xa01111\xa01111\xa01111 exp", "4111\xa01111\xa01111\xa01111"),
    ("phone", "London 020\xa07946\xa00958", "020\xa07946\xa00958"),
    ("phone", "tel 020\u202f7946\u202f0958.", "020\u202f7946\u202f0958"),
    ("phone", "call +44\u200920\u20097946\u20090958 now", "+44\u200920\u20097946\u20090958"),
    ("email", "mail anna\u200b@example.org today", "anna\u200b@example.org"),
    ("email", "mail anna@exam\u2060ple.org\u200b today", "anna@exam\u2060ple.org"),
    ("email", "mail anna\uff20example.org today", "anna\uff20example.org"),
    # other separators, case, and values that were redacted only in part
    ("card", "card 4111.1111.1111.1111 exp", "4111.1111.1111.1111"),
    ("card", "card 4111 1111-1111 1111 exp", "4111 1111-1111 1111"),
    ("iban", "iban nl91abna0417164300 please", "nl91abna0417164300"),
    ("iban", "IBAN NL91-ABNA-0417-1643-00.", "NL91-ABNA-0417-1643-00"),
    ("national_id", "SSN 536.22.8726", "536.22.8726"),
    ("phone", "London 020/7946 0958", "020/7946 0958"),
]

# numbers of every kind that are no personal data, and the shapes closest to each detector's
NEAR_MISSES = [
    "on 2024-03-15 at 10:30", "15.03.2024 10:30:15", "12/03/2024", "2024-03-15T10:30:00Z",
    "version 1.2.3.4567", "v10.15.7", "release 2023.10.1", "python 3.11.9",
    "€1,234.56", "$ 12,345,678.90", "total 1.234.567,89 EUR", "85000 EUR",
    "ISBN 978-3-16-148410-0", "ISBN 0-306-40615-2", "order 112-3456789-1234567", "order #4829105",
    "ticket 20240315103000", "id 3012345610", "in 2023 we sold 1500000 units", "between 1999 and 2024",
    "30 123456 10", "page 123-456", "ip 192.168.100.200", "port 8443",
    "card-like 1234 5678 9012 3456", "4111 1111 1111 1112", "epoch 1710498600000",
    "NL00ABNA0417164300", "NL91ABNA0417164301", "DE89 3704 0044 0532 0130 01",
    "RTX 4090 TI Founders", "1500 MB Free", "the year 1066 AD", "3000 BC", "Apple M1 8GB RAM",
    "flat 1234 AB then", "12345", "zip 90210", "10000-20000 rows",
    "000-12-3456", "666-12-3456", "900-12-3456", "536-00-8726", "536-22-0000", "123456782",
    "QQ 12 34 56 C", "GB 12 34 56 A", "id 111222333",
    "icon@2x.png", "user@localhost", "@mention", "a @ b",
    "<EMAIL_1>", "x = 10 ** 9", "SHA 3f786850e387550fdab836ed7e6dc881de23001b",
    "536.22.8726", "nl91ABNA0417164300", "Nl91abna0417164300", "4111.1111.1111.1112", "1.234.567.890.123,45",
    "15.03.2024\xa010:30", "version\xa01.2.3.4567", "\u20ac\xa01\u202f234,56", "\uff11\uff12\uff13\uff14\uff15",
]


@pytest.mark.parametrize(("kind", "text", "value"), POSITIVES)
def test_each_detector_finds_its_value(kind: str, text: str, value: str) -> None:
    start = text.index(value)
    assert REDACTOR.find(text) == [Span(start, start + len(value), kind)]


@pytest.mark.parametrize(("kind", "text", "value"), POSITIVES)
def test_a_positive_becomes_its_placeholder(kind: str, text: str, value: str) -> None:
    redacted = REDACTOR.redact(pb.GenerateRequest(prompt=text))
    assert redacted is not None
    assert redacted.request.prompt == text.replace(value, f"<{kind.upper()}_1>")
    assert redacted.counts == {kind: 1}


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_left_alone(text: str) -> None:
    assert REDACTOR.find(text) == []
    assert REDACTOR.redact(pb.GenerateRequest(prompt=f"notes: {text}.")) is None


def test_nothing_found_is_none_and_no_copy() -> None:
    request = pb.GenerateRequest(model="m", messages=[pb.ChatMessage(role="user", content="Plan the sprint for week 14, 2024.")])
    assert REDACTOR.redact(request) is None


def test_the_same_value_gets_the_same_placeholder_numbered_per_kind() -> None:
    request = pb.GenerateRequest(messages=[
        pb.ChatMessage(role="user", content="Ann is ann@example.com, +31 6 12345678; Bob is bob@example.com."),
        pb.ChatMessage(role="assistant", content="Noted: ann@example.com."),
    ])
    redacted = REDACTOR.redact(request)
    assert redacted is not None
    assert [m.content for m in redacted.request.messages] == [
        "Ann is <EMAIL_1>, <PHONE_1>; Bob is <EMAIL_2>.",
        "Noted: <EMAIL_1>.",
    ]
    assert redacted.counts == {"email": 3, "phone": 1}
    assert request.messages[0].content.startswith("Ann is ann@")  # the original is untouched


def test_placeholders_never_collide_with_the_requests_own_text() -> None:
    text = "template <EMAIL_1> and < email 2 > and <PHONE_7>; real: ann@example.com"
    redacted = REDACTOR.redact(pb.GenerateRequest(prompt=text))
    assert redacted is not None
    assert redacted.request.prompt == "template <EMAIL_1> and < email 2 > and <PHONE_7>; real: <EMAIL_3>"
    answer = pb.GenerateResponse(text="<EMAIL_1>, <EMAIL_2> and <EMAIL_3>")
    assert redacted.restore(answer).text == "<EMAIL_1>, <EMAIL_2> and ann@example.com"


def test_issued_numbers_are_the_smallest_free_ones() -> None:
    # max+1 would issue <EMAIL_1000000000000>, which restoring (12 digits at most) cannot read back
    text = "note <EMAIL_999999999999> and <EMAIL_2>; mail anna@example.org, bob@example.org, cc@example.org"
    redacted = REDACTOR.redact(pb.GenerateRequest(prompt=text))
    assert redacted is not None
    assert redacted.request.prompt == "note <EMAIL_999999999999> and <EMAIL_2>; mail <EMAIL_1>, <EMAIL_3>, <EMAIL_4>"
    assert redacted.restore(pb.GenerateResponse(text=redacted.request.prompt)).text == text


def test_restore_accepts_what_a_model_does_to_a_token_but_not_more() -> None:
    redacted = REDACTOR.redact(pb.GenerateRequest(prompt="mail ann@example.com, SSN 536-22-8726"))
    assert redacted is not None
    assert redacted.request.prompt == "mail <EMAIL_1>, SSN <NATIONAL_ID_1>"
    answer = pb.GenerateResponse(text="<email_1> < EMAIL 1 > <Email-1> <national id 1> <NATIONALID_1> EMAIL_1 <EMAIL_2> &lt;EMAIL_1&gt;")
    assert redacted.restore(answer).text == (
        "ann@example.com ann@example.com ann@example.com 536-22-8726 536-22-8726 EMAIL_1 <EMAIL_2> &lt;EMAIL_1&gt;"
    )


def test_round_trip_through_a_generate_request() -> None:
    request = pb.GenerateRequest(
        model="remote", prompt="fallback for ann@example.com", max_tokens=64, labels=["private"], stop=["+44 20 7946 0958"],
        messages=[
            pb.ChatMessage(role="system", content="You answer from notes."),
            pb.ChatMessage(role="user", content="Pay NL91 ABNA 0417 1643 00 and call (212) 555-0123 or 06 12345678."),
            pb.ChatMessage(role="user", content="Card 4111 1111 1111 1111, ship to SW1A 2AA; ann@example.com again."),
        ],
    )
    redacted = REDACTOR.redact(request)
    assert redacted is not None
    sent = redacted.request
    assert "ann@example.com" not in str(sent) and "4111" not in str(sent) and "NL91" not in str(sent)
    assert sent.messages[0].content == "You answer from notes." and sent.labels == ["private"] and sent.max_tokens == 64
    assert redacted.counts == {"email": 2, "phone": 3, "iban": 1, "card": 1, "postcode": 1}
    assert redacted.restore(sent) == request  # every string field, back as it was


def test_round_trip_through_embed_texts_and_map_values() -> None:
    request = pb.EmbedRequest(texts=["plain", "ann@example.com wrote", "", "SSN 536-22-8726"])
    redacted = REDACTOR.redact(request)
    assert redacted is not None
    assert list(redacted.request.texts) == ["plain", "<EMAIL_1> wrote", "", "SSN <NATIONAL_ID_1>"]
    assert redacted.restore(redacted.request) == request

    nested = struct_pb2.Struct()
    nested.update({"who": "ann@example.com", "inner": {"tel": "+44 20 7946 0958", "n": 3}, "list": ["bob@example.com"]})
    redacted_struct = REDACTOR.redact(nested)
    assert redacted_struct is not None
    sent = redacted_struct.request
    assert sent["inner"]["tel"] == "<PHONE_1>" and {sent["who"], sent["list"][0]} == {"<EMAIL_1>", "<EMAIL_2>"}
    assert redacted_struct.restore(redacted_struct.request) == nested


def _stream(redacted_request: str, parts: list[str]) -> str:
    redacted = REDACTOR.redact(pb.GenerateStreamRequest(prompt=redacted_request))
    assert redacted is not None
    restorer = redacted.stream()
    out = [restorer.feed(pb.GenerateStreamResponse(delta=part)).delta for part in parts]
    out.append(restorer.finish(pb.GenerateStreamResponse(done=True, finish_reason="stop")).delta)
    return "|".join(out)


def test_stream_placeholder_split_across_two_messages() -> None:
    assert _stream("mail ann@example.com", ["Write to <EMA", "IL_1> today"]) == "Write to |ann@example.com today|"


def test_stream_placeholder_split_across_three_messages() -> None:
    got = _stream("call +44 20 7946 0958", ["Ring <", "PHONE", "_1> now <b>"])
    assert got == "Ring ||+44 20 7946 0958 now <b>|"


def test_stream_releases_what_cannot_become_a_placeholder() -> None:
    # "<b" names no kind this request issued; "<EMAIL_1" could grow into "<EMAIL_12>", so it waits
    assert _stream("mail ann@example.com", ["a <b", "> c <EMAIL_1", "> d"]) == "a <b|> c |ann@example.com d|"
    # a fragment still held when the stream ends is the model's own text, given back verbatim
    assert _stream("mail ann@example.com", ["ends with <EMA"]) == "ends with |<EMA"


def test_patterns_from_config() -> None:
    redactor = Redactor(kinds=["email"], patterns={"employee_id": r"EMP-\d{6}", "case": r"\bCASE[0-9]{4}\b"})
    text = "EMP-123456 on CASE2024 mailed ann@example.com from +44 20 7946 0958"
    redacted = redactor.redact(pb.GenerateRequest(prompt=text))
    assert redacted is not None
    assert redacted.request.prompt == "<EMPLOYEE_ID_1> on <CASE_1> mailed <EMAIL_1> from +44 20 7946 0958"  # phones not asked for
    assert redacted.counts == {"employee_id": 1, "case": 1, "email": 1}
    assert redacted.restore(redacted.request).prompt == text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"patterns": {"ticket": r"T-(\d+"}}, "privacy pattern 'ticket': bad regular expression"),
    ({"patterns": {"ticket 2": r"T-\d+"}}, "privacy pattern 'ticket 2': a name is letters and underscores"),
    ({"patterns": {"Email": r"x"}}, "privacy pattern 'Email': its placeholder would be read as 'email'"),
    ({"kinds": ["emails"]}, "privacy kinds: unknown ['emails']"),
    ({"regions": ["XX"]}, "privacy regions: unknown ['XX']"),
])
def test_bad_config_is_a_value_error_naming_it(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:  # noqa: PT011 -- the message is checked below, from its start
        Redactor(**kwargs)
    assert str(err.value).startswith(message)


def test_regions_choose_the_national_formats() -> None:
    dutch = Redactor(regions=["NL"])
    assert dutch.find("SW1A 2AA, SSN 536-22-8726, (212) 555-0123") == []
    assert [s.kind for s in dutch.find("BSN 123456782, 06 12345678, +44 20 7946 0958")] == ["national_id", "phone", "phone"]


class _CountingMatcher:
    """phonenumbers.PhoneNumberMatcher, counting its calls and the longest text it was given."""

    def __init__(self, real: type) -> None:
        self.real, self.calls, self.longest = real, 0, 0

    def __call__(self, text: str, *args: object, **kwargs: object) -> object:
        self.calls += 1
        self.longest = max(self.longest, len(text))
        return self.real(text, *args, **kwargs)


@pytest.fixture
def matcher(monkeypatch: pytest.MonkeyPatch) -> _CountingMatcher:
    counting = _CountingMatcher(redaction.phonenumbers.PhoneNumberMatcher)
    monkeypatch.setattr(redaction.phonenumbers, "PhoneNumberMatcher", counting)
    return counting


@pytest.mark.parametrize("text", [
    "1 " * 20000,  # one 40 KB run: was 9 s, the matcher given the whole run once per region
    "536-22-8726 " * 2000,
    "1.2 " * 5000,
    " ".join(str(i * 7919 % 10) for i in range(20000)),  # no window repeats: no cache to help
])
def test_phone_work_is_bounded_whatever_the_text(matcher: _CountingMatcher, text: str) -> None:
    Redactor().find(text)
    assert matcher.longest <= redaction._MAX_RUN + 2 * redaction._PHONE_CONTEXT  # bounded windows only
    assert matcher.calls <= redaction._PHONE_BUDGET // redaction._COST_MATCHER


def test_past_the_phone_budget_numbers_are_still_redacted(matcher: _CountingMatcher) -> None:
    phones = [f"+44 20 7946 {i:04d}" for i in range(1500)] + [f"06 1234 {i:04d}" for i in range(1500)]
    text = "".join(f"call {phone}, " for phone in phones)
    found = [text[s.start:s.end] for s in Redactor().find(text)]
    assert matcher.calls <= redaction._PHONE_BUDGET // redaction._COST_MATCHER
    assert found == phones  # the matcher's, then the fallback's


@pytest.mark.parametrize(("text", "phones"), [
    # runs longer than a window: looked at in windows, each number whole in one of them
    ("+44 20 7946 0958 +31 6 12345678 (212) 555-0123 +44 20 7946 0959",
     ["+44 20 7946 0958", "+31 6 12345678", "+44 20 7946 0959"]),
    ("tel. 020 7946 0958 - 020 7946 0959 - 020 7946 0950 - 06 12345678",
     ["020 7946 0958", "020 7946 0959", "020 7946 0950", "06 12345678"]),
])
def test_phone_numbers_in_a_long_run(text: str, phones: list[str]) -> None:
    assert [text[s.start:s.end] for s in REDACTOR.find(text)] == phones


# random text, and random text stitched from the tables above, so personal data, near misses and
# placeholder-shaped text meet in every order
FRAGMENTS = [value for _, _, value in POSITIVES] + NEAR_MISSES + ["<", ">", "<EMAIL_", "_1>", " ", "\n", "BSN "]
TEXTS = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=12).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(TEXTS, min_size=1, max_size=3))
def test_redact_then_restore_never_changes_text(texts: list[str]) -> None:
    request = pb.EmbedRequest(texts=texts)
    redacted = REDACTOR.redact(request)
    if redacted is None:
        assert all(REDACTOR.find(text) == [] for text in texts)
        return
    for sent in redacted.request.texts:
        assert REDACTOR.find(sent) == []  # nothing detectable is left in what is sent
    assert redacted.restore(redacted.request) == request


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4))
def test_streamed_restore_equals_whole_restore(text: str, cuts: list[int]) -> None:
    redacted = REDACTOR.redact(pb.GenerateStreamRequest(prompt=text))
    if redacted is None:
        return
    sent = redacted.request.prompt
    bounds = sorted({min(c, len(sent)) for c in cuts})
    parts = [sent[a:b] for a, b in zip([0, *bounds], [*bounds, len(sent)], strict=True)]
    restorer = redacted.stream()
    streamed = "".join(restorer.feed(pb.GenerateStreamResponse(delta=p)).delta for p in parts)
    streamed += restorer.finish(pb.GenerateStreamResponse(done=True)).delta
    assert streamed == text
