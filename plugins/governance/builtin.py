"""The built-in rules, in force unless `[plugins.governance] builtin = false`.

- builtin/local-first-privacy, builtin/local-first-local-only: inference (ModelService Generate,
  GenerateStream, Embed; RerankService Rerank) on a remote provider is denied in privacy mode, or when the request asks
  for `local_only`, unless a rule allows it (overridable denies). The router enforces privacy
  mode on its own as well; these make the decision visible in the audit log and in `explain`.
- builtin/private-stays-local: a call carrying the `private` label (a `tags`/`labels` field of
  the request, or the `x-cortex-labels` header) never reaches a remote provider. Not overridable.
- builtin/policy-admin: only `admin` (the admin token) adds or removes policies, unless a rule
  allows another principal (overridable; builtin/admin-administers is the allow for admin).
- builtin/plugin-admin: only `admin` installs, enables or disables plugins while the kernel runs
  (PluginService), unless a rule allows another principal (overridable).
- builtin/sources-admin: only `admin` adds or removes watched note folders (SourceService
  AddSource, RemoveSource: the kernel reads them as its own user), unless a rule allows another
  principal (overridable; builtin/admin-administers-sources is the allow for admin).
- builtin/local-never-administers: `local` (an unauthenticated caller on loopback) never changes
  policies, whatever else is allowed. Not overridable.
- builtin/approvals-admin: only `admin` approves or denies a call waiting for a person (GovernanceService
  DecideApproval), unless a rule allows another principal (overridable; builtin/admin-decides-approvals
  is the allow for admin).
- builtin/local-never-decides: `local` never approves or denies a waiting call. Not overridable.
- builtin/agents-never-decide: an approval is a person's: no plan step (plugin:cerebrum) nor an
  agent's tool call (plugin:mcp, plugin:a2a) decides one, even for admin. Not overridable. (The
  console, through plugin:http, is a person's browser with the person's credential.)
- builtin/local-default: `local` may call only the kernel's read-only service and the memory
  (source, archive), model, Cerebrum and event contracts (overridable: a rule allowing `local` more wins).
- builtin/plugin-manifest: a plugin may call only the contracts it provides or its manifest
  declares (entry-point group `cortex.calls`).
The last two are computed, not written: see Governance._computed_rule.
"""

from __future__ import annotations

from cortex.contracts.governance.v1 import governance_pb2 as pb

SOURCE = "built-in"
GOVERNANCE = "cortex.governance.v1.GovernanceService"
POLICY_ADMIN = ["AddPolicy", "RemovePolicy"]
PLUGINS = "cortex.kernel.v1.PluginService"
INFERENCE = ["Generate", "GenerateStream", "Embed", "Rerank"]
MODELS = ["cortex.models.v1.ModelService", "cortex.models.v1.RerankService"]
SOURCES = "cortex.memories.v1.SourceService"
SOURCE_ADMIN = ["AddSource", "RemoveSource"]
DECIDE = ["DecideApproval"]
# the approval methods themselves are never asked for (an ask there would wait for itself)
NEVER_ASKED = frozenset((GOVERNANCE, m) for m in ("ListApprovals", "GetApproval", "DecideApproval", "WaitApproval"))
AGENTS = ["plugin:cerebrum", "plugin:mcp", "plugin:a2a"]

