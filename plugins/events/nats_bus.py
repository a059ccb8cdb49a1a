"""The event log on NATS JetStream, shared by every kernel configured with the same stream.

- One stream (`stream`, default CORTEX_EVENTS) on the subjects `cortex.events.>`, file storage:
  JetStream acknowledges a publish once it is stored, so an acknowledged event is kept.
- An event of type `memory.stored` is published on `cortex.events.memory.stored` (a type whose
  dots would make an empty subject token goes on `cortex.events._`), its fields as JSON.
- Publish is de-duplicated on the event's namespace, source and id: the message id is their
  SHA-256 (the owner's namespace left out, as before namespaces), so JetStream answers a repeat
  within its duplicate window (`duplicate_window_seconds`, a day by default) with the first one's
  position, as the SQLite log does for ever.
- Positions are the stream's sequence numbers. Reading after a position fetches the next messages
  by subject (a topic that is one exact type, or `prefix.*`, is asked of the server by subject;
  other globs are matched here, as fnmatch does for the SQLite log's GLOB), in order; so is the
  namespace of a subscriber that sees only its own (a message stored before events had a
  namespace is the owner's).
- Every kernel follows the stream's subjects with a plain NATS subscription, so an event appended
  through another kernel wakes this kernel's subscribers at once.

The server must be on loopback, or reached over TLS (`tls://`, `nats_tls_ca`) with a credential
(`nats_token_env`): the same rule as every listener and remote provider of the kernel.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import os
import re
import ssl
from collections.abc import Callable
from urllib.parse import urlparse

import structlog

from .bus import OWNER_NAMESPACE, BusUnavailable, EventBus, StoredEvent

log = structlog.get_logger("cortex.events.nats")

PREFIX = "cortex.events"
MAX_SEQUENCE = 2**63 - 1
TOKEN = re.compile(r"^[A-Za-z0-9_:/-]+$")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
FIELDS = frozenset(StoredEvent.__dataclass_fields__) - {"position"}


def message_id(event: StoredEvent) -> str:
    """The JetStream de-duplication id: (namespace, source, id); the owner's namespace is left out,
    so that a repeat of an event published before namespaces is still one."""
    key = f"{event.source}\0{event.id}"
    if event.namespace != OWNER_NAMESPACE:
        key = f"{event.namespace}\0{key}"
    return hashlib.sha256(key.encode()).hexdigest()


def subject_of(event_type: str) -> str:
    tokens = event_type.split(".")
    return f"{PREFIX}.{event_type}" if all(TOKEN.match(t) for t in tokens) else f"{PREFIX}._"


def filter_of(topics: list[str]) -> str:
    """The one subject the server can filter by for `topics` (all of them: `cortex.events.>`)."""
    if len(topics) == 1:
        topic = topics[0]
        if not any(c in topic for c in "*?[") and subject_of(topic) != f"{PREFIX}._":
            return subject_of(topic)
        if topic.endswith(".*") and not any(c in topic[:-2] for c in "*?[") and subject_of(topic[:-2]) != f"{PREFIX}._":
            return f"{subject_of(topic[:-2])}.>"  # fnmatch's * crosses dots, as > does
    return f"{PREFIX}.>"


def check_url(url: str, tls_ca: str, token: str) -> None:
    """ValueError unless `url` is on loopback, or TLS with a credential."""
    parsed = urlparse(url)
    if parsed.scheme not in ("nats", "tls"):
        raise ValueError(f"[plugins.events] nats_url {url!r}: use nats://host:port (loopback) or tls://host:port")
    if parsed.hostname in LOOPBACK:
        return
    if not (parsed.scheme == "tls" or tls_ca) or not token:
        raise ValueError(f"[plugins.events] nats_url {url!r} is beyond loopback: use tls:// (nats_tls_ca) and a token "
                         "(nats_token_env), as for every connection that leaves the machine")


class NatsEventBus(EventBus):
    def __init__(self, url: str, stream: str = "CORTEX_EVENTS", duplicate_window_seconds: float = 86400.0,
                 tls_ca: str = "", token: str = "", timeout: float = 5.0):
        check_url(url, tls_ca, token)
        self.url, self.stream, self.window, self.tls_ca, self.token = url, stream, duplicate_window_seconds, tls_ca, token
        self.timeout = timeout
        self._nc = None
        self._js = None

    async def start(self, appended_elsewhere: Callable[[], None]) -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        options = {"connect_timeout": self.timeout, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
                   "name": f"cortex-events:{os.getpid()}"}
        if self.tls_ca:
            options["tls"] = ssl.create_default_context(cafile=self.tls_ca)
        if self.token:
            options["token"] = self.token
        try:
            self._nc = await nats.connect(self.url, **options)
        except Exception as exc:  # noqa: BLE001 - the plugin reports it broken, with why
            raise BusUnavailable(f"cannot connect to NATS at {self.url}: {exc!r}") from None
        self._js = self._nc.jetstream(timeout=self.timeout)
        config = StreamConfig(name=self.stream, subjects=[f"{PREFIX}.>"], storage=StorageType.FILE,
                              duplicate_window=self.window)
        try:
            await self._js.add_stream(config)
        except BadRequestError:  # it exists (made by another kernel, maybe with other settings): use it
            await self._js.stream_info(self.stream)

        async def woken(_msg) -> None:
            appended_elsewhere()

        await self._nc.subscribe(f"{PREFIX}.>", cb=woken)
        log.info("events.nats_ready", url=self.url, stream=self.stream)

    def _connected(self) -> None:
        """Fail at once while the client reconnects (it would hold a publish in its buffer)."""
        if self._nc is None or not self._nc.is_connected:
            raise BusUnavailable(f"not connected to NATS at {self.url} (reconnecting); retry")

    async def append(self, event: StoredEvent) -> tuple[int, bool]:
        self._connected()
        body = {k: v for k, v in event.__dict__.items() if k != "position"}
        msg_id = message_id(event)
        try:
            async with asyncio.timeout(self.timeout):
                ack = await self._js.publish(subject_of(event.type), json.dumps(body, separators=(",", ":")).encode(),
                                             timeout=self.timeout, headers={"Nats-Msg-Id": msg_id})
        except Exception as exc:  # noqa: BLE001 - nats-py raises many kinds; all mean "not stored"
            raise BusUnavailable(f"NATS did not store the event: {exc!r}") from None
        return ack.seq, bool(ack.duplicate)

    async def read_after(self, position: int, topics: list[str], limit: int, namespace: str | None = None) -> list[StoredEvent]:
        from nats.js.errors import NotFoundError

        subject, found = filter_of(topics), []
        if position >= MAX_SEQUENCE:  # past any event there can be
            return []
        seq = position + 1
        self._connected()
        while len(found) < limit:
            try:
                async with asyncio.timeout(self.timeout):
                    msg = await self._js.get_msg(self.stream, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            except Exception as exc:  # noqa: BLE001
                raise BusUnavailable(f"NATS did not answer: {exc!r}") from None
            body = json.loads(msg.data)  # fields a later version adds are left out, not fatal
            event = StoredEvent(position=msg.seq, **{k: v for k, v in body.items() if k in FIELDS})
            if (namespace is None or event.namespace == namespace) and (
                    not topics or any(fnmatch.fnmatchcase(event.type, t) for t in topics)):
                found.append(event)
            seq = msg.seq + 1
        return found

    async def latest_position(self) -> int:
        self._connected()
        try:
            return (await self._js.stream_info(self.stream)).state.last_seq
        except Exception as exc:  # noqa: BLE001
            raise BusUnavailable(f"NATS did not answer: {exc!r}") from None

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None
