"""The policy router: every call, from outside or between plugins, goes through here.

For each call it orders the providers of the contract (configured order, then health), and for
each candidate in turn: skips it if privacy forbids a remote provider or its circuit is open,
asks the authorize hooks (any deny wins), and calls it within the caller's deadline (and the
provider's own timeout). A provider fault (UNAVAILABLE, INTERNAL, UNKNOWN, or its own timeout)
counts against its circuit and, for methods the contract marks failover-safe (protobuf
`idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT), moves on to the next provider. A stream may
fail over only before its first message. The outcome goes to the observe hooks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog

from .call import (
    ALLOW_BY_DEFAULT,
    PROVIDER_HEADER,
    Attempt,
    Call,
    Decision,
    LocalContext,
    Outcome,
    ProviderAbort,
    ProviderInfo,
    RouterError,
)
from .config import Config
from .plugin_host import PluginHost
from .registry import ContractRegistry, MethodInfo, Provider, status_of

log = structlog.get_logger("cortex.router")

Code = grpc.StatusCode
# Failures that say something about the provider, not about the request.
PROVIDER_FAULTS = frozenset({Code.UNAVAILABLE, Code.INTERNAL, Code.UNKNOWN})


class _Failure(Exception):
    """One attempt's failure, classified."""

    def __init__(self, code: Code, details: str, fault: bool, final: bool = False):
        super().__init__(details)
        self.code, self.details, self.fault, self.final = code, details, fault, final


def _asks_local_only(request: Any) -> bool:
    return bool(getattr(request, "local_only", False)) if request is not None else False