BUILTIN_RULES = [
    pb.Rule(
        id="builtin/local-first-privacy",
        description="privacy mode: inference stays on local providers unless a rule allows a remote one",
        effect=pb.EFFECT_DENY, services=MODELS, methods=INFERENCE, provider=pb.LOCALITY_REMOTE,
        privacy_mode="true", overridable=True, source=SOURCE,
    ),
    pb.Rule(
        id="builtin/local-first-local-only",
        description="the request asks for local_only: inference stays on local providers unless a rule allows a remote one",
        effect=pb.EFFECT_DENY, services=MODELS, methods=INFERENCE, provider=pb.LOCALITY_REMOTE,
        fields={"local_only": "true"}, overridable=True, source=SOURCE,
    ),
    pb.Rule(
        id="builtin/private-stays-local",
        description="data labelled private never goes to a remote provider",
        effect=pb.EFFECT_DENY, provider=pb.LOCALITY_REMOTE, labels=["private"], source=SOURCE,
    ),
    pb.Rule(
        id="builtin/policy-admin",
        description="only admin changes policies, unless a rule allows another principal",
        effect=pb.EFFECT_DENY, services=[GOVERNANCE], methods=POLICY_ADMIN, overridable=True, source=SOURCE,
    ),
    pb.Rule(
        id="builtin/admin-administers",
        description="admin (the admin token) changes policies",
        effect=pb.EFFECT_ALLOW, services=[GOVERNANCE], methods=POLICY_ADMIN, principals=["admin"], source=SOURCE,
    ),
    pb.Rule(
        id="builtin/plugin-admin",
        description="only admin installs, enables or disables plugins while the kernel runs, unless a rule allows another principal",
        effect=pb.EFFECT_DENY, services=[PLUGINS], overridable=True, source=SOURCE,
    ),
    pb.Rule(
        id="builtin/admin-administers-plugins",
        description="admin (the admin token) installs, enables and disables plugins",
        effect=pb.EFFECT_ALLOW, services=[PLUGINS], principals=["admin"], source=SOURCE,
    ),
    pb.Rule(
        id="builtin/sources-admin",
        description=("only admin adds or removes watched note folders (the kernel reads them as its own user), "
                     "unless a rule allows another principal"),
        effect=pb.EFFECT_DENY, services=[SOURCES], methods=SOURCE_ADMIN, overridable=True, source=SOURCE,
    ),
    pb.Rule(
        id="builtin/admin-administers-sources",
        description="admin (the admin token) adds and removes watched note folders",
        effect=pb.EFFECT_ALLOW, services=[SOURCES], methods=SOURCE_ADMIN, principals=["admin"], source=SOURCE,
    ),
    pb.Rule(
        id="builtin/local-never-administers",
        description="an unauthenticated caller (local) never changes policies; call with the admin token or a key",
        effect=pb.EFFECT_DENY, services=[GOVERNANCE], methods=POLICY_ADMIN, principals=["local"], source=SOURCE,
    ),
    pb.Rule(
        id="builtin/approvals-admin",
        description="only admin approves or denies a call waiting for a person, unless a rule allows another principal",
        effect=pb.EFFECT_DENY, services=[GOVERNANCE], methods=DECIDE, overridable=True, source=SOURCE,
    ),
    pb.Rule(
        id="builtin/admin-decides-approvals",
        description="admin (the admin token) approves or denies calls waiting for a person",
        effect=pb.EFFECT_ALLOW, services=[GOVERNANCE], methods=DECIDE, principals=["admin"], source=SOURCE,
    ),
    pb.Rule(
        id="builtin/local-never-decides",
        description="an unauthenticated caller (local) never approves or denies a waiting call; use the admin token",
        effect=pb.EFFECT_DENY, services=[GOVERNANCE], methods=DECIDE, principals=["local"], source=SOURCE,
    ),
    pb.Rule(
        id="builtin/agents-never-decide",
        description="an approval is a person's: a plan step or an agent's tool call never approves or denies one",
        effect=pb.EFFECT_DENY, services=[GOVERNANCE], methods=DECIDE, principals=AGENTS, source=SOURCE,
    ),
]

# what an unauthenticated loopback caller may call unless a rule allows more
LOCAL_SERVICES = (
    "cortex.kernel.v1.KernelService", "cortex.memories.v1.MemoryService", SOURCES, "cortex.memories.v1.ArchiveService",
    "cortex.models.v1.ModelService", "cortex.models.v1.RerankService",
    "cortex.cerebrum.v1.CerebrumService", "cortex.events.v1.EventService",
    "cortex.console.v1.ConsoleService",  # who am I, and the activity charts: read-only
)
LOCAL_RULE = pb.Rule(
    id="builtin/local-default",
    description=(
        f"local (a caller without a credential) may call only {', '.join(s.rsplit('.', 1)[-1] for s in LOCAL_SERVICES)}: "
        "call with an API key (`cortex keys create NAME`) or add a policy rule allowing principal \"local\""
    ),
    effect=pb.EFFECT_DENY, principals=["local"], overridable=True, source=SOURCE,
)

MANIFEST_RULE = pb.Rule(
    id="builtin/plugin-manifest",
    description="a plugin may call only the contracts its manifest declares (entry-point group cortex.calls)",
    effect=pb.EFFECT_DENY, principals=["plugin:*"], source=SOURCE,
)
