"""What a hostile client sends a JSON-RPC listener (MCP over HTTP, A2A) as a body, and what the
kernel's one body reader must answer: 400, JSON-RPC's parse error, one log line, no traceback."""

from __future__ import annotations

import logging


def hostile_bodies(method: str) -> dict[str, bytes]:
    """Bodies Python's JSON parser refuses or the JSON spec does not allow, as a call of `method`."""
    call = f'"jsonrpc": "2.0", "method": "{method}", "params": {{}}'.encode()
    return {
        "a 5,000-digit integer": b'{"id": ' + b"9" * 5000 + b", " + call + b"}",
        "100k-deep nesting": b"[" * 100_000 + b"]" * 100_000,
        "invalid UTF-8": b'{"jsonrpc": "2.0", "id": 1, "method": "caf\xe9 \xff"}',
        "a NaN literal": b'{"id": NaN, ' + call + b"}",
        "an Infinity literal": b'{"id": 1, "jsonrpc": "2.0", "method": "' + method.encode() + b'", "params": {"x": -Infinity}}',
    }


def assert_refused_as_bad_json(reply, records: list[logging.LogRecord]) -> None:
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == -32700 and "JSON" in error["message"] and len(error["message"]) < 400, error
    assert [r.getMessage() for r in records if r.exc_info or "Traceback" in r.getMessage()] == []
    refused = [r.getMessage() for r in records if "http.bad_body" in r.getMessage()]
    assert len(refused) == 1, refused
