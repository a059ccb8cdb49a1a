"""What leaves this machine for a remote provider: the request with personal data replaced by
placeholders (redaction.py), and the way back, where the answer gets the values again. A local
provider gets the request as it is. The call records how many spans of each kind were taken out
(`Call.redacted`: the audit log's entry says so), never the values."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..call import Call
from ..registry import Provider
from .redaction import DEFAULT_REGIONS, Redacted, Redactor, StreamRestorer


class Outbound:
    """One attempt's request as its provider gets it, and its answer as the caller gets it."""

    __slots__ = ("_held", "_redacted", "_stream", "request")

    def __init__(self, request: Any, redacted: Redacted[Any] | None = None):
        self.request = request if redacted is None else redacted.request
        self._redacted = redacted
        self._stream: StreamRestorer | None = None
        self._held: Any = None  # a redacted stream's latest message, passed on when the next comes

    def restore(self, response: Any) -> Any:
        """A unary answer with the values back."""
        return response if self._redacted is None else self._redacted.restore(response)

    def feed(self, message: Any) -> Any | None:
        """A streamed message with the values back. A redacted stream's messages are passed on one
        late (None, the first time): the last one must also take what is still held back at the
        stream's end (a placeholder's start that never became one), and it is the last message
        that says how the stream ended (GenerateStream's `done`)."""
        if self._redacted is None:
            return message
        self._stream = self._stream or self._redacted.stream()
        ready, self._held = self._held, message
        return None if ready is None else self._stream.feed(ready)

    def last(self) -> Any | None:
        """After the provider's last message: that message, finished (None when there is none left)."""
        held, self._held = self._held, None
        return None if held is None or self._stream is None else self._stream.finish(held)


class Redaction:
    """The [privacy] settings, compiled once: which requests are redacted, and how."""

    def __init__(self, redact: bool = True, kinds: Iterable[str] | None = None, patterns: Iterable[str] = (),
                 regions: Sequence[str] = (), services: Iterable[str] = ()):
        """`patterns`: "NAME=regular expression" each; ValueError saying which is wrong. Requests of
        `services` only are redacted (those of models: a model answers from the request alone; a
        remote kernel serving memories must store what it is sent as it is)."""
        self.services = frozenset(services)
        named = {}
        for pattern in patterns:
            name, sep, regex = pattern.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"privacy.patterns: {pattern!r} is not NAME=regular expression")
            named[name.strip()] = regex
        kinds = [*(kinds if kinds is not None else ()), *named] if kinds is not None else None
        self.redactor = Redactor(kinds, named, regions or DEFAULT_REGIONS) if redact else None

    @classmethod
    def of(cls, privacy: Any, error: Callable[[str, str], Exception]) -> Redaction:
        """From the kernel's [privacy] section; a mistake is `error(message, key)` (a ConfigError
        naming the file and line)."""
        try:
            return cls(privacy.redact, privacy.kinds, privacy.patterns, privacy.regions, privacy.services)
        except ValueError as exc:
            raise error(str(exc), "patterns") from None

    async def outbound(self, provider: Provider, request: Any, call: Call) -> Outbound:
        """The request as `provider` gets it: redacted when it is remote and serves one of
        `services`, on a worker thread (a long prompt is milliseconds of regular expressions: the
        kernel's loop serves other calls meanwhile)."""
        if provider.local or self.redactor is None or request is None or provider.service.full_name not in self.services:
            return Outbound(request)
        redacted = await asyncio.to_thread(self.redactor.redact, request)
        if redacted is not None:
            call.redacted = dict(redacted.counts)
        return Outbound(request, redacted)
