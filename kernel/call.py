"""What the router knows about one call, what it decided, and how it ended.

These are the values hooks receive (`cortex_authorize(call)`, `cortex_observe(call, outcome)`),
so they are plain dataclasses, stable across plugins.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from .method import MethodInfo

PRINCIPAL_HEADER = "x-cortex-principal"
# A caller's own call id, sent in x-cortex-call-id, is kept as the call's parent (a correlation id
# across kernels); the kernel always makes its own id, returned in the trailers with the parent.
CALL_ID_HEADER = "x-cortex-call-id"
PARENT_CALL_ID_HEADER = "x-cortex-parent-call-id"
PROVIDER_HEADER = "x-cortex-provider"
# data labels a caller puts on its call ("private"): nested calls made while serving it carry them too
LABELS_HEADER = "x-cortex-labels"
ROUTE_HEADER = "x-cortex-route"
# the approval a call waits for (a trailer of its FAILED_PRECONDITION), and that its retry presents
APPROVAL_HEADER = "x-cortex-approval"

# Call ids: a per-process random prefix and a counter; cheap, unique, and sortable within a run.
_PREFIX = os.urandom(4).hex()
_COUNTER = itertools.count(1)


def new_call_id() -> str:
    return f"{_PREFIX}-{next(_COUNTER):08x}"


@dataclass(frozen=True)
class ProviderInfo:
    """The provider a call is about to reach (what authorize hooks judge)."""

    name: str
    plugin: str
    endpoint: str  # "" for an in-process provider
    local: bool


@dataclass
class Decision:
    """An authorize hook's answer. Any deny wins; reasons of every answer are kept."""

    allow: bool
    reasons: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # ids of the rules that matched, if any
    by: str = ""  # the plugin that answered; the combiner fills it
    # a refusal that is not about who asks: where the data may go (FAILED_PRECONDITION), or a call
    # that waits for a person's approval (`approval`: the whole call waits, no other provider is tried)
    code: grpc.StatusCode | None = None
    approval: str = ""

    @classmethod
    def permit(cls, reason: str = "", rule: str = "") -> Decision:
        return cls(True, [reason] if reason else [], [rule] if rule else [])

    @classmethod
    def deny(cls, reason: str, rule: str = "") -> Decision:
        return cls(False, [reason], [rule] if rule else [])

    @classmethod
    def combine(cls, answers: list[Decision]) -> Decision:
        denies = [a for a in answers if not a.allow]
        chosen = denies or answers
        return cls(
            allow=not denies,
            reasons=[f"{a.by}: {r}" if a.by else r for a in chosen for r in a.reasons],
            rules=[rule for a in chosen for rule in a.rules],
            by=",".join(a.by for a in chosen if a.by),
            code=next((a.code for a in denies if a.code), None) if all(a.code for a in denies) else None,
            approval=next((a.approval for a in denies if a.approval), ""),
        )


ALLOW_BY_DEFAULT = Decision(True, ["no plugin objected"])


@dataclass
class Call:
    """One call of a contract method, from outside or from a plugin."""

    id: str
    method: MethodInfo
    request: Message | None  # None for a client-streaming call
    principal: str
    metadata: tuple[tuple[str, str], ...] = ()
    deadline: float | None = None  # time.monotonic() value, None for no deadline
    provider: ProviderInfo | None = None  # set while authorizing each attempt
    # the caller's id for this call (x-cortex-call-id), or the call a plugin was serving when it
    # made this one: never used as this call's identity, only to correlate
    parent_id: str = ""
    outcome: Outcome | None = None  # how it ended, once the router has finished it
    # who made the call when that is not the principal: a gateway acting for its users (its
    # credential has the act_as scope), the bridge plugin a client came through, the plugin making
    # a call for the caller it serves; audited. Every party that acted on the way, outermost first,
    # joined by ", " ("key:gateway, plugin:cerebrum"): a deny naming any of them holds
    actor: str = ""
    # the method globs the caller's credential is limited to ("service/method"), None: no limit
    scopes: tuple[str, ...] | None = None
    # whose request this call serves: the principal of the call from outside that a plugin was
    # serving when it made this one (Cerebrum searching memories for key:alice's goal), else the
    # principal itself. Policy judges `principal`; whose data a provider touches follows `origin`.
    origin: str = ""
    # the call may reach local providers only: its request asked (`local_only`), or the call it
    # was made for did (a caller's constraint follows its nested calls like its rights)
    local_only: bool = False
    # the labels of the data it carries ("private"): its request's, its caller's, and those of what its
    labels: set[str] = field(default_factory=set)  # nested calls returned (security/labels.py)
    gathered: set[str] = field(default_factory=set)  # ...those last, which it hands on to its own caller
    redacted: dict[str, int] = field(default_factory=dict)  # spans redacted before a remote provider, by kind

    def __post_init__(self) -> None:
        self.origin = self.origin or self.principal

    @property
    def actors(self) -> tuple[str, ...]:
        """Who acted for the principal on the way to this call, outermost first."""
        return tuple(self.actor.split(", ")) if self.actor else ()

    @property
    def service(self) -> str:
        return self.method.service

    @property
    def method_name(self) -> str:
        return self.method.name

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


