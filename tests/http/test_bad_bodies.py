"""What a hostile client sends as a body: numbers too long for Python's int, nesting too deep for
its parser, bytes that are not UTF-8, NaN and Infinity (not JSON). Each is the client's error, a
400 that says what to fix, logged as one line (no traceback), and the kernel goes on serving."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from ..conftest import plugin_of

BASE = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp"]\n'
STORE = "/v1/cortex.memories.v1.MemoryService/Store"
SEARCH = "/v1/cortex.memories.v1.MemoryService/Search"

HOSTILE = {
    "a 5,000-digit integer": (b'{"query": "x", "top_k": ' + b"9" * 5000 + b"}", "digits"),
    "a 400-digit integer for a float field": (b'{"query": "x", "min_score": ' + b"9" * 400 + b"}", "digits"),
    "100k-deep nesting": (b"[" * 100_000 + b"]" * 100_000, "deep"),
    "invalid UTF-8": (b'{"query": "caf\xe9 \xff\xfe"}', "UTF-8"),
    "a NaN literal": (b'{"query": "x", "min_score": NaN}', "NaN"),
    "an Infinity literal": (b'{"query": "x", "min_score": -Infinity}', "Infinity"),
}


def hostile_lines(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_a_body_the_parser_refuses_is_a_400_with_one_log_line(start_kernel, caplog, what):
    body, words = HOSTILE[what]
    _, kt = start_kernel(BASE)
    client = httpx.Client(base_url=f"http://{plugin_of(kt, 'http').address}", timeout=60)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        reply = client.post(SEARCH, content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT" and words.lower() in error["message"].lower(), error
    assert len(error["message"]) < 400  # a sentence, not the body echoed back
    assert hostile_lines(caplog.records) == []
    refused = [r.getMessage() for r in caplog.records if "http.bad_body" in r.getMessage()]
    assert len(refused) == 1 and "\n" not in refused[0].strip(), refused
    # and the kernel still serves
    stored = client.post(STORE, content=json.dumps({"text": "still here"}), headers={"Content-Type": "application/json"})
    assert stored.status_code == 200, stored.text
