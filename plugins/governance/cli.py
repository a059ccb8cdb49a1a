"""Governance commands: `cortex policy ...`, `cortex approvals ...`, `cortex proofs ...`, `cortex audit tail`.

`policy` and `approvals` talk to the running kernel; `proofs` and `audit` read the data dir directly, so that
verifying never needs the thing being verified to be up.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import click
from google.protobuf import json_format

from cortex.contracts.governance.v1 import governance_pb2 as pb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.kernel.sdk import (
    config_option,
    data_dir_of,
    data_dir_option,
    json_option,
    kernel_client,
    load_config_or_fail,
    print_json,
    print_table,
    target_option,
    to_dict,
)

from .approvals_cli import STATES, approvals
from .audit_writer import MAX_SIGN_MS, SIGN_MS
from .chain import (
    DB_FILE,
    PUBLIC_KEY_FILE,
    AuditChain,
    ChainError,
    checkpoint_problem,
    inclusion_problem,
    key_files_problem,
    load_public_key,
    proof_id,
    raw_public,
    verify_chain,
    verify_entry,
)
from .merkle import consistent
from .published import read_published
from .rules import PolicyError, parse_policy

EFFECTS = {pb.EFFECT_ALLOW: "allow", pb.EFFECT_DENY: "deny", pb.EFFECT_ASK: "ask", pb.EFFECT_UNSPECIFIED: "?"}
LOCALITY = {pb.LOCALITY_UNSPECIFIED: "any", pb.LOCALITY_LOCAL: "local", pb.LOCALITY_REMOTE: "remote"}


def _stub(config, target):
    client = kernel_client(config, target)
    return client, governance_pb2_grpc.GovernanceServiceStub(client.channel)


def _decision_text(decision: pb.Decision) -> str:
    lines = [f"{EFFECTS[decision.effect].upper()}" + (" (by default: no rule matched)" if decision.by_default else "")]
    lines += [f"  - {reason}" for reason in decision.reasons]
    return "\n".join(lines)


@click.group()
def policy() -> None:
    """Policies in force in the running kernel."""


@policy.command("list")
@config_option
@target_option
@json_option
def policy_list(config, target, as_json) -> None:
    """List every rule in force and where it comes from."""
    client, stub = _stub(config, target)
    reply = client.call(stub.ListPolicies, pb.ListPoliciesRequest())
    if as_json:
        return print_json(to_dict(reply))
    click.echo(f"default: {EFFECTS[reply.default_effect]}")
    print_table(
        [[r.id, EFFECTS[r.effect] + ("*" if r.overridable else ""), LOCALITY[r.provider], r.source, r.description] for r in reply.rules],
        ["ID", "EFFECT", "PROVIDER", "SOURCE", "DESCRIPTION"],
    )


@policy.command("add")
@config_option
@target_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def policy_add(config, target, file) -> None:
    """Add the rules of a policy FILE (TOML [[rule]] tables)."""
    text = Path(file).read_text(encoding="utf-8")
    try:
        parse_policy(text, file)  # report mistakes with this file's name and line
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    client, stub = _stub(config, target)
    reply = client.call(stub.AddPolicy, pb.AddPolicyRequest(toml=text, name=Path(file).stem))
    click.echo(f"added {', '.join(r.id for r in reply.rules)} (kept in {reply.path})")


@policy.command("remove")
@config_option
@target_option
@click.argument("rule_id")
def policy_remove(config, target, rule_id) -> None:
    """Remove rule RULE_ID (one added from a policy file)."""
    client, stub = _stub(config, target)
    reply = client.call(stub.RemovePolicy, pb.RemovePolicyRequest(id=rule_id))
    click.echo(f"removed {reply.removed.id} (from {reply.removed.source})")


@policy.command("explain")
@config_option
@target_option
@json_option
@click.argument("method")
@click.option("--principal", default="cli:local", show_default=True)
@click.option("--remote", is_flag=True, help="Judge the call as going to a remote provider.")
@click.option("--provider", default="", help="Provider name.")
@click.option("--field", "fields", multiple=True, metavar="NAME=VALUE", help="A request field (repeatable).")
@click.option("--label", "labels", multiple=True, help="A data label such as private (repeatable).")
def policy_explain(config, target, as_json, method, principal, remote, provider, fields, labels) -> None:
    """Explain the decision for METHOD ("package.Service/Method") without calling it."""
    service, _, name = method.strip("/").partition("/")
    if not service or not name:
        raise click.BadParameter("expected SERVICE/METHOD, e.g. cortex.models.v1.ModelService/Generate")
    pairs = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"--field {item!r}: expected NAME=VALUE")
        pairs[key] = value
    call = pb.CallDescription(
        service=service, method=name, principal=principal, provider=provider,
        provider_local=not remote, fields=pairs, labels=list(labels),
    )
    client, stub = _stub(config, target)
    reply = client.call(stub.Evaluate, pb.EvaluateRequest(call=call))
    if as_json:
        return print_json(to_dict(reply.decision))
    click.echo(_decision_text(reply.decision))


# -- offline: proofs and audit ------------------------------------------------------------------------


def _open_chain(folder: Path) -> AuditChain:
    try:
        return AuditChain(folder / "governance" / DB_FILE, read_only=True)
    except ChainError as exc:
        raise click.ClickException(f"{exc} (is --data-dir right?)") from None


def _entry_dict(entry: pb.AuditEntry) -> dict:
    return json_format.MessageToDict(entry, preserving_proto_field_name=True)




def signing_wait_s(config: str | None) -> float:
    """How long a running kernel may leave its newest entries unsigned (its `sign_ms`), and a
    second more: verifying waits that long for a head that covers them."""
    try:
        settings = load_config_or_fail(config).data.get("plugins", {}).get("governance", {})
        sign_ms = float(settings.get("sign_ms", SIGN_MS)) if isinstance(settings, dict) else SIGN_MS
    except (click.ClickException, TypeError, ValueError):
        sign_ms = SIGN_MS  # (a config that does not load: the default)
    return min(max(sign_ms, 0.0), MAX_SIGN_MS) / 1000 + 1.0


@click.group()
def proofs() -> None:
    """Verify, show and export proofs from the audit chain (offline: no kernel needed)."""


@proofs.command("verify")
@config_option
@data_dir_option
@click.option("--all", "verify_all", is_flag=True, help="Verify the whole chain (the default without ID).")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False), help="Expected public key (PEM), kept elsewhere.")
@click.option("--checkpoint", "checkpoint_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A checkpoint kept elsewhere (`cortex proofs checkpoint --out`): the log must still hold it (repeatable).")
@click.option("--published", is_flag=True,
              help="Also hold each chain to every checkpoint it published on the event bus (read through the kernel "
                   "at --target: in a cluster, the shared bus).")
@click.option("--chain", "chains", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Verify this kernel's data dir (repeatable: the chains of a cluster, together).")
@target_option
@click.argument("proof", required=False)
def proofs_verify(config, data_dir, verify_all, public_key, checkpoint_files, published, chains, target, proof) -> None:
    """Check signatures, the whole hash chain and its checkpoints; report the first broken entry.
    Exits 1 if anything is broken."""
    folder = data_dir_of(config, data_dir)
    try:
        expected = raw_public(load_public_key(Path(public_key))) if public_key else None
        kept = [read_checkpoint(Path(f)) for f in checkpoint_files]
    except (ValueError, ChainError) as exc:
        raise click.ClickException(str(exc)) from None
    if proof and not verify_all:
        chain = _open_chain(folder)
        try:
            entry = chain.get(int(proof[2:])) if proof.startswith("p-") and proof[2:].isdigit() else chain.proof_for_call(proof)
            if entry is None:
                raise click.ClickException(f"no proof {proof!r} in {chain.path}")
            key = expected or chain.public_key()
            problem = verify_entry(entry, key)
            if not problem and entry.seq > 1:
                before = chain.get(entry.seq - 1)
                if before is None or before.hash != entry.prev_hash:
                    problem = f"it does not link to entry {entry.seq - 1}"
            for cp in kept:  # the entry is in the log each kept checkpoint signed
                problem = problem or checkpoint_problem(cp, key) or inclusion_problem(entry, cp, chain.inclusion(entry, cp))
        finally:
            chain.close()
        if problem:
            click.echo(f"INVALID: {proof_id(entry)} (entry {entry.seq}): {problem}")
            sys.exit(1)
        click.echo(f"OK: {proof_id(entry)} (entry {entry.seq}) is signed and linked")
        return
    folders = [Path(c).expanduser().resolve() for c in chains] or [folder]
    if expected is not None and len(folders) > 1:
        raise click.ClickException("--public-key names one chain's key: verify one --chain with it")
    on_bus, ignored = read_published(kernel_client(config, target)) if published else ({}, 0)
    broken, keys = False, set()
    wait_s = signing_wait_s(config)
    for each in folders:
        broken = _verify_one(each, expected, kept, on_bus if published else None, len(folders) > 1, keys, wait_s) or broken
    if published:
        others = sum(len(cps) for key, cps in on_bus.items() if key not in keys)
        if others or ignored:
            click.echo(f"(on the bus besides: {others} checkpoints of chains not given, {ignored} events that are not "
                       "a governance plugin's checkpoint)")
    if broken:
        sys.exit(1)


def _verify_one(folder: Path, expected, kept, on_bus, named: bool, keys: set, wait_s: float) -> bool:
    """Verify the chain in `folder` (with the checkpoints it published, when `on_bus` is given);
    print its verdict; True when it is broken."""
    try:
        chain = AuditChain(folder / "governance" / DB_FILE, read_only=True)
        try:
            key = chain.public_key()
        finally:
            chain.close()
    except (ChainError, sqlite3.Error, ValueError):
        key = b""  # verify_chain says what is wrong with it
    keys.add(key)
    mine = on_bus.get(key, []) if on_bus is not None else []
    verdict = verify_chain(folder / "governance" / DB_FILE, expected, checkpoints=[*kept, *mine], wait_s=wait_s)
    label = f"{folder}: " if named else ""
    held = f"; the {len(mine)} checkpoints it published on the bus hold" if on_bus is not None and verdict.ok else ""
    click.echo(f"{label}{verdict}{held}")
    if not verdict.ok:
        return True
    swapped = key_files_problem(folder / "governance", key)
    if swapped:
        click.echo(f"{label}BROKEN: {swapped}")
    return bool(swapped)


def read_checkpoint(path: Path) -> pb.Checkpoint:
    try:
        return json_format.Parse(path.read_text(encoding="utf-8"), pb.Checkpoint())
    except (OSError, json_format.ParseError) as exc:
        raise ValueError(f"{path} is not a checkpoint written by `cortex proofs checkpoint --out`: {exc}") from None


@proofs.command("checkpoint")
@config_option
@data_dir_option
@click.option("--out", type=click.Path(dir_okay=False), help="Write it to this file (default: print it).")
def proofs_checkpoint(config, data_dir, out) -> None:
    """The newest tree head the kernel signed (size, Merkle root, time), after verifying the log
    up to it. Keep it elsewhere: `cortex proofs verify --checkpoint FILE` then catches entries
    removed from the end or rewritten, and `cortex proofs consistency FILE` shows the log only grew."""
    folder = data_dir_of(config, data_dir)
    verdict = verify_chain(folder / "governance" / DB_FILE, wait_s=signing_wait_s(config))
    if not verdict.ok:
        raise click.ClickException(f"the log does not verify, so no checkpoint of it is worth keeping: {verdict}")
    chain = _open_chain(folder)
    try:
        latest = chain.newest_head()
    finally:
        chain.close()
    if latest is None:
        raise click.ClickException("the kernel has not signed a tree head yet (it does with every batch it writes)")
    text = json.dumps(json_format.MessageToDict(latest, preserving_proto_field_name=True), indent=2)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
        click.echo(f"checkpoint of {latest.size} entries written to {out}")
    else:
        click.echo(text)


@proofs.command("consistency")
@config_option
@data_dir_option
@click.argument("old", type=click.Path(exists=True, dir_okay=False))
@click.argument("new", type=click.Path(exists=True, dir_okay=False), required=False)
def proofs_consistency(config, data_dir, old, new) -> None:
    """Show that the log only grew between two signed tree heads: OLD, kept earlier with
    `cortex proofs checkpoint --out`, and NEW (default: the log's newest head). Both signatures
    and the RFC 9162 consistency proof between them are checked. Exits 1 if they are not."""
    try:
        first = read_checkpoint(Path(old))
        second = read_checkpoint(Path(new)) if new else None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    chain = _open_chain(data_dir_of(config, data_dir))
    try:
        second = second or chain.newest_head()
        if second is None:
            raise click.ClickException("the log has no signed tree head yet")
        key = chain.public_key()
        size = chain.head_seq
        problem = checkpoint_problem(first, key) or checkpoint_problem(second, key)
        if not problem and not 0 < first.size <= second.size <= size:
            problem = f"no consistency proof from {first.size} to {second.size} entries in a log of {size}"
        if not problem and not consistent(first.size, first.root_hash, second.size, second.root_hash,
                                          chain.consistency(first.size, second.size)):
            problem = (f"the log of {second.size} entries does not extend the one of {first.size} that was signed: "
                       "entries up to it were rewritten")
    finally:
        chain.close()
    if problem:
        click.echo(f"INCONSISTENT: {problem}")
        sys.exit(1)
    click.echo(f"OK: the log of {second.size} entries extends the signed head of {first.size}")


@proofs.command("show")
@config_option
@data_dir_option
@click.argument("proof")
def proofs_show(config, data_dir, proof) -> None:
    """Show proof PROOF (a proof id p-<n>, or a call id) as JSON."""
    chain = _open_chain(data_dir_of(config, data_dir))
    try:
        entry = chain.get(int(proof[2:])) if proof.startswith("p-") and proof[2:].isdigit() else chain.proof_for_call(proof)
        if entry is None or not entry.HasField("proof"):
            raise click.ClickException(f"no proof {proof!r}")
        shown = {"proof_id": proof_id(entry), **_entry_dict(entry)}
        latest = chain.newest_head()
        if latest is not None and latest.size >= entry.seq:  # its place in the log, once a signed head covers it
            placed = pb.GetProofResponse(checkpoint=latest, inclusion=chain.inclusion(entry, latest))
            shown.update(json_format.MessageToDict(placed, preserving_proto_field_name=True))
    finally:
        chain.close()
    print_json(shown)


@proofs.command("export")
@config_option
@data_dir_option
@click.argument("path", type=click.Path(dir_okay=False))
def proofs_export(config, data_dir, path) -> None:
    """Write the whole chain to PATH as JSON lines, and the public key to PATH.pub.pem."""
    folder = data_dir_of(config, data_dir)
    chain = _open_chain(folder)
    count = 0
    try:
        with open(path, "w", encoding="utf-8") as out:
            for entry in chain.entries():
                out.write(json.dumps(_entry_dict(entry), sort_keys=True) + "\n")
                count += 1
    finally:
        chain.close()
    key = folder / "governance" / PUBLIC_KEY_FILE
    if key.exists():
        Path(f"{path}.pub.pem").write_bytes(key.read_bytes())
    click.echo(f"exported {count} entries to {path}")


@click.group()
def audit() -> None:
    """The audit chain (offline)."""


@audit.command("tail")
@config_option
@data_dir_option
@json_option
@click.option("-n", "count", default=20, show_default=True, help="How many entries.")
def audit_tail(config, data_dir, as_json, count) -> None:
    """Show the last entries of the audit chain."""
    chain = _open_chain(data_dir_of(config, data_dir))
    try:
        entries = chain.tail(max(1, min(count, 10_000)))
    finally:
        chain.close()
    if as_json:
        return print_json([_entry_dict(e) for e in entries])
    if entries:  # what each column is (SEQ: the entry's place in the chain: `cortex proofs show p-SEQ`, or the CALL id)
        click.echo(f"{'SEQ':>8}  {'ENTRY':<13} {'CALL':<18} WHAT")
    for e in entries:
        kind = e.WhichOneof("body")
        if kind == "proof":
            p = e.proof
            text = f"{p.service}/{p.method} by {p.principal} -> {p.provider or '-'} {p.status} ({p.latency_ms:.1f} ms)"
            if p.HasField("decision"):
                text += f" {EFFECTS[p.decision.effect]} [{', '.join(p.decision.rule_ids) or 'default'}]"
        elif kind == "decision":
            text = f"{e.call.service}/{e.call.method} by {e.call.principal} on {e.call.provider}: " + EFFECTS[e.decision.effect]
            text += f" [{', '.join(e.decision.rule_ids) or 'default'}]"
        elif kind == "policy_change":
            text = f"{e.policy_change.action} rule {e.policy_change.rule.id} by {e.policy_change.principal}"
        elif kind == "approval":
            a = e.approval
            text = f"{a.id} {STATES.get(a.state, '?')}" + (f" by {a.decided_by}" if a.decided_by else "")
            text += f": {a.call.service}/{a.call.method} for {a.call.principal}"
        else:
            text = "genesis"
        click.echo(f"{e.seq:>8}  {kind:<13} {e.call_id:<18} {text}")


def register(cli: click.Group) -> None:
    for group in (policy, approvals, proofs, audit):
        cli.add_command(group)
