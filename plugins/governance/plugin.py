"""The governance plugin: answers the kernel's authorize hook for every call, records every
decision and finished call in the audit chain, and serves GovernanceService.

Settings (`[plugins.governance]` in cortex.toml):

    default = "allow"          # the decision when no rule matches: allow | deny
    builtin = true             # the built-in rules (see builtin.py)
    batch_ms = 5               # calls finishing within this long share one append (one
    batch_entries = 512        # transaction), up to this many entries, whichever comes first
    sign_ms = 1000             # the tree head is signed this long after the first entry it does
                               # not cover (and when the log is read, and at stop); 0 to 10000,
                               # 0 = with every batch
    checkpoint_every = 1000    # keep (and publish) a signed tree head as a checkpoint after this
    checkpoint_seconds = 10    # many entries, or this long after the last one, whichever first
    policy_peers = []          # the kernels of this cluster whose policy changes this one applies:
                               # their public key files (<data dir>/governance/public_key.pem; cluster_policies.py)
    approval_timeout_seconds = 300  # a call a rule with effect "ask" matched waits this long for a
                               # person's approval, then it is denied (gate.py); approved, it may
                               # be used for as long after the approval
    approval_max_pending = 20  # approvals one principal may have waiting at once; past them a call
                               # that asks is refused with RESOURCE_EXHAUSTED
    [[plugins.governance.rule]] # rules written in the config itself, as in a policy file
    id = "..."

Policy files live in `<data dir>/policies/*.toml`; they are re-read when they change. A file with
a mistake is reported with its line and the rules in force stay as they were.

Each checkpoint it signs is also published on the event bus as `audit.checkpoint` (JSON, the
Checkpoint message), so that a webhook or a subscriber on another machine keeps a copy: the
copy is what makes a truncated or rewritten log detectable.
"""

from __future__ import annotations

import fnmatch
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf import json_format

from cortex.contracts.events.v1 import events_pb2
from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.kernel import Decision, Health, Unavailable, check_settings, hookimpl

from .audit_writer import MAX_SIGN_MS, SIGN_MS, AuditWriter
from .builtin import BUILTIN_RULES, LOCAL_RULE, LOCAL_SERVICES, MANIFEST_RULE, NEVER_ASKED
from .chain import AuditChain, load_or_create_key
from .rules import ALLOW, ASK, DENY, CallFacts, PolicyError, RuleSet, load_policy_dir, rules_from_tables

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

log = structlog.get_logger("cortex.governance")

SERVICE = pb.DESCRIPTOR.services_by_name["GovernanceService"]
SETTINGS = {"default", "builtin", "rule", "checkpoint_every", "checkpoint_seconds", "batch_ms", "batch_entries", "sign_ms",
            "policy_peers", "approval_timeout_seconds", "approval_max_pending"}
APPROVAL_TIMEOUT_S = 300.0
APPROVAL_MAX_PENDING = 20
MAX_APPROVAL_TIMEOUT_S = 30 * 24 * 3600.0


