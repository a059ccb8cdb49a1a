"""The built-in rules, in force unless `[plugins.governance] builtin = false`.

- builtin/local-first-privacy, builtin/local-first-local-only: inference (ModelService Generate,
  GenerateStream, Embed) on a remote provider is denied in privacy mode, or when the request asks
  for `local_only`, unless a rule allows it (overridable denies). The router enforces privacy
  mode on its own as well; these make the decision visible in the audit log and in `explain`.
- builtin/private-stays-local: a call carrying the `private` label (a `tags`/`labels` field of
  the request, or the `x-cortex-labels` header) never reaches a remote provider. Not overridable.
- builtin/policy-admin: plugins, MCP clients and agents may not add or remove policies unless a
  rule allows it (overridable).
- builtin/plugin-manifest: a plugin may call only the contracts it provides or its manifest
  declares (entry-point group `cortex.calls`). Computed, not written: see GovernancePlugin.
"""

from __future__ import annotations

from cortex.contracts.governance.v1 import governance_pb2 as pb

SOURCE = "built-in"
INFERENCE = ["Generate", "GenerateStream", "Embed"]
MODELS = ["cortex.models.v1.ModelService"]

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
        description="plugins, MCP clients, agents and HTTP clients may not change policies unless a rule allows it",
        effect=pb.EFFECT_DENY, services=["cortex.governance.v1.GovernanceService"],
        methods=["AddPolicy", "RemovePolicy"], principals=["plugin:*", "mcp:*", "a2a:*", "http:*"],
        overridable=True, source=SOURCE,
    ),
]

MANIFEST_RULE = pb.Rule(
    id="builtin/plugin-manifest",
    description="a plugin may call only the contracts its manifest declares (entry-point group cortex.calls)",
    effect=pb.EFFECT_DENY, principals=["plugin:*"], source=SOURCE,
)
