"""Admission: may this call go to this provider now, and if not, why. One function answers it
(`Admitter.admit`): for the router's attempts, side doors (`channel.admit`) and ListContracts (a
plain call now). In this order, the first refusal wins:
1. scopes: the caller's key scopes (a nested call's: its caller's), before any provider is named;
2. privacy: privacy mode, hybrid privacy or a `local_only` request (or the call it serves) keep a
   call off remote providers (a `private` label is the policy's: governance's rule, step 6, whose
   deny of a remote provider is FAILED_PRECONDITION: about where data may go, not who asks);
3. conjunction: a remote provider past the first only with hybrid.conjunction on;
4. identity: a remote provider that cannot act there for whom the call serves (`refuses`);
5. required plugins (kernel.required_plugins): one not loaded refuses every call;
6. policy: the authorize hooks (any deny wins);
7. circuit: last, so a half-open circuit's one probe goes to a call otherwise admitted.
Steps 2-4 and 7 skip the provider, 6 denies it; 1, 5, a required plugin that cannot judge and a
call that waits for a person's approval (policy effect "ask") refuse the call.
"""

from __future__ import annotations

import fnmatch
import weakref
from dataclasses import dataclass, field

from grpc import StatusCode as Code

from .call import ALLOW_BY_DEFAULT, Call, Decision, ProviderInfo, RouterError, asks_local_only
from .config import Config
from .plugin_host import LOADED, PluginHost
from .registry import Provider

REFUSED_HEADER = "x-cortex-refused"  # a trailer: why admission refused a call's providers, or the call


@dataclass(frozen=True)
class Admission:
    allowed: bool = True
    reason: str = ""  # why not; empty when allowed
    code: Code = Code.OK  # the status this refusal gives a call that no other provider serves
    decision: Decision = field(default_factory=lambda: ALLOW_BY_DEFAULT)  # the policy's, once it was asked
    step: str = ""  # which refused: scopes, privacy, conjunction, identity, required, policy, circuit
    whole_call: bool = False  # the call is refused, not only this provider: no other is asked


class Refused(RouterError):
    """A call admission refused as a whole."""


class Admitter:
    def __init__(self, host: PluginHost, config: Config, owners: tuple[str, ...]):
        self.host, self.config, self.owners = host, config, owners
        self._infos: weakref.WeakKeyDictionary[Provider, ProviderInfo] = weakref.WeakKeyDictionary()  # (an id may be reused)

    async def admit(self, call: Call | None, provider: Provider | None, position: int = 0, probe: bool = True) -> Admission:
        """Whether `call` may go to `provider` now, `position` in its route. No provider: the call's
        own step (scopes). No call: a plain call of the owner's (no scopes, no local_only; the
        policy, which judges calls, not asked). The circuit's half-open probe is taken only for a
        call that will be made (`probe`); otherwise the circuit is read."""
        if call is not None and call.scopes is not None and not any(fnmatch.fnmatchcase(call.method.path[1:], s) for s in call.scopes):
            who = call.principal if not call.actor else f"{call.principal} (through {call.actor})"
            reason = (f"{who} may call only {', '.join(call.scopes)} (its key's scopes), not {call.method.path[1:]}; "
                      "ask the admin for a key with that scope")
            return Admission(False, reason, Code.PERMISSION_DENIED, step="scopes", whole_call=True)
        if provider is None:
            return Admission()
        if not provider.local:
            if self.config.local_only or (call is not None and (call.local_only or asks_local_only(call.request))):
                why = ("privacy mode is on" if self.config.privacy_mode else "hybrid mode is privacy" if self.config.local_only
                       else "the request, or the call it was made for, asks for local_only")
                return Admission(False, f"remote provider not allowed: {why}", Code.FAILED_PRECONDITION, step="privacy")
            if position > 0 and not self.config.hybrid.conjunction:
                reason = "remote provider not allowed: conjunction is off, so remote providers are never fallbacks"
                return Admission(False, reason, Code.FAILED_PRECONDITION, step="conjunction")
        if call is not None and (refusal := provider.refuses(call, self.owners)):
            return Admission(False, refusal, Code.UNAVAILABLE, step="identity")
        for name in self.host.required:
            if (record := self.host.records.get(name)) is not None and record.state != LOADED:  # (serve will not start without)
                reason = f"required plugin '{name}' is {record.state} ({record.error}): calls are refused until it is back"
                return Admission(False, reason, Code.UNAVAILABLE, step="required", whole_call=True)
        decision = ALLOW_BY_DEFAULT
        if call is not None:
            call.provider = self._infos.get(provider) or self._infos.setdefault(
                provider, ProviderInfo(provider.name, provider.plugin, provider.endpoint, provider.local))
            try:
                decision = await self.host.authorize(call)
            except RouterError as error:  # a plugin that must judge every call cannot now
                return Admission(False, error.details(), error.code(), step="policy", whole_call=True)
            if not decision.allow:  # (a call waiting for approval, or over its quota of them, is refused whole)
                return Admission(False, "; ".join(decision.reasons) or "denied", decision.code or Code.PERMISSION_DENIED,
                                 decision, "policy", bool(decision.approval) or decision.code == Code.RESOURCE_EXHAUSTED)
        breaker = provider.breaker
        if not (breaker.allow() if call is not None and probe else breaker.would_allow()):
            why = f"next probe in {breaker.retry_after():.1f}s" if breaker.retry_after() else "its one probe is in flight"
            return Admission(False, f"circuit open, {why}", Code.UNAVAILABLE, decision, "circuit")
        return Admission(decision=decision)
