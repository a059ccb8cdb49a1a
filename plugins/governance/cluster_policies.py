"""Policies changed through one kernel take effect on every kernel of its cluster.

AddPolicy and RemovePolicy publish `policy.changed` on the event bus, which the kernels of a cluster
share (NATS): the change (a policy document and the name of its file, or a rule id), who made it,
and the kernel's Ed25519 signature over both, by the key that signs its audit log. Every kernel
told whom to trust (`policy_peers`: the peers' public key files, each `<data dir>/governance/
public_key.pem`) follows that topic from a saved position and applies a change when, and only when,
it was published by a governance plugin and is signed by one of those peers: anyone who may write
to the bus can publish an event, but none can sign one for a key it does not hold. An applied
change is an entry of this kernel's audit chain too, naming the peer. A kernel that was down
catches up from its position; one that joins later replays every change from the first.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cortex.contracts.events.v1 import events_pb2, events_pb2_grpc

from .policy_files import Refused, add_policy, remove_rule

if TYPE_CHECKING:
    from .plugin import Governance

log = structlog.get_logger("cortex.governance.cluster")

TOPIC = "policy.changed"
PUBLISHER = "plugin:governance"


def raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def _body(change: dict[str, Any]) -> bytes:
    return json.dumps(change, sort_keys=True, separators=(",", ":")).encode()


def signed_change(key: Ed25519PrivateKey, action: str, fields: dict[str, str], principal: str) -> str:
    """The event's data: the change, the signer's public key, and its signature over the change."""
    change = {"action": action, **fields, "principal": principal, "at": time.time_ns() // 1_000_000}
    return json.dumps({"change": change, "key": base64.b64encode(raw(key.public_key())).decode(),
                       "signature": base64.b64encode(key.sign(_body(change))).decode()})


def load_peers(paths: list[str]) -> dict[bytes, str]:
    """Trusted peers' public keys (raw) by a name for them (their file's), from PEM files."""
    peers: dict[bytes, str] = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(Path(path).expanduser().read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"[plugins.governance] policy_peers: cannot read the public key {path!r}: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"[plugins.governance] policy_peers: {path!r} is not an Ed25519 public key (a kernel's "
                             "<data dir>/governance/public_key.pem)")
        peers[raw(key)] = f"kernel {fingerprint(raw(key))} ({Path(path).name})"
    return peers


class PolicySync:
    """Follows `policy.changed` on the bus and applies what trusted peers signed."""

    def __init__(self, gov: Governance, channel: Any, folder: Path, peers: dict[bytes, str], own: bytes):
        self.gov, self.channel, self.peers, self.own = gov, channel, peers, own
        self.position_file = folder / "policy-sync.position"
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cortex-policy-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _position(self) -> int:
        try:
            return int(self.position_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return 0

    def _save(self, position: int) -> None:
        tmp = self.position_file.with_suffix(".tmp")
        tmp.write_text(str(position))
        os.replace(tmp, self.position_file)

    async def _run(self) -> None:
        stub = events_pb2_grpc.EventServiceStub(self.channel)
        while True:
            request = events_pb2.SubscribeRequest(topics=[TOPIC], after_position=self._position())
            try:
                async for message in stub.Subscribe(request):
                    outcome = self.apply(message.event)
                    log.info("governance.peer_policy", position=message.event.position, outcome=outcome)
                    self._save(message.event.position)
            except grpc.RpcError as exc:
                log.warning("governance.policy_sync_interrupted", code=exc.code().name, details=exc.details())
            await asyncio.sleep(1.0)  # the bus is away, or not served yet: follow it again

    def apply(self, event: events_pb2.Event) -> str:
        """Apply one published change; what became of it, in words."""
        try:
            data = json.loads(event.data)
            change, public = data["change"], base64.b64decode(data["key"], validate=True)
            signature = base64.b64decode(data["signature"], validate=True)
            action = change["action"]
        except (ValueError, KeyError, TypeError):
            return "ignored: not a policy change"
        if public == self.own:
            return "ignored: this kernel's own change"
        if event.publisher != PUBLISHER:
            return f"ignored: published by {event.publisher!r}, not a governance plugin"
        peer = self.peers.get(public)
        if peer is None:
            return f"ignored: signed by kernel {fingerprint(public)}, not one of policy_peers"
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, _body(change))
        except (InvalidSignature, ValueError):
            return f"ignored: the signature of {peer} does not hold"
        who = f"{change.get('principal', '?')} via {peer}"
        try:
            if action == "add":
                path = self.gov.policy_dir / f"{str(change['name']).removesuffix('.toml')}.toml"
                if path.exists() and path.read_text(encoding="utf-8") == change["toml"]:
                    return "already in force"
                rules, _ = add_policy(self.gov, str(change["toml"]), str(change["name"]), who)
                return f"added {', '.join(r.id for r in rules)} from {peer}"
            if action == "remove":
                if not any(r.id == change["rule_id"] for r in self.gov.rules.rules):
                    return "already removed"
                return f"removed {remove_rule(self.gov, str(change['rule_id']), who).id} as {peer} did"
        except Refused as refused:
            log.error("governance.peer_policy_refused", peer=peer, action=action, reason=str(refused))
            return f"refused: {refused}"
        except KeyError:
            return "ignored: not a policy change"
        return f"ignored: unknown action {action!r}"
