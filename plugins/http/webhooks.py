"""Outgoing webhooks: events whose type matches a webhook's topics are POSTed to its URL as a
CloudEvents JSON document, signed with HMAC-SHA256 over the body (`X-Cortex-Signature:
sha256=<hex>`), retried with exponential backoff. A delivery that fails every attempt is logged,
counted and appended to `failures.jsonl`; the webhook moves on (one bad event must not block
the rest). Each webhook's last delivered position is saved, so a restart resumes where it left
off: delivery is at least once."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog

from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc
from cortex.kernel import check_settings
from cortex.kernel.sdk import to_json

log = structlog.get_logger("cortex.http.webhooks")
WEBHOOK_SETTINGS = {"name", "url", "topics", "secret", "secret_env", "attempts", "backoff_seconds", "timeout_seconds"}


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    topics: tuple[str, ...]
    secret: bytes
    attempts: int = 5
    backoff_seconds: float = 0.5
    timeout_seconds: float = 10.0

    @classmethod
    def from_config(cls, index: int, raw: dict[str, Any], env: dict[str, str]) -> Webhook:
        check_settings(raw, WEBHOOK_SETTINGS, "http.webhook")
        where = f"[[plugins.http.webhook]] #{index + 1}"
        url = str(raw.get("url", ""))
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: url must be an http:// or https:// URL, not {url!r}")
        topics = raw.get("topics", ["*"])
        if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t for t in topics):
            raise ValueError(f"{where}: topics must be a non-empty list of globs, e.g. [\"memory.*\"]")
        secret = raw.get("secret") or (env.get(raw["secret_env"], "") if raw.get("secret_env") else "")
        if not secret:
            raise ValueError(f"{where}: give a signing secret (secret_env = \"NAME_OF_VARIABLE\", or secret)")
        attempts = int(raw.get("attempts", 5))
        if not 1 <= attempts <= 20:
            raise ValueError(f"{where}: attempts must be between 1 and 20")
        return cls(
            name=str(raw.get("name") or f"webhook-{index + 1}"), url=url, topics=tuple(topics), secret=secret.encode(),
            attempts=attempts, backoff_seconds=float(raw.get("backoff_seconds", 0.5)),
            timeout_seconds=float(raw.get("timeout_seconds", 10.0)),
        )

    def wants(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, t) for t in self.topics)


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def cloudevent(event: events_pb2.Event) -> dict[str, Any]:
    doc = {k: v for k, v in to_json(event).items() if k not in ("data", "position")}
    doc["specversion"] = "1.0"
    doc["cortexposition"] = str(event.position)
    if event.datacontenttype == "application/json":
        try:
            doc["data"] = json.loads(event.data)
        except json.JSONDecodeError:
            doc["data"] = event.data
    elif event.data:
        doc["data"] = event.data
    return doc


class WebhookRunner:
    def __init__(self, hooks: list[Webhook], channel: Any, folder: Path, metrics: Any):
        self.hooks, self.channel, self.folder, self.metrics = hooks, channel, folder, metrics
        self._tasks: list[asyncio.Task] = []
        self._client: Any = None

    def start(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(follow_redirects=False)
        self._tasks = [asyncio.create_task(self._run(hook), name=f"cortex-webhook-{hook.name}") for hook in self.hooks]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _position_file(self, hook: Webhook) -> Path:
        return self.folder / f"webhook-{hashlib.sha256(hook.name.encode()).hexdigest()[:16]}.position"

    def _load_position(self, hook: Webhook) -> int | None:
        try:
            return int(self._position_file(hook).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _save_position(self, hook: Webhook, position: int) -> None:
        path = self._position_file(hook)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(position))
        os.replace(tmp, path)

    async def _run(self, hook: Webhook) -> None:
        stub = events_pb2_grpc.EventServiceStub(self.channel)
        while True:
            position = self._load_position(hook)
            request = events_pb2.SubscribeRequest(topics=list(hook.topics), after_position=position or 0,
                                                  from_latest=position is None)
            try:
                async for message in stub.Subscribe(request):
                    event = message.event
                    await self._deliver(hook, event)
                    self._save_position(hook, event.position)
            except grpc.RpcError as exc:
                log.warning("webhook.subscribe_failed", webhook=hook.name, code=exc.code().name, details=exc.details())
            await asyncio.sleep(2.0)  # the bus restarts, or events are not served yet

    async def _deliver(self, hook: Webhook, event: events_pb2.Event) -> bool:
        body = json.dumps(cloudevent(event), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/cloudevents+json",
            "X-Cortex-Signature": sign(hook.secret, body),
            "X-Cortex-Event-Id": event.id,
            "X-Cortex-Event-Type": event.type,
        }
        error = ""
        for attempt in range(hook.attempts):
            try:
                reply = await self._client.post(hook.url, content=body, headers=headers, timeout=hook.timeout_seconds)
                if 200 <= reply.status_code < 300:
                    return True
                error = f"HTTP {reply.status_code}"
                if 400 <= reply.status_code < 500 and reply.status_code not in (408, 429):
                    break  # the receiver refuses this event: retrying will not help
            except Exception as exc:  # noqa: BLE001 - network errors of every kind are retried
                error = repr(exc)
            if attempt + 1 < hook.attempts:
                await asyncio.sleep(hook.backoff_seconds * 2**attempt)
        self._record_failure(hook, event, error)
        return False

    def _record_failure(self, hook: Webhook, event: events_pb2.Event, error: str) -> None:
        log.error("webhook.delivery_failed", webhook=hook.name, url=hook.url, event_id=event.id, error=error)
        self.metrics.webhook_failures.labels(hook.url).inc()
        line = {"time": time.time(), "webhook": hook.name, "url": hook.url, "event_id": event.id,
                "event_type": event.type, "position": event.position, "error": error}
        with (self.folder / "failures.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
