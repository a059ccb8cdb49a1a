"""Loopback HTTP servers that speak just enough of two real APIs for the official clients:

- FakeOpenAI stands in for an OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, LM
  Studio): GET /v1/models, POST /v1/chat/completions (JSON or SSE stream), POST /v1/embeddings.
- FakeOllama stands in for an Ollama server: GET /api/tags, POST /api/chat (JSON or NDJSON
  stream), POST /api/embed.

Each records every request it receives (`requests`), so a test can prove that none arrived.
Replies are deterministic: the completion is "echo: <last user message>".
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def fake_vector(text: str, dims: int = 8) -> list[float]:
    raw = [float((sum(map(ord, text)) * (i + 1)) % 17 + 1) for i in range(dims)]
    norm = sum(x * x for x in raw) ** 0.5
    return [x / norm for x in raw]


class _Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.fail_with: int | None = None  # answer every request with this HTTP status
        self.answer: Any = None  # answer(prompt) -> text, instead of echoing the prompt
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}") if length else {}

            def _handle(self, method: str) -> None:
                body = self._body() if method == "POST" else {}
                owner.requests.append((method, self.path, body))
                if owner.fail_with:
                    self._json({"error": {"message": "failing on purpose", "type": "server_error"}}, owner.fail_with)
                    return
                owner.route(self, method, self.path, body)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def _json(self, value: Any, status: int = 200) -> None:
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, content_type: str, pieces: list[bytes]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in pieces:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def route(self, handler: Any, method: str, path: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def reply_to(messages: list[dict[str, Any]]) -> str:
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        return f"echo: {users[-1] if users else ''}"


class FakeOpenAI(_Server):
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def route(self, h, method, path, body):
        if method == "GET" and path == "/v1/models":
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in ("fake-gpt", "fake-embed")]
            return h._json({"object": "list", "data": models})
        if method == "POST" and path == "/v1/chat/completions":
            messages = body.get("messages", [])
            text = self.answer(messages[-1]["content"]) if self.answer else self.reply_to(messages)
            words = text.split(" ")
            usage = {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}
            if not body.get("stream"):
                return h._json({
                    "id": "c1", "object": "chat.completion", "created": 0, "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": usage,
                })
            def chunk(delta: dict, finish: str | None = None, usage_: dict | None = None) -> bytes:
                value = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body.get("model"),
                         "choices": [] if usage_ else [{"index": 0, "delta": delta, "finish_reason": finish}]}
                if usage_:
                    value["usage"] = usage_
                return f"data: {json.dumps(value)}\n\n".encode()
            pieces = [chunk({"role": "assistant", "content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
            pieces += [chunk({}, "stop"), chunk({}, None, usage), b"data: [DONE]\n\n"]
            return h._stream("text/event-stream", pieces)
        if method == "POST" and path == "/v1/embeddings":
            inputs = body.get("input", [])
            inputs = [inputs] if isinstance(inputs, str) else inputs
            data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(inputs)]
            return h._json({"object": "list", "data": data, "model": body.get("model"), "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        h._json({"error": {"message": f"no route {method} {path}"}}, 404)


class FakeOllama(_Server):
    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, h, method, path, body):
        if method == "GET" and path == "/api/tags":
            models = [{"name": m, "model": m, "modified_at": "2026-01-01T00:00:00Z", "size": 1, "digest": "0", "details": {}}
                      for m in ("llama3.2:latest", "all-minilm:latest")]
            return h._json({"models": models})
        if method == "POST" and path == "/api/chat":
            text = self.reply_to(body.get("messages", []))
            words = text.split(" ")
            final = {"model": body.get("model"), "created_at": "2026-01-01T00:00:00Z", "done": True,
                     "done_reason": "stop", "prompt_eval_count": 3, "eval_count": len(words)}
            if body.get("stream") is False:
                return h._json({**final, "message": {"role": "assistant", "content": text}})
            lines = [json.dumps({"model": body.get("model"), "created_at": "2026-01-01T00:00:00Z", "done": False,
                                 "message": {"role": "assistant", "content": w if i == 0 else " " + w}}).encode() + b"\n"
                     for i, w in enumerate(words)]
            lines.append(json.dumps({**final, "message": {"role": "assistant", "content": ""}}).encode() + b"\n")
            return h._stream("application/x-ndjson", lines)
        if method == "POST" and path == "/api/embed":
            inputs = body.get("input", [])
            inputs = [inputs] if isinstance(inputs, str) else inputs
            return h._json({"model": body.get("model"), "embeddings": [fake_vector(t) for t in inputs]})
        h._json({"error": f"no route {method} {path}"}, 404)


class ScriptedOpenAI(FakeOpenAI):
    """FakeOpenAI answering chat completions from a script, for a server in a process of its own:
    each entry {"when": text, "cite": text, "reply": "... [{n}]"} answers a request whose last
    message holds `when`, with {n} the number of the "[n] ..." note line holding `cite`; no entry
    matches: "I don't know."; an entry with "echo": true says the request's last message back. Every
    request is appended to `record` as a JSON line."""

    def __init__(self, script: list[dict[str, str]], record: str) -> None:
        super().__init__()
        self.script, self.record = script, record
        self.answer = self.scripted

    def scripted(self, prompt: str) -> str:
        for entry in self.script:
            if entry["when"] in prompt and entry.get("echo"):  # {"when": "", "echo": true}: say back what came
                return f"echo: {prompt}"
            if entry["when"] in prompt:
                cited = next((line.split("]", 1)[0].lstrip("[") for line in prompt.splitlines()
                              if line.startswith("[") and entry.get("cite", "\0") in line), "")
                return entry["reply"].replace("{n}", cited)
        return "I don't know."

    def route(self, h, method, path, body):
        with open(self.record, "a", encoding="utf-8") as out:
            out.write(json.dumps({"method": method, "path": path, "body": body}) + "\n")
        super().route(h, method, path, body)


@contextlib.contextmanager
def scripted_openai(folder: Path, script: list[dict[str, Any]]) -> Iterator[tuple[str, Path]]:
    """A ScriptedOpenAI in a process of its own (a kernel's provider calls it as it would a real
    endpoint): (its base URL, the file every request it receives is appended to)."""
    script_file, record = folder / "script.json", folder / "requests.jsonl"
    script_file.write_text(json.dumps(script))
    record.touch()
    process = subprocess.Popen([sys.executable, "-m", "tests.models.fake_servers", str(script_file), str(record)],
                               cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{int(process.stdout.readline())}/v1", record
    finally:
        process.kill()
        process.wait(10)


if __name__ == "__main__":  # python -m tests.models.fake_servers SCRIPT.json RECORD.jsonl: prints the port
    script_file, record_file = sys.argv[1], sys.argv[2]
    server = ScriptedOpenAI(json.loads(open(script_file, encoding="utf-8").read()), record_file)
    print(server.port, flush=True)
    server.httpd.serve_forever()
