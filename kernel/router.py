"""The policy router: every call, from outside or between plugins, goes through here.

For each call it orders the providers of the contract (`Router.order`: configured order, health,
speed in the performance mode, hybrid.preferred first when hybrid.mlx_first), and for
each candidate in turn: asks admission (kernel/admission.py: scopes, privacy, conjunction,
identity, required plugins, policy, circuit) and calls it within the caller's deadline (and the
provider's own timeout). A provider fault (UNAVAILABLE, its own timeout; INTERNAL or UNKNOWN from
a remote provider) counts against its circuit, once per call however often it was tried, and,
for methods the contract marks failover-safe (protobuf `idempotency_level` NO_SIDE_EFFECTS or
IDEMPOTENT), moves on to the next provider. An in-process provider that raises or answers
INTERNAL on one request has failed that request, not the service: the caller gets INTERNAL and
the circuit, which every other caller shares, is untouched. A stream may fail over only before
its first message. The outcome goes to the observe hooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog

from .admission import Admitter, Refused
from .call import (
    ALLOW_BY_DEFAULT,
    APPROVAL_HEADER,
    CURRENT_CALL,
    PROVIDER_HEADER,
    Attempt,
    Call,
    Decision,
    LocalContext,
    Outcome,
    ProviderAbort,
    RouterError,
)
from .config import Config
from .plugin_host import BROKEN, DISABLED, PluginHost
from .registry import ContractRegistry, MethodInfo, Provider, status_of
from .security.outbound import Redaction
from .security.shedding import PUSHBACK_HEADER, Shedder
from .security.validation import check_request

log = structlog.get_logger("cortex.router")

Code = grpc.StatusCode
# Failures that say something about the provider, not about the request: another provider may do
# better. What counts against a circuit (`_counts`) is narrower: see there.
PROVIDER_FAULTS = frozenset({Code.UNAVAILABLE, Code.INTERNAL, Code.UNKNOWN})


class _Failure(Exception):
    """One attempt's failure, classified."""

    def __init__(self, code: Code, details: str, fault: bool, final: bool = False, counts: bool | None = None,
                 refused: bool = False):
        super().__init__(details)
        self.code, self.details, self.fault, self.final = code, details, fault, final
        self.counts = fault if counts is None else counts  # against the provider's circuit
        self.refused = refused  # before doing anything (a remote kernel shedding): another provider may serve

    def moves_on(self, method: MethodInfo) -> bool:
        return not self.final and (self.refused or (self.fault and method.failover_safe))


@dataclass
class _Route:
    """One call's walk over its providers: what was tried, the last failure, the decision."""

    method: MethodInfo
    call: Call
    started: float = field(default_factory=time.monotonic)
    attempts: list[Attempt] = field(default_factory=list)
    last: _Failure | None = None
    decision: Decision = field(default_factory=lambda: ALLOW_BY_DEFAULT)
    provider: str | None = None  # the one that served it
    faulted: set[int] = field(default_factory=set)  # providers whose circuit this call has counted against
    response: Any = None  # a unary call's response
    sent: int = 0  # messages streamed to the caller

    def outcome(self, code: Code, details: str) -> Outcome:
        ok = code == Code.OK
        latency = time.monotonic() - self.started
        return Outcome(
            code, details, self.provider if ok else None, self.attempts, self.decision, latency,
            self.response if ok else None, self.sent,
        )


@dataclass
class _Try:
    """One admitted attempt at one provider."""

    provider: Provider
    context: LocalContext
    timeout: float | None = None
    is_deadline: bool = False  # the timeout is the caller's own deadline, not the provider's
    failure: _Failure | None = None
    response: Any = None
    started: float = field(default_factory=time.monotonic)

    async def call_unary(self, method: MethodInfo, request: Any, call: Call) -> Any:
        if self.timeout is None:
            response = await self.provider.unary(method, request, call, self.context)
        else:
            async with asyncio.timeout(self.timeout):
                response = await self.provider.unary(method, request, call, self.context, self.timeout)
        self.check_context()
        return response

    def check_context(self) -> None:
        """A provider may end a call by setting a status on its context instead of aborting."""
        if self.context.code is not None and self.context.code != Code.OK:
            raise ProviderAbort(self.context.code, self.context.details)


def _wrong_type(response: Any, method: MethodInfo, provider: Provider) -> _Failure | None:
    if isinstance(response, method.output):
        return None
    expected = method.output.DESCRIPTOR.full_name
    return _Failure(Code.INTERNAL, f"provider {provider.name} returned {type(response).__name__}, expected {expected}", True)