class Router:
    def __init__(self, registry: ContractRegistry, host: PluginHost, config: Config):
        self.registry, self.host, self.config = registry, host, config
        self._provider_info: dict[int, ProviderInfo] = {}

    # -- choosing -------------------------------------------------------------------------------
    def _info(self, provider: Provider) -> ProviderInfo:
        info = self._provider_info.get(id(provider))
        if info is None:
            info = ProviderInfo(provider.name, provider.plugin, provider.endpoint, provider.local)
            self._provider_info[id(provider)] = info
        return info

    def _local_only(self, request: Any) -> bool:
        return self.config.local_only or _asks_local_only(request)

    async def _admit(
        self, provider: Provider, call: Call, local_only: bool, position: int = 0
    ) -> tuple[Attempt | None, Decision]:
        """(None, decision) if the call may go to `provider` now, else (why not, decision)."""
        if local_only and not provider.local:
            why = (
                "privacy mode is on" if self.config.privacy_mode
                else "hybrid mode is privacy" if self.config.local_only
                else "the request asks for local_only"
            )
            return Attempt(provider.name, "skipped", f"remote provider not allowed: {why}"), ALLOW_BY_DEFAULT
        if position > 0 and not provider.local and not self.config.data["hybrid"]["conjunction"]:
            reason = "remote provider not allowed: conjunction is off, so remote providers are never fallbacks"
            return Attempt(provider.name, "skipped", reason), ALLOW_BY_DEFAULT
        call.provider = self._info(provider)
        decision = await self.host.authorize(call)
        if not decision.allow:
            return Attempt(provider.name, "denied", "; ".join(decision.reasons) or "denied"), decision
        if not provider.breaker.allow():
            retry = provider.breaker.retry_after()
            return Attempt(provider.name, "skipped", f"circuit open, next probe in {retry:.1f}s"), decision
        return None, decision

    def _timeout(self, provider: Provider, call: Call) -> tuple[float | None, bool]:
        """The attempt's timeout, and whether it is the caller's own deadline."""
        remaining = call.remaining()
        if remaining is not None and remaining <= 0:
            raise _Failure(Code.DEADLINE_EXCEEDED, "the caller's deadline passed before a provider answered", False, True)
        if provider.timeout is None or (remaining is not None and remaining <= provider.timeout):
            return remaining, True
        return provider.timeout, False

    def _classify(self, exc: BaseException, provider: Provider, timeout: float | None, is_deadline: bool) -> _Failure:
        if isinstance(exc, ProviderAbort):
            code, details = exc.code, exc.details
        elif isinstance(exc, TimeoutError):
            if is_deadline:
                return _Failure(Code.DEADLINE_EXCEEDED, f"deadline exceeded while {provider.name} was working", False, True)
            return _Failure(Code.UNAVAILABLE, f"{provider.name} did not answer within {timeout:g}s", True)
        elif (status := status_of(exc)) is not None:
            code, details = status
            if code == Code.DEADLINE_EXCEEDED:
                if is_deadline:
                    return _Failure(code, details or "deadline exceeded", False, True)
                return _Failure(Code.UNAVAILABLE, f"{provider.name} did not answer within {timeout:g}s", True)
        else:
            log.error("provider.crashed", provider=provider.name, error=repr(exc), exc_info=exc)
            return _Failure(Code.INTERNAL, f"provider {provider.name} failed: {type(exc).__name__}: {exc}", True)
        return _Failure(code, details, code in PROVIDER_FAULTS)

    def _settle(self, provider: Provider, failure: _Failure | None, latency: float) -> None:
        provider.calls += 1
        if failure is not None and failure.fault:
            provider.failures += 1
            provider.last_error = f"{failure.code.name}: {failure.details}"[:500]
            provider.breaker.record_failure()
        else:
            provider.breaker.record_success()
            if failure is None:  # an exponentially weighted latency, for the performance mode
                old = provider.latency_ewma
                provider.latency_ewma = latency if old is None else 0.8 * old + 0.2 * latency

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
                "= true, no local_only in the request).",
            )
        if attempts:
            return RouterError(Code.UNAVAILABLE, f"no provider of {method.service} is available: {tried}")
        return RouterError(Code.UNIMPLEMENTED, f"no provider serves {method.service}")

    def _providers(self, method: MethodInfo, call: Call) -> list[Provider]:
        """Candidates in the order to try them: configured order, healthy first; fastest first in
        the performance mode; "mlx" first when hybrid.mlx_first; only one when the caller pins a
        provider with the x-cortex-provider request header."""
        providers = self.registry.ordered(method.service, self.config.routing_order(method.service))
        hybrid = self.config.data["hybrid"]
        if hybrid["mode"] == "performance":
            providers.sort(key=lambda p: (not p.health.serving, p.latency_ewma or 0.0))
        if hybrid["mlx_first"]:
            providers.sort(key=lambda p: p.name != "mlx")
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

    # -- unary ----------------------------------------------------------------------------------
    async def unary(self, method: MethodInfo, request: Any, call: Call) -> Any:
        """Route one unary call; returns the response or raises RouterError."""
        response, _ = await self.unary_with_outcome(method, request, call)
        return response

    async def unary_with_outcome(self, method: MethodInfo, request: Any, call: Call) -> tuple[Any, Outcome]:
        started = time.monotonic()
        attempts: list[Attempt] = []
        local_only = self._local_only(request)
        last: _Failure | None = None
        decision = ALLOW_BY_DEFAULT
        providers = self._providers(method, call)
        for pass_no in range(1 + self.config.data["circuit"]["retries"]):
            if pass_no:  # another pass only after provider faults, for failover-safe methods
                if last is None or last.final or not last.fault or not method.failover_safe:
                    break
                backoff = self.config.data["circuit"]["retry_backoff_seconds"] * 2 ** (pass_no - 1)
                remaining = call.remaining()
                if remaining is not None and remaining <= backoff:
                    break
                await asyncio.sleep(backoff)
            response, outcome, last, decision = await self._unary_pass(
                method, request, call, providers, attempts, local_only, started, decision
            )
            if outcome is not None:
                return response, outcome
        error = self._no_provider_error(method, attempts, last)
        outcome = Outcome(error.code(), error.details(), None, attempts, decision, time.monotonic() - started)
        error.outcome = outcome
        await self._finish(call, outcome)
        raise error

    async def _unary_pass(self, method, request, call, providers, attempts, local_only, started, decision):
        """One pass over the providers: (response, outcome, None, decision) on success, else
        (None, None, last failure, decision)."""
        last: _Failure | None = None
        for position, provider in enumerate(providers):
            skipped, decision = await self._admit(provider, call, local_only, position)
            if skipped is not None:
                attempts.append(skipped)
                continue
            t0 = time.monotonic()
            failure = None
            try:
                timeout, is_deadline = self._timeout(provider, call)
                context = LocalContext(call)
                try:
                    if timeout is None:
                        response = await provider.unary(method, request, call, context)
                    else:
                        async with asyncio.timeout(timeout):
                            response = await provider.unary(method, request, call, context, timeout)
                    if context.code is not None and context.code != Code.OK:
                        raise ProviderAbort(context.code, context.details)
                except _Failure:
                    raise
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - classified below
                    failure = self._classify(exc, provider, timeout, is_deadline)
                else:
                    if not isinstance(response, method.output):
                        failure = _Failure(
                            Code.INTERNAL,
                            f"provider {provider.name} returned {type(response).__name__}, "
                            f"expected {method.output.DESCRIPTOR.full_name}",
                            True,
                        )
            except _Failure as f:  # the deadline passed before this attempt
                failure = f
            latency = time.monotonic() - t0
            self._settle(provider, failure, latency)
            if failure is None:
                attempts.append(Attempt(provider.name, "ok", latency_s=latency))
                outcome = Outcome(Code.OK, "", provider.name, attempts, decision, time.monotonic() - started, response)
                await self._finish(call, outcome)
                return response, outcome, None, decision
            attempts.append(Attempt(provider.name, failure.code.name, failure.details, latency))
            last = failure
            if failure.final or not failure.fault or not method.failover_safe:
                break
        return None, None, last, decision

    # -- server streaming ------------------------------------------------------------------------
    async def stream(self, method: MethodInfo, request: Any, call: Call) -> AsyncIterator[Any]:
        """Route one server-streaming call, yielding its messages or raising RouterError."""
        started = time.monotonic()
        attempts: list[Attempt] = []
        local_only = self._local_only(request)
        last: _Failure | None = None
        decision = ALLOW_BY_DEFAULT
        sent = 0
        outcome: Outcome | None = None
        try:
            for position, provider in enumerate(self._providers(method, call)):
                skipped, decision = await self._admit(provider, call, local_only, position)
                if skipped is not None:
                    attempts.append(skipped)
                    continue
                t0 = time.monotonic()
                failure = None
                try:
                    timeout, is_deadline = self._timeout(provider, call)
                    context = LocalContext(call)
                    messages = provider.stream(method, request, call, context, timeout)
                    try:
                        while True:
                            # the provider's own timeout bounds the wait for the first message
                            wait = timeout if sent == 0 else call.remaining()
                            try:
                                if wait is None:
                                    message = await anext(messages)
                                else:
                                    async with asyncio.timeout(wait):
                                        message = await anext(messages)
                            except StopAsyncIteration:
                                break
                            if not isinstance(message, method.output):
                                raise TypeError(f"streamed a {type(message).__name__}")
                            sent += 1
                            yield message
                        if context.code is not None and context.code != Code.OK:
                            raise ProviderAbort(context.code, context.details)
                    except (asyncio.CancelledError, GeneratorExit):
                        raise
                    except Exception as exc:  # noqa: BLE001
                        failure = self._classify(exc, provider, wait, is_deadline or sent > 0)
                    finally:
                        await messages.aclose()
                except _Failure as f:
                    failure = f
                latency = time.monotonic() - t0
                self._settle(provider, failure, latency)
                if failure is None:
                    attempts.append(Attempt(provider.name, "ok", latency_s=latency))
                    outcome = Outcome(
                        Code.OK, "", provider.name, attempts, decision, time.monotonic() - started, None, sent
                    )
                    return
                if sent:
                    failure.details += (
                        f" (after {sent} message(s) from {provider.name}; not retried on another provider "
                        "because the stream had started)"
                    )
                    failure.final = True
                attempts.append(Attempt(provider.name, failure.code.name, failure.details, latency))
                last = failure
                if failure.final or not failure.fault or not method.failover_safe:
                    break
            error = self._no_provider_error(method, attempts, last)
            outcome = Outcome(error.code(), error.details(), None, attempts, decision, time.monotonic() - started)
            error.outcome = outcome
            raise error
        finally:
            if outcome is None:  # the caller went away mid-stream
                outcome = Outcome(
                    Code.CANCELLED, "cancelled by the caller", None, attempts, decision,
                    time.monotonic() - started, None, sent,
                )
            await self._finish(call, outcome)

    # -- reporting --------------------------------------------------------------------------------
    async def _finish(self, call: Call, outcome: Outcome) -> None:
        if outcome.code == Code.OK:
            log.debug(
                "call", call_id=call.id, method=call.method.path, principal=call.principal,
                provider=outcome.provider, route=outcome.route, latency_ms=round(outcome.latency_s * 1000, 3),
            )
        else:
            log.info(
                "call.failed", call_id=call.id, method=call.method.path, principal=call.principal,
                code=outcome.code.name, details=outcome.details, route=outcome.route,
                latency_ms=round(outcome.latency_s * 1000, 3),
            )
        await self.host.observe(call, outcome)


__all__ = ["Router", "RouterError", "Decision"]