def asks_local_only(request: Any) -> bool:
    """Whether the request itself asks to stay on local providers (a `local_only` field)."""
    return bool(getattr(request, "local_only", False)) if request is not None else False


# The call a provider is serving, while it serves it: a call a plugin makes then is its child.
CURRENT_CALL: ContextVar[Call | None] = ContextVar("cortex_current_call", default=None)


@dataclass
class Attempt:
    """One provider the router considered: tried, skipped, or denied."""

    provider: str
    outcome: str  # "ok", "skipped", "denied", or a status code name
    detail: str = ""
    latency_s: float = 0.0


@dataclass
class Outcome:
    """How a call ended, handed to `cortex_observe` hooks."""

    code: grpc.StatusCode
    details: str
    provider: str | None
    attempts: list[Attempt]
    decision: Decision
    latency_s: float
    response: Message | None = None
    messages: int = 0  # messages streamed to the caller

    @property
    def route(self) -> str:
        """Compact trace for logs and metadata: "mlx:UNAVAILABLE,ollama:ok"."""
        return ",".join(f"{a.provider}:{a.outcome}" for a in self.attempts)


class RouterError(grpc.RpcError):
    """A call's failure as a gRPC status. Plugins calling through the kernel catch grpc.RpcError
    and read `.code()` and `.details()`, as with any gRPC stub."""

    def __init__(self, code: grpc.StatusCode, details: str, outcome: Outcome | None = None, trailers: tuple[tuple[str, str], ...] = ()):
        super().__init__(f"{code.name}: {details}")
        self._code, self._details, self.outcome, self.trailers = code, details, outcome, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self.trailers


class Unavailable(Exception):
    """Raised by an authorize hook that cannot judge calls now (its audit log cannot be written,
    its state is closed): the call fails with UNAVAILABLE naming the plugin, never passes."""


class ProviderAbort(Exception):
    """Raised by LocalContext.abort: the in-process provider ended the call with a status."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class LocalContext:
    """The part of grpc.aio.ServicerContext that servicers use, for in-process calls.

    The router hands this to a provider instead of the real context, so that a provider's abort
    becomes a result the router can act on (fail over, count against the circuit) rather than
    ending the caller's RPC directly.
    """

    __slots__ = ("_call", "_owners", "_peer", "code", "details", "initial", "trailing")

    def __init__(self, call: Call, peer: str = "local", owners: tuple[str, ...] = ()):
        self._call, self._peer, self._owners = call, peer, owners
        self.code: grpc.StatusCode | None = None
        self.details: str = ""
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.initial: tuple[tuple[str, str], ...] = ()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Iterable[tuple[str, str]] = ()) -> None:
        if trailing_metadata:
            self.trailing = tuple(trailing_metadata)
        raise ProviderAbort(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def code_and_details(self) -> tuple[grpc.StatusCode | None, str]:
        return self.code, self.details

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._call.metadata

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self.trailing = tuple(metadata)

    async def send_initial_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self.initial = tuple(metadata)

    def time_remaining(self) -> float | None:
        return self._call.remaining()

    def peer(self) -> str:
        return self._peer

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def is_active(self) -> bool:
        return True

    def add_done_callback(self, callback: Callable[..., object]) -> None:  # nothing to notify in-process
        pass

    @property
    def call_id(self) -> str:
        return self._call.id

    @property
    def labels(self) -> set[str]:  # the call's data labels: kept with what it stores, added to from what it reads back
        return self._call.labels

    @property
    def principal(self) -> str:
        return self._call.principal

    @property
    def origin(self) -> str:
        """Whose request this call serves (Call.origin): the caller from outside, through plugins."""
        return self._call.origin

    @property
    def namespace(self) -> str:
        """Whose data this call touches: "default" (the kernel's owner) or the origin's own
        namespace (credentials.namespace_of, with `kernel.owners`)."""
        from .security.credentials import namespace_of

        return namespace_of(self._call.origin, self._owners)

    def namespace_of(self, principal: str) -> str:
        """The namespace of any `principal` as this kernel decides it (with `kernel.owners`): for
        a plugin that shows one caller only the records of its own namespace (audit entries)."""
        from .security.credentials import namespace_of

        return namespace_of(principal, self._owners)

    @property
    def sees_every_namespace(self) -> bool:
        """Whether whose request this call serves is shown every namespace (admin, the kernel and
        its plugins' own work); a listing, an export or a subscription for anyone else keeps to
        `namespace`."""
        from .security.credentials import sees_every_namespace

        return sees_every_namespace(self._call.origin)