class Router:
    def __init__(self, registry: ContractRegistry, host: PluginHost, config: Config):
        self.registry, self.host, self.config = registry, host, config
        self.owners = config.kernel_section.owners  # for LocalContext.namespace
        self.admission = Admitter(host, config, self.owners)
        self.redaction = Redaction.of(config.privacy, config.error)  # personal data out of remote providers' requests
        self.load = Shedder(config.kernel_section.max_in_flight)  # calls from outside past it: RESOURCE_EXHAUSTED

    # -- choosing -------------------------------------------------------------------------------
    async def _admitted(self, route: _Route, provider: Provider | None, position: int = 0, probe: bool = True) -> bool:
        """Admission's answer for `provider` (None: the call, before any provider), noted on the route."""
        admission = await self.admission.admit(route.call, provider, position, probe)
        if admission.whole_call:
            approval = admission.decision.approval
            raise Refused(admission.code, admission.reason, trailers=((APPROVAL_HEADER, approval),) if approval else ())
        route.decision = admission.decision
        if provider is not None and not admission.allowed:  # (a policy's deny of where data may go skips, as privacy mode does)
            denied = admission.step == "policy" and admission.code == Code.PERMISSION_DENIED
            reason = admission.reason if denied or admission.step != "policy" else f"remote provider not allowed: {admission.reason}"
            route.attempts.append(Attempt(provider.name, "denied" if denied else "skipped", reason))
        return admission.allowed

    def _timeout(self, provider: Provider, call: Call) -> tuple[float | None, bool]:
        """The attempt's timeout, and whether it is the caller's own deadline."""
        remaining = call.remaining()
        if remaining is not None and remaining <= 0:
            raise _Failure(Code.DEADLINE_EXCEEDED, "the caller's deadline passed before a provider answered", False, True)
        if provider.timeout is None or (remaining is not None and remaining <= provider.timeout):
            return remaining, True
        return provider.timeout, False

    def _classify(
        self, exc: BaseException, provider: Provider, timeout: float | None, is_deadline: bool, call: Call
    ) -> _Failure:
        if isinstance(exc, ProviderAbort):
            code, details = exc.code, exc.details
        elif isinstance(exc, TimeoutError):
            if is_deadline:
                return _Failure(Code.DEADLINE_EXCEEDED, f"deadline exceeded while {provider.name} was working", False, True)
            return _Failure(Code.UNAVAILABLE, f"{provider.name} did not answer within {timeout:g}s", True)
        elif (status := status_of(exc)) is not None:
            code, details = status
            trailing = getattr(exc, "trailing_metadata", None)
            trailers = trailing() if callable(trailing) else None
            if code == Code.RESOURCE_EXHAUSTED and provider.endpoint and PUSHBACK_HEADER in dict(trailers or ()):
                return _Failure(code, f"{provider.name} is at capacity: {details}", False, refused=True)
            if code == Code.DEADLINE_EXCEEDED:
                if is_deadline:
                    return _Failure(code, details or "deadline exceeded", False, True)
                return _Failure(Code.UNAVAILABLE, f"{provider.name} did not answer within {timeout:g}s", True)
        else:
            # the exception's text is for the operator, not the caller: it may hold paths, data or
            # other clients' requests; the caller gets the call id to ask about
            log.error("provider.crashed", provider=provider.name, call_id=call.id, error=repr(exc), exc_info=exc)
            code, details = Code.INTERNAL, f"provider {provider.name} failed unexpectedly (call {call.id}; the kernel's log says why)"
        fault = code in PROVIDER_FAULTS
        return _Failure(code, details, fault, counts=fault and self._counts(code, provider))

    def _counts(self, code: Code, provider: Provider) -> bool:
        """Whether a fault counts against the provider's circuit, which every caller shares. A
        remote provider's faults do. An in-process provider's INTERNAL, UNKNOWN or exception is one
        request gone wrong (a bug the request found); its UNAVAILABLE (a model not loaded, a backend
        it needs away) counts only where another provider can serve instead: opening the circuit of
        a sole in-process provider would turn one client's requests into an outage for everyone,
        and routes around nothing. (Its own timeouts always count: `_classify`.)"""
        if provider.endpoint:
            return True
        return code == Code.UNAVAILABLE and len(self.registry.providers.get(provider.service.full_name, ())) > 1

    def _no_provider_error(self, method: MethodInfo, attempts: list[Attempt], last: _Failure | None) -> RouterError:
        tried = "; ".join(
            f"{a.provider}: {a.outcome}" + (f" ({a.detail})" if a.detail and a.outcome in ("skipped", "denied") else "")
            for a in attempts
        )
        if last is not None:
            return RouterError(last.code, last.details if len(attempts) == 1 else f"{last.details} [route: {tried}]")
        outcomes = {a.outcome for a in attempts}
        if "denied" in outcomes:
            reasons = "; ".join(a.detail for a in attempts if a.outcome == "denied")
            return RouterError(Code.PERMISSION_DENIED, f"{method.path} denied: {reasons}")
        if any("remote provider not allowed" in a.detail for a in attempts):
            return RouterError(
                Code.FAILED_PRECONDITION,
                f"no local provider can serve {method.service}: {tried}. Enable a local provider, or allow "
                "remote ones (kernel.privacy_mode = false, hybrid.mode other than privacy, hybrid.conjunction "
                "= true, no local_only in the request, no data labelled for local providers only).",
            )
        if attempts:
            return RouterError(Code.UNAVAILABLE, f"no provider of {method.service} is available: {tried}")
        return RouterError(Code.UNIMPLEMENTED, self.explain_unknown(method.path))

    def order(self, service: str) -> list[Provider]:
        """The providers of `service` in the order the router tries them: the configured order
        (routing.<service>.order, then the plugins' ranks, then registration order), healthy first; fastest first in the
        performance mode; hybrid.preferred ("mlx") first when hybrid.mlx_first. The one place that decides it:
        ListContracts (and so `cortex contracts list`) shows this list."""
        providers = self.registry.ordered(service, self.config.routing_order(service))
        hybrid = self.config.hybrid
        if hybrid.mode == "performance":
            providers.sort(key=lambda p: (not p.health.serving, p.latency_ewma or 0.0))
        if hybrid.mlx_first:  # the configured preferred provider (mlx by default) leads
            providers.sort(key=lambda p: p.name != hybrid.preferred)
        return providers

    def _providers(self, method: MethodInfo, call: Call) -> list[Provider]:
        """This call's candidates: the routing order, or only the provider the caller pins with
        the x-cortex-provider request header."""
        providers = self.order(method.service)
        for key, value in call.metadata:
            if key == PROVIDER_HEADER:
                pinned = [p for p in providers if p.name == value]
                if not pinned:
                    names = ", ".join(p.name for p in providers) or "(none)"
                    raise RouterError(
                        Code.NOT_FOUND, f"no provider {value!r} serves {method.service}; its providers: {names}"
                    )
                return pinned
        return providers

    # -- the attempt loop, shared by unary and streaming calls ------------------------------------
    async def _attempts(self, route: _Route) -> AsyncGenerator[_Try, None]:
        """Each provider to try, in order, admitted (kernel/admission.py) and with its timeout.
        The caller makes the attempt and leaves its response or failure on it; back here, the
        attempt is settled (counts, circuit, route) and the loop decides whether to go on. More
        passes over the providers only after provider faults, for failover-safe methods, within
        the deadline."""
        check_request(route.method, route.call.request)  # the contract's declared bounds (buf.validate)
        await self._admitted(route, None)  # the caller's scopes, before any provider is named
        providers = self._providers(route.method, route.call)
        for pass_no in range(1 + self.config.circuit.retries):
            if pass_no:
                last = route.last
                if last is None or not last.moves_on(route.method):
                    return
                backoff = self.config.circuit.retry_backoff_seconds * 2 ** (pass_no - 1)
                remaining = route.call.remaining()
                if remaining is not None and remaining <= backoff:
                    return
                await asyncio.sleep(backoff)
            for position, provider in enumerate(providers):
                if not await self._admitted(route, provider, position):
                    continue
                attempt = _Try(provider, LocalContext(route.call, owners=self.owners))
                try:
                    attempt.timeout, attempt.is_deadline = self._timeout(provider, route.call)
                except _Failure as late:  # the deadline passed before this attempt: the provider was never asked
                    provider.breaker.release()
                    route.attempts.append(Attempt(provider.name, late.code.name, late.details))
                    route.last = late
                    return
                else:
                    provider.in_flight += 1
                    try:
                        yield attempt
                    finally:
                        provider.in_flight -= 1
                self._settle(route, attempt)
                if attempt.failure is None:
                    return
                if not attempt.failure.moves_on(route.method):
                    return

    async def admit(self, method: MethodInfo, request: Any, call: Call) -> Decision:
        """Judge a call exactly as `unary` would (scopes, privacy, policy) without making it: for
        a side door (an import, a bulk edit) that does part by part what direct calls would do,
        and must be admitted part by part as they would. The decision is observed (audited) as
        a call of its own; RouterError when it is refused."""
        route = _Route(method, call)
        outcome: Outcome | None = None
        try:
            await self._admitted(route, None)
            for position, provider in enumerate(self._providers(method, call)):
                if await self._admitted(route, provider, position, probe=False):  # no call made: no probe taken
                    outcome = route.outcome(Code.OK, "admitted, not called: part of a bulk call")
                    return route.decision
            raise self._failed(route)
        except RouterError as error:
            outcome = error.outcome = error.outcome or route.outcome(error.code(), error.details())
            raise
        finally:
            await self._finish(call, outcome or route.outcome(Code.CANCELLED, "cancelled by the caller"))

    def _settle(self, route: _Route, attempt: _Try) -> None:
        provider, failure = attempt.provider, attempt.failure
        latency = time.monotonic() - attempt.started
        provider.calls += 1
        if failure is not None and failure.fault:
            provider.failures += 1
            provider.last_error = f"{failure.code.name}: {failure.details}"[:500]
        if failure is not None and failure.counts:
            if id(provider) not in route.faulted:  # a retry of one call is not another fault
                route.faulted.add(id(provider))
                provider.breaker.record_failure()
        else:  # it answered (even if only to say the request was wrong): alive
            provider.breaker.record_success()
            if failure is None:  # an exponentially weighted latency, for the performance mode
                old = provider.latency_ewma
                provider.latency_ewma = latency if old is None else 0.8 * old + 0.2 * latency
        if failure is None:
            route.attempts.append(Attempt(provider.name, "ok", latency_s=latency))
            route.provider, route.response = provider.name, attempt.response
        else:
            route.attempts.append(Attempt(provider.name, failure.code.name, failure.details, latency))
            route.last = failure

    def _failed(self, route: _Route) -> RouterError:
        error = self._no_provider_error(route.method, route.attempts, route.last)
        error.outcome = route.outcome(error.code(), error.details())
        return error

    # -- unary ----------------------------------------------------------------------------------
    async def unary(self, method: MethodInfo, request: Any, call: Call) -> Any:
        """Route one unary call; returns the response or raises RouterError."""
        return (await self.unary_with_outcome(method, request, call))[0]

    async def unary_with_outcome(self, method: MethodInfo, request: Any, call: Call) -> tuple[Any, Outcome]:
        route = _Route(method, call)
        outcome: Outcome | None = None
        try:
            async with aclosing(self._attempts(route)) as attempts:
                async for attempt in attempts:
                    await self._try_unary(attempt, method, request, call)
            if route.provider is not None:
                outcome = route.outcome(Code.OK, "")
                return outcome.response, outcome
            raise self._failed(route)
        except RouterError as error:
            outcome = error.outcome = error.outcome or route.outcome(error.code(), error.details())
            raise
        finally:
            if outcome is None:  # the caller went away
                outcome = route.outcome(Code.CANCELLED, "cancelled by the caller")
            await self._finish(call, outcome)

    async def _try_unary(self, attempt: _Try, method: MethodInfo, request: Any, call: Call) -> None:
        serving = CURRENT_CALL.set(call)  # calls the provider makes are this call's children
        try:
            outbound = await self.redaction.outbound(attempt.provider, request, call)
            attempt.response = outbound.restore(await attempt.call_unary(method, outbound.request, call))
        except Exception as exc:  # noqa: BLE001 - classified (a cancellation is no Exception: it goes on up)
            attempt.failure = self._classify(exc, attempt.provider, attempt.timeout, attempt.is_deadline, call)
        else:
            attempt.failure = _wrong_type(attempt.response, method, attempt.provider)
        finally:
            CURRENT_CALL.reset(serving)

    # -- server streaming ------------------------------------------------------------------------
    async def stream(self, method: MethodInfo, request: Any, call: Call) -> AsyncIterator[Any]:
        """Route one server-streaming call, yielding its messages or raising RouterError. A stream
        fails over (and is retried) only before its first message."""
        route = _Route(method, call)
        outcome: Outcome | None = None
        try:
            async with aclosing(self._attempts(route)) as attempts:
                async for attempt in attempts:
                    async with aclosing(self._try_stream(attempt, route, method, request, call)) as messages:
                        async for message in messages:
                            yield message
            if route.provider is not None:
                outcome = route.outcome(Code.OK, "")
                return
            raise self._failed(route)
        except RouterError as error:
            outcome = error.outcome = error.outcome or route.outcome(error.code(), error.details())
            raise
        finally:
            if outcome is None:  # the caller went away mid-stream
                outcome = route.outcome(Code.CANCELLED, "cancelled by the caller")
            await self._finish(call, outcome)

    async def _try_stream(self, attempt: _Try, route: _Route, method: MethodInfo, request: Any, call: Call) -> AsyncGenerator[Any, None]:
        """The provider's messages, passed on as they come; a failure is left on the attempt."""
        wait = attempt.timeout
        messages, message = None, None
        try:
            outbound = await self.redaction.outbound(attempt.provider, request, call)
            messages = attempt.provider.stream(method, outbound.request, call, attempt.context, attempt.timeout)
            while True:
                # the provider's own timeout bounds the wait for the first message
                wait = attempt.timeout if route.sent == 0 else call.remaining()
                serving = CURRENT_CALL.set(call)  # what the provider calls while it streams serves this call
                try:
                    async with asyncio.timeout(wait):
                        message = await anext(messages)
                    if not isinstance(message, method.output):
                        raise TypeError(f"streamed a {type(message).__name__}")
                    message = outbound.feed(message)  # (None: held back, a redacted stream goes one message late)
                except StopAsyncIteration:
                    if (message := outbound.last()) is None:
                        break
                finally:
                    CURRENT_CALL.reset(serving)
                if message is not None:
                    route.sent += 1
                    yield message
            attempt.check_context()
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:  # noqa: BLE001 - classified
            attempt.failure = self._classify(exc, attempt.provider, wait, attempt.is_deadline or route.sent > 0, call)
            if route.sent:
                attempt.failure.details += (
                    f" (after {route.sent} message(s) from {attempt.provider.name}; not retried on another "
                    "provider because the stream had started)"
                )
                attempt.failure.final = True
        finally:
            if messages is not None:
                await messages.aclose()

    def explain_unknown(self, path: str) -> str:
        """Why a method is not served: a disabled or broken plugin (by name), a typo."""
        parts = path.strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            return f"malformed method path {path!r}: expected /package.Service/Method"
        service, method = parts
        info = self.registry.services.get(service)
        if info is not None and self.registry.providers[service]:
            return f"{service} has no method {method!r}; its methods: {', '.join(info.methods)}"
        reasons = []
        for record in self.host.records.values():
            if service not in record.contracts or record.state not in (DISABLED, BROKEN):
                continue
            if record.state == BROKEN:
                reasons.append(f"plugin '{record.name}', which is broken: {record.error}")
            elif record.error:  # disabled while the kernel runs, or not named in CORTEX_LOAD_PLUGINS
                reasons.append(f"plugin '{record.name}', which is {record.error}; `cortex plugins enable "
                               f"{record.name} --now` serves it again")
            else:
                where = f" in {self.config.path}" if self.config.path else ""
                reasons.append(f"plugin '{record.name}', which is disabled{where}; enable it with "
                               f"`cortex plugins enable {record.name}` and restart the kernel")
        if reasons:
            return f"{service} is provided by " + "; and by ".join(reasons)
        disabled = [r.name for r in self.host.records.values() if r.state == DISABLED]
        hint = f" (disabled plugins: {', '.join(disabled)})" if disabled else ""
        return f"no contract {service!r} is served here{hint}; `cortex contracts list` shows what is"

    # -- reporting --------------------------------------------------------------------------------
    async def _finish(self, call: Call, outcome: Outcome) -> None:
        call.outcome = outcome
        ok = outcome.code == Code.OK
        if not ok or log.is_enabled_for(logging.DEBUG):  # (a call's fields cost more than the call, unlogged)
            self._log(call, outcome)
        await self.host.observe(call, outcome)

    @staticmethod
    def _log(call: Call, outcome: Outcome) -> None:
        fields: dict[str, Any] = {"call_id": call.id, "method": call.method.path, "principal": call.principal}
        if call.parent_id:
            fields["parent_call_id"] = call.parent_id
        latency_ms = round(outcome.latency_s * 1000, 3)
        if outcome.code == Code.OK:
            log.debug("call", **fields, provider=outcome.provider, route=outcome.route, latency_ms=latency_ms)
        else:
            log.info("call.failed", **fields, code=outcome.code.name, details=outcome.details, route=outcome.route,
                     latency_ms=latency_ms)


__all__ = ["Decision", "Router", "RouterError"]