def request_fields(request: Any) -> dict[str, str]:
    """Top-level scalar fields of a request, as text ("true", "42", "note"), defaults included."""
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return {}
    values = {}
    for f in request.DESCRIPTOR.fields:
        if f.is_repeated or f.message_type is not None:
            continue
        value = getattr(request, f.name)
        values[f.name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return values


def canonical_sha256(message: Any) -> bytes:
    if message is None:
        return b""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()


class Governance:
    """Per-kernel state; pluggy registers the module-level instance below."""

    def __init__(self) -> None:
        self.chain: AuditChain | None = None
        self.rules = RuleSet([])
        self.privacy_mode = False
        self.plugins: dict[str, Any] = {}
        self.policy_dir = Path()
        self._settings: dict[str, Any] = {}
        self._pending: dict[str, list[tuple[pb.CallDescription, pb.Decision]]] = {}
        self._dir_state: tuple = ()
        self.rejected: list[PolicyError] = []  # policy files not in force, with file and line
        self.writer: AuditWriter | None = None
        self._channel: Any = None
        self._key: Any = None  # the signing key (chain heads, published policy changes)
        self.peers: dict[bytes, str] = {}
        self.sync: Any = None
        self._folder = Path()
        self.gate: Any = None  # approval gates (gate.py), once configured

    # -- lifecycle -------------------------------------------------------------------------------
    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, SETTINGS, context.name)
        if config.get("default", "allow") not in ("allow", "deny"):
            raise ValueError('[plugins.governance] default must be "allow" or "deny"')
        for name, lowest in (("checkpoint_every", 1), ("checkpoint_seconds", 0.01), ("batch_ms", 0), ("batch_entries", 1)):
            value = config.get(name, 1)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lowest:
                raise ValueError(f"[plugins.governance] {name} must be a number >= {lowest}")
        sign_ms = config.get("sign_ms", SIGN_MS)
        if isinstance(sign_ms, bool) or not isinstance(sign_ms, (int, float)) or not 0 <= sign_ms <= MAX_SIGN_MS:
            raise ValueError(f"[plugins.governance] sign_ms must be a number of milliseconds from 0 (sign with every "
                             f"batch) to {MAX_SIGN_MS}: how long a written entry may wait for a signed tree head")
        timeout = config.get("approval_timeout_seconds", APPROVAL_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_APPROVAL_TIMEOUT_S:
            raise ValueError(f"[plugins.governance] approval_timeout_seconds must be a number of seconds, "
                             f"above 0 and at most {MAX_APPROVAL_TIMEOUT_S:.0f} (30 days)")
        most = config.get("approval_max_pending", APPROVAL_MAX_PENDING)
        if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= 100_000:
            raise ValueError("[plugins.governance] approval_max_pending must be a whole number from 1 to 100000")
        self._settings = dict(config)
        self.privacy_mode = context.privacy_mode
        self.plugins = context.plugins
        self._channel = context.channel
        self.policy_dir = context.data_dir / "policies"
        self.policy_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._manifest_verdict.cache_clear()
        self.rules = RuleSet([])
        # At start there is nothing in force to keep: the good files load, a bad one is reported
        # (and health says NOT_SERVING until it is fixed). A bad rule in cortex.toml itself is a
        # configure error: the plugin is reported broken.
        self.reload(keep_on_error=False)
        folder = context.data_dir / "governance"
        peers = config.get("policy_peers", [])
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise ValueError("[plugins.governance] policy_peers is a list of public key files")
        from .cluster_policies import load_peers

        self.peers, self._folder = load_peers(peers), folder
        if self.writer is not None:
            self.writer.close()
        self._key = load_or_create_key(folder)
        self.chain = AuditChain(folder / "audit.db", self._key)
        self.writer = AuditWriter(
            self.chain, announce=self._announce,
            **{k: config[k] for k in ("batch_ms", "batch_entries", "sign_ms", "checkpoint_every", "checkpoint_seconds")
               if k in config},
        )
        from .approvals import DB_FILE as APPROVALS_DB
        from .approvals import ApprovalStore
        from .gate import ApprovalGate

        if self.gate is not None:
            self.gate.store.close()
        # (opened through at_rest: encrypted with the data dir, as the request summaries it holds must be)
        store = ApprovalStore(folder / APPROVALS_DB, context.data_dir, max_pending=most)
        self.gate = ApprovalGate(store, float(timeout), self._record)
        log.info("governance.ready", rules=len(self.rules.rules), chain_head=self.chain.head_seq)

    @hookimpl
    def cortex_register(self, registry) -> None:
        from .service import GovernanceServicer

        registry.add(SERVICE, GovernanceServicer(self))

    @hookimpl
    async def cortex_start(self, context) -> None:
        if self.peers and self._channel is not None:
            from .cluster_policies import PolicySync, raw

            self.sync = PolicySync(self, self._channel, self._folder, self.peers, raw(self._key.public_key()))
            self.sync.start()
        if self.gate is not None:
            self.gate.start()  # expires pending approvals at their time (those kept across a restart too)

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.sync is not None:
            await self.sync.stop()
            self.sync = None
        if self.gate is not None:
            await self.gate.stop()
            self.gate.store.close()
            self.gate = None
        if self.writer is not None:
            self.writer.close()  # what is queued, written; the log's last head, kept as a checkpoint
            self.writer = self.chain = None

    @property
    def failure(self) -> str:
        """Why the audit log cannot be written, while it cannot: calls are refused meanwhile."""
        return self.writer.failure if self.writer is not None else ""

    def flush(self) -> None:
        """Write what the observe hook queued, under a signed head (before reading the log)."""
        if self.writer is not None:
            self.writer.flush(sign=True)

    def _record(self, entries: list[pb.AuditEntry]) -> None:
        """Append `entries` now (an approval's decision or expiry), or fail: nothing is decided unrecorded."""
        if self.writer is None:
            raise Unavailable("the audit log is closed")
        self.writer.record(entries)

    def _announce(self, checkpoint: pb.Checkpoint) -> None:
        """Publish the checkpoint on the event bus, when one is served, without holding anyone up."""
        if self._channel is not None:
            data = json_format.MessageToJson(checkpoint, preserving_proto_field_name=True, indent=None)
            self._channel.publish(events_pb2.Event(type="audit.checkpoint", source="cortex/governance",
                                                   subject=str(checkpoint.size), data=data, datacontenttype="application/json"))

    def announce_policy(self, action: str, fields: dict[str, str], principal: str) -> None:
        """Publish a policy change made here, signed, for the kernels that follow this one's."""
        if self._channel is not None:
            from .cluster_policies import TOPIC, signed_change

            self._channel.publish(events_pb2.Event(type=TOPIC, source="cortex/governance", subject=action,
                                                   data=signed_change(self._key, action, fields, principal),
                                                   datacontenttype="application/json"))

    @hookimpl
    async def cortex_health(self) -> Health:
        self.reload_if_changed()
        if self.chain is None:
            return Health(False, "the audit chain is closed")
        if self.failure:
            self.flush()  # retry, so that the kernel recovers once the disk does
        if self.failure:
            return Health(False, self.failure)
        if self.rejected:
            return Health(False, "policy file rejected: " + "; ".join(map(str, self.rejected)))
        return Health(True, f"{len(self.rules.rules)} rules, chain at entry {self.chain.head_seq}")

    # -- policies ----------------------------------------------------------------------------------
    def _state_of_dir(self) -> tuple:
        return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(self.policy_dir.glob("*.toml")))

    def compose(self) -> tuple[RuleSet, list[PolicyError]]:
        """The rules: built-in, config, policy files; and the policy files rejected."""
        rules = list(BUILTIN_RULES) if self._settings.get("builtin", True) else []
        rules += rules_from_tables(self._settings.get("rule", []), "cortex.toml [plugins.governance]")
        from_files, rejected = load_policy_dir(self.policy_dir)
        seen = {r.id: r.source for r in rules}
        for rule in from_files:
            if rule.id in seen:
                rejected.append(PolicyError(f"rule id '{rule.id}' is already defined in {seen[rule.id]}", rule.source))
                continue
            seen[rule.id] = rule.source
            rules.append(rule)
        default = DENY if self._settings.get("default", "allow") == "deny" else ALLOW
        computed = self._computed_rule if self._settings.get("builtin", True) else self._manifest_check
        return RuleSet(rules, default, computed, never_asked=NEVER_ASKED), rejected

    def reload(self, keep_on_error: bool = True) -> None:
        """Put the policies on disk in force. With `keep_on_error`, any rejected file keeps the
        rules in force exactly as they were and raises the first problem."""
        state = self._state_of_dir()
        rules, rejected = self.compose()
        self._dir_state = state
        for problem in rejected:
            log.error("governance.policy_rejected", error=str(problem), kept_rules=len(self.rules.rules))
        if rejected and keep_on_error:
            raise rejected[0]
        self.rules, self.rejected = rules, rejected

    def reload_if_changed(self) -> None:
        if self._state_of_dir() == self._dir_state:
            return
        try:
            self.reload()
            log.info("governance.policies_reloaded", rules=len(self.rules.rules))
        except PolicyError as exc:
            self.rejected = [exc]

    # -- the computed rules ---------------------------------------------------------------------------------
    def _computed_rule(self, facts: CallFacts) -> pb.Rule | None:
        manifest = self._manifest_check(facts)  # (not overridable: before local's overridable default)
        if manifest is None and facts.principal == "local" and facts.service not in LOCAL_SERVICES:
            return LOCAL_RULE
        return manifest

    def _manifest_check(self, facts: CallFacts) -> pb.Rule | None:
        # a plugin's own call, or one it makes for a caller (a delegated call, a bridge's client):
        # either way it may reach only what its manifest declares
        for who in (facts.principal, *facts.actors):
            if who.startswith("plugin:"):
                # the record as it is now: a plugin reinstalled live declares what its new version does
                record = self.plugins.get(who[len("plugin:") :])
                verdict = self._manifest_verdict(who[len("plugin:") :], facts.service, tuple(getattr(record, "contracts", ())),
                                                 tuple(getattr(record, "calls", ())), getattr(record, "target", ""))
                if verdict is not None:
                    return verdict
        return None

    @lru_cache(maxsize=1024)  # noqa: B019 - one instance per process; cleared on configure
    def _manifest_verdict(self, plugin: str, service: str, contracts: tuple[str, ...], calls: tuple[str, ...],
                          target: str) -> pb.Rule | None:
        if any(fnmatch.fnmatchcase(service, pattern) for pattern in (*contracts, *calls)):
            return None
        rule = pb.Rule()
        rule.CopyFrom(MANIFEST_RULE)
        module = target.partition(":")[0].strip() or "<its plugin module>"
        rule.description = (
            f"plugin '{plugin}' may not call {service}: its manifest declares {', '.join(calls) or 'nothing'}. To allow it, add "
            f'"{plugin}.{service}" = "{module}" to [project.entry-points."cortex.calls"] in the '
            "plugin's pyproject.toml (the plugin's name is its entry-point name in the 'cortex' group) and reinstall it"
        )
        return rule

    # -- deciding ----------------------------------------------------------------------------------
    def facts(self, call) -> CallFacts:
        provider = call.provider
        return CallFacts(
            service=call.service,
            method=call.method_name,
            principal=call.principal,
            actor=call.actor,
            provider=provider.name if provider else "",
            provider_local=provider.local if provider else True,
            privacy_mode=self.privacy_mode,
            labels=frozenset(call.labels),  # the kernel's: its request's, its caller's, and what it got back
            fields=lambda: request_fields(call.request),
        )

    @hookimpl
    def cortex_authorize(self, call) -> Decision:
        if self.chain is None or self.failure:
            raise Unavailable(self.failure or "the audit log is closed")
        facts = self.facts(call)
        decision = self.rules.evaluate(facts)
        description = pb.CallDescription(
            service=facts.service, method=facts.method, principal=facts.principal,
            provider=facts.provider, provider_local=facts.provider_local, labels=sorted(facts.labels), actor=call.actor,
        )
        if decision.effect == ASK:  # a person decides (gate.py)
            if self.gate is None:
                raise Unavailable("approvals are closed")
            answer, decision = self.gate.judge(call, description, decision)
            self._pending.setdefault(call.id, []).append((description, decision))
            return answer
        self._pending.setdefault(call.id, []).append((description, decision))
        if decision.effect == DENY:
            # a deny that only keeps the call off remote providers (private stays local) is about
            # where the data may go: FAILED_PRECONDITION, as privacy mode's, not PERMISSION_DENIED
            route = bool(decision.rule_ids) and all(self.rules.locality(r) == pb.LOCALITY_REMOTE for r in decision.rule_ids)
            code = grpc.StatusCode.FAILED_PRECONDITION if route else None
            return Decision(False, list(decision.reasons), list(decision.rule_ids), code=code)
        return Decision(True, list(decision.reasons), list(decision.rule_ids))

    @hookimpl
    def cortex_observe(self, call, outcome) -> None:
        decided = self._pending.pop(call.id, [])
        if self.writer is None:
            return
        # One entry per call: its proof carries the decision that let it through (or stopped it)
        # and what was decided on. A call that was decided on more than once (failing over to
        # another provider) has the earlier decisions as entries of their own before it.
        description, decision = decided[-1] if decided else (None, None)
        if description is not None and call.redacted:  # (redaction happens after the decision, on the way out)
            description.redacted.update(call.redacted)
        approval = self.gate.for_proof(call.id) if self.gate is not None else None
        entries = [pb.AuditEntry(call_id=call.id, call=d, decision=v) for d, v in decided[:-1]]
        entries.append(
            pb.AuditEntry(
                call_id=call.id,
                call=description,
                proof=pb.Proof(
                    call_id=call.id,
                    parent_call_id=call.parent_id,
                    service=call.service,
                    method=call.method_name,
                    principal=call.principal,
                    actor=call.actor,
                    provider=outcome.provider or "",
                    status=outcome.code.name,
                    request_sha256=canonical_sha256(call.request),
                    response_sha256=canonical_sha256(outcome.response),
                    messages=outcome.messages,
                    decision=decision,
                    latency_ms=outcome.latency_s * 1000,
                    approval=approval,  # the person's approval it ran under (or the one it waits for)
                ),
            )
        )
        self.writer.add(entries)  # written off the event loop, in batches (audit_writer.py)

    @hookimpl
    def cortex_doctor(self, config, running) -> list:
        """The signing key is readable by its owner alone (the audit log's heads are only as good as it)."""
        import stat

        from cortex.kernel import FAIL, OK, DoctorCheck
        from cortex.kernel.sdk import load_config_or_fail

        from .chain import KEY_FILE

        key = load_config_or_fail(None).data_dir / "governance" / KEY_FILE  # the config `cortex doctor` checks
        if not key.exists():
            return [DoctorCheck("signing key", OK, "created on first start")]
        mode = stat.S_IMODE(key.stat().st_mode)
        if mode & 0o077:
            return [DoctorCheck("signing key", FAIL, f"{key} is mode {mode:o}", f"chmod 600 {key}")]
        return [DoctorCheck("signing key", OK, f"{key} (mode 600)")]

    @hookimpl
    def cortex_register_commands(self, cli) -> None:
        from .cli import register

        register(cli)


plugin = Governance()
