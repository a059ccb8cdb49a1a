"""The audit chain: an append-only, hash-chained, Ed25519-signed log in SQLite, with signed
checkpoints of its Merkle tree (merkle.py) so that a log cut short is caught too.

Each entry is an `AuditEntry` message. Its hash is the SHA-256 of its deterministic protobuf
serialization with `hash` and `signature` empty (so `prev_hash`, the previous entry's hash, is
covered). Genesis, proof and policy-change entries are signed (Ed25519 over the hash) with the key
entry 1 (genesis) names; decision entries are not signed themselves but are covered by the signed
proof that follows them in the same append, whose hash chains back through them. Verification needs
only the database file (and, to rule out a rewritten chain, a copy of the public key kept elsewhere).

The stored `kind`, `call_id` and `hash` columns are indexes derived from the hashed body: readers
check them against the body, and verification recomputes them; nothing is trusted from a column.

A checkpoint (a signed tree head, RFC 9162 style) says "the log's first N entries have Merkle
root R", signed by the chain's key. The kernel writes one as the log grows; a copy kept elsewhere
(`cortex proofs checkpoint --out`, the `audit.checkpoint` event) makes deleting the last entries,
or rewriting any entry below N, detectable: `cortex proofs verify --checkpoint FILE`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from cortex.contracts.governance.v1 import governance_pb2 as pb

from .merkle import Frontier, inclusion_proof, root_from_inclusion

SCHEMA_VERSION = 2
KEY_FILE, PUBLIC_KEY_FILE, DB_FILE = "signing_key.pem", "public_key.pem", "audit.db"

MAX_SEQ = 2**63 - 1  # entries are numbered from 1 in a SQLite INTEGER column


class ChainError(Exception):
    """The chain cannot be used as it is (e.g. the signing key does not match its genesis)."""


# -- keys --------------------------------------------------------------------------------------------
def load_or_create_key(folder: Path) -> Ed25519PrivateKey:
    """The kernel's signing key, created on first start with 0600 permissions; its public key is
    written beside it for third parties."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ChainError(f"{path} is not an Ed25519 private key")
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    public = folder / PUBLIC_KEY_FILE
    if not public.exists():  # never overwritten: a swapped key must not publish itself as the chain's
        public.write_bytes(public_pem(key.public_key()))
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ChainError(f"{path} is not an Ed25519 public key")
    return key


def key_files_problem(folder: Path, chain_key: bytes) -> str:
    """'' when the key files in `folder` (the signing key, its published public key) are the
    chain's key, else what was replaced: a swapped key signs nothing that verifies, but it must
    not go unnoticed either."""
    problems = []
    signing = folder / KEY_FILE
    if signing.exists():
        try:
            key = serialization.load_pem_private_key(signing.read_bytes(), password=None)
            mine = raw_public(key.public_key()) if isinstance(key, Ed25519PrivateKey) else b""
        except ValueError:
            mine = b""
        if mine != chain_key:
            problems.append(f"{KEY_FILE} (fingerprint {fingerprint(mine) if mine else 'unreadable'})")
    public = folder / PUBLIC_KEY_FILE
    if public.exists():
        try:
            published = raw_public(load_public_key(public))
        except (ValueError, ChainError):
            published = b""
        if published != chain_key:
            problems.append(f"{PUBLIC_KEY_FILE} (fingerprint {fingerprint(published) if published else 'unreadable'})")
    if not problems:
        return ""
    return (f"{' and '.join(problems)} in {folder} is not the key the chain was started with ({fingerprint(chain_key)}): "
            "the key file was replaced")


def fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


# -- hashing -------------------------------------------------------------------------------------------
SIGNED = frozenset({"genesis", "proof", "policy_change"})


def entry_hash(entry: pb.AuditEntry) -> bytes:
    if entry.hash or entry.signature:
        bare = pb.AuditEntry()
        bare.CopyFrom(entry)
        bare.ClearField("hash")
        bare.ClearField("signature")
        entry = bare
    return hashlib.sha256(entry.SerializeToString(deterministic=True)).digest()


def proof_id(entry: pb.AuditEntry) -> str:
    return f"p-{entry.seq}"


# -- the chain -----------------------------------------------------------------------------------------
class AuditChain:
    """One SQLite database, one writer (the kernel). Appends are committed before they return."""

    def __init__(self, path: Path, key: Ed25519PrivateKey | None = None, *, read_only: bool = False):
        self.path = path
        self._key = key
        if read_only:
            if not path.exists():
                raise ChainError(f"no audit chain at {path}")
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():  # owner-only from its first byte (SQLite's -wal and -shm copy it)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill
            self._migrate()
        self.head_seq, self.head_hash = self._head()
        self.frontier = Frontier()
        if not read_only:
            self.frontier.extend(self.leaves(MAX_SEQ))
            latest = self.latest_checkpoint()
            self.checkpointed_size = latest.size if latest else 0
            self._open_chain()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ChainError(f"{self.path} has schema {version}, newer than this Cortex-OS ({SCHEMA_VERSION})")
        if version < 1:
            self.db.executescript(
                """
                BEGIN;
                CREATE TABLE IF NOT EXISTS entries (
                    seq INTEGER PRIMARY KEY,
                    kind TEXT NOT NULL,
                    call_id TEXT NOT NULL DEFAULT '',
                    body BLOB NOT NULL
                );
                CREATE INDEX IF NOT EXISTS entries_call_id ON entries(call_id) WHERE call_id != '';
                PRAGMA user_version = 1;
                COMMIT;
                """
            )
            version = 1
        if version < 2:
            # the entry hash as a column (the Merkle tree is rebuilt from it on start), and checkpoints
            self.db.execute("BEGIN")
            self.db.execute("ALTER TABLE entries ADD COLUMN hash BLOB")
            for seq, body in self.db.execute("SELECT seq, body FROM entries").fetchall():
                self.db.execute("UPDATE entries SET hash = ? WHERE seq = ?", (pb.AuditEntry.FromString(body).hash, seq))
            self.db.execute("CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            self.db.execute("PRAGMA user_version = 2")
            self.db.execute("COMMIT")

    def _head(self) -> tuple[int, bytes]:
        row = self.db.execute("SELECT body FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return 0, b""
        entry = pb.AuditEntry.FromString(row[0])
        return entry.seq, entry.hash

    def _open_chain(self) -> None:
        if self._key is None:
            raise ChainError("a read-only chain cannot be opened for writing")
        mine = raw_public(self._key.public_key())
        if self.head_seq == 0:
            self.append([pb.AuditEntry(genesis=pb.Genesis(public_key=mine, created_by="cortex-os"))])
            return
        genesis = self.get(1)
        if genesis is None or genesis.WhichOneof("body") != "genesis":
            raise ChainError(f"{self.path}: entry 1 is not a genesis entry; the chain was altered")
        if genesis.genesis.public_key != mine:
            raise ChainError(
                f"the signing key (fingerprint {fingerprint(mine)}) is not the key this audit chain was "
                f"started with ({fingerprint(genesis.genesis.public_key)}): the key file was swapped. "
                "Restore the original signing_key.pem, or move the audit chain aside to start a new one."
            )

    def append(self, entries: list[pb.AuditEntry]) -> list[pb.AuditEntry]:
        """Link, hash, sign and store `entries` in one transaction; returns them completed."""
        if self._key is None:
            raise ChainError("this chain was opened read-only: it cannot be appended to")
        seq, prev = self.head_seq, self.head_hash
        now = time.time_ns()
        rows = []
        for entry in entries:
            seq += 1
            entry.seq, entry.prev_hash = seq, prev
            if not entry.time_unix_nanos:
                entry.time_unix_nanos = now
            digest = entry_hash(entry)
            kind = entry.WhichOneof("body")
            entry.hash = digest
            if kind in SIGNED:
                entry.signature = self._key.sign(digest)
            prev = digest
            rows.append((seq, kind, _call_id_of(entry), entry.SerializeToString(deterministic=True), digest))
        with self.db:  # one transaction: all or nothing
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO entries(seq, kind, call_id, body, hash) VALUES (?, ?, ?, ?, ?)", rows)
        self.head_seq, self.head_hash = seq, prev
        self.frontier.extend(row[4] for row in rows)
        return entries

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint(self) -> pb.Checkpoint:
        """Sign and store a checkpoint of the log as it is now (the newest one if nothing grew)."""
        if self.checkpointed_size == self.frontier.size and (latest := self.latest_checkpoint()) is not None:
            return latest
        if self._key is None:
            raise ChainError("this chain was opened read-only: it cannot sign checkpoints")
        cp = pb.Checkpoint(
            size=self.frontier.size, root_hash=self.frontier.root(), time_unix_nanos=time.time_ns(),
            public_key=raw_public(self._key.public_key()),
        )
        cp.signature = self._key.sign(checkpoint_note(cp))
        self.db.execute("INSERT OR REPLACE INTO checkpoints(size, body) VALUES (?, ?)", (cp.size, cp.SerializeToString()))
        self.checkpointed_size = cp.size
        return cp

    def latest_checkpoint(self) -> pb.Checkpoint | None:
        row = self.db.execute("SELECT body FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return pb.Checkpoint.FromString(row[0]) if row else None

    def leaves(self, size: int) -> list[bytes]:
        """The first `size` entry hashes, from the stored column (proofs made from it are checked
        against a signed root, so a wrong column cannot make a proof that verifies)."""
        return [h for (h,) in self.db.execute("SELECT hash FROM entries WHERE seq <= ? ORDER BY seq", (size,))]

    def inclusion(self, entry: pb.AuditEntry, checkpoint: pb.Checkpoint) -> list[bytes]:
        """The entry's RFC 9162 audit path in the tree `checkpoint` signed (it must cover the entry)."""
        return inclusion_proof(self.leaves(checkpoint.size), entry.seq - 1)

    def checkpoints(self) -> list[pb.Checkpoint]:
        return [pb.Checkpoint.FromString(b) for (b,) in self.db.execute("SELECT body FROM checkpoints ORDER BY size")]

    def get(self, seq: int) -> pb.AuditEntry | None:
        if not 0 < seq <= MAX_SEQ:  # no entry is numbered so (and SQLite's integers end there)
            return None
        row = self.db.execute("SELECT body FROM entries WHERE seq = ?", (seq,)).fetchone()
        return pb.AuditEntry.FromString(row[0]) if row else None

    def proof_for_call(self, call_id: str) -> pb.AuditEntry | None:
        """The call's proof. The columns only find candidates: the hashed body must say the same."""
        rows = self.db.execute(
            "SELECT body FROM entries WHERE call_id = ? AND kind = 'proof' ORDER BY seq DESC", (call_id,)
        )
        for (body,) in rows:
            entry = pb.AuditEntry.FromString(body)
            if entry.HasField("proof") and entry.proof.call_id == call_id:
                return entry
        return None

    def entries(self, from_seq: int = 0, limit: int = 0) -> Iterator[pb.AuditEntry]:
        if from_seq > MAX_SEQ:  # past any entry there can be
            return
        query = "SELECT body FROM entries WHERE seq >= ? ORDER BY seq"
        args: tuple = (from_seq,)
        if limit:
            query += " LIMIT ?"
            args += (limit,)
        for (body,) in self.db.execute(query, args):
            yield pb.AuditEntry.FromString(body)

    def tail(self, count: int) -> list[pb.AuditEntry]:
        rows = self.db.execute("SELECT body FROM entries ORDER BY seq DESC LIMIT ?", (count,)).fetchall()
        return [pb.AuditEntry.FromString(b) for (b,) in reversed(rows)]

    def public_key(self) -> bytes:
        genesis = self.get(1)
        return genesis.genesis.public_key if genesis is not None and genesis.HasField("genesis") else b""

    def close(self) -> None:
        self.db.close()


def _call_id_of(entry: pb.AuditEntry) -> str:
    return entry.proof.call_id if entry.HasField("proof") else entry.call_id


CHECKPOINT_ORIGIN = "cortex-os audit log"


def checkpoint_note(cp: pb.Checkpoint) -> bytes:
    """The signed text of a checkpoint (the shape of a C2SP tlog checkpoint, plus its time)."""
    return f"{CHECKPOINT_ORIGIN}\n{cp.size}\n{base64.b64encode(cp.root_hash).decode()}\n{cp.time_unix_nanos}\n".encode()


def inclusion_problem(entry: pb.AuditEntry, checkpoint: pb.Checkpoint, proof: list[bytes]) -> str:
    """'' when `proof` places the entry in the tree `checkpoint` signed, else why not (the
    checkpoint's own signature is checkpoint_problem's to judge)."""
    if not 0 < entry.seq <= checkpoint.size:
        return f"entry {entry.seq} is not covered by a checkpoint of {checkpoint.size} entries"
    if root_from_inclusion(entry.hash, entry.seq - 1, checkpoint.size, list(proof)) != checkpoint.root_hash:
        return f"entry {entry.seq} is not in the log the checkpoint of {checkpoint.size} entries signed"
    return ""


def checkpoint_problem(cp: pb.Checkpoint, key: bytes) -> str:
    """'' when `cp` is signed by `key`, else why not."""
    if cp.public_key and cp.public_key != key:
        return f"it was signed by key {fingerprint(cp.public_key)}, not the chain's key {fingerprint(key)}"
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(cp.signature, checkpoint_note(cp))
    except (InvalidSignature, ValueError):
        return f"its signature is not valid for key {fingerprint(key)}"
    return ""


# -- verification ----------------------------------------------------------------------------------------
@dataclass
class Verdict:
    ok: bool
    checked: int
    problem: str = ""
    seq: int = 0  # the first broken entry

    def __str__(self) -> str:
        return f"OK: {self.checked} entries verified" if self.ok else f"BROKEN at entry {self.seq}: {self.problem}"


def verify_entry(entry: pb.AuditEntry, public_key: bytes) -> str:
    """'' when the entry's hash and signature hold, else what is wrong."""
    if entry_hash(entry) != entry.hash:
        return "its content does not match its hash (the entry was altered)"
    if not entry.signature and entry.WhichOneof("body") not in SIGNED:
        return ""  # a decision: covered by the signed proof after it
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(entry.signature, entry.hash)
    except (InvalidSignature, ValueError):
        return f"its signature is not valid for the chain's key {fingerprint(public_key)}"
    return ""


def _verify_signatures(args: tuple[bytes, list[tuple[int, bytes, bytes]]]) -> tuple[int, str] | None:
    key_bytes, items = args
    key = Ed25519PublicKey.from_public_bytes(key_bytes)
    for seq, signature, digest in items:
        try:
            key.verify(signature, digest)
        except InvalidSignature:
            return seq, f"its signature is not valid for the chain's key {fingerprint(key_bytes)}"
    return None


def verify_chain(
    path: Path, expected_key: bytes | None = None, workers: int | None = None, checkpoints: list[pb.Checkpoint] = (),
) -> Verdict:
    """Walk the whole chain: order, links, hashes, the stored columns against the hashed bodies,
    every checkpoint (the chain's own and `checkpoints` kept elsewhere) against the Merkle tree,
    then every signature (in parallel)."""
    try:
        chain = AuditChain(path, read_only=True)
    except (ChainError, sqlite3.Error) as exc:
        return Verdict(False, 0, f"cannot open the chain: {exc}")
    try:
        has_hash = chain.db.execute("PRAGMA user_version").fetchone()[0] >= 2
        query = "SELECT seq, kind, call_id, hash, body FROM entries ORDER BY seq"
        if not has_hash:  # a chain from before schema 2, read-only: no hash column yet
            query = query.replace("hash,", "NULL,")
        rows = chain.db.execute(query).fetchall()
        stored = chain.checkpoints() if has_hash else []
    except sqlite3.Error as exc:
        return Verdict(False, 0, f"cannot read the chain: {exc}")
    finally:
        chain.close()
    if not rows:
        return Verdict(False, 0, "the chain is empty (no genesis entry)")
    key = b""
    prev = b""
    signed: list[tuple[int, bytes, bytes]] = []
    tree = Frontier()
    wanted = {cp.size for cp in [*stored, *checkpoints]}
    roots: dict[int, bytes] = {0: tree.root()} if 0 in wanted else {}
    for position, (row_seq, kind, call_id, column_hash, body) in enumerate(rows, start=1):
        try:
            entry = pb.AuditEntry.FromString(body)
        except DecodeError:
            return Verdict(False, position - 1, "the stored entry is not a valid AuditEntry", row_seq)
        if row_seq != position or entry.seq != position:
            missing = position if row_seq > position else row_seq
            return Verdict(
                False, position - 1,
                f"expected entry {position} here, found entry {entry.seq} in row {row_seq}: "
                f"entries were removed or reordered (first gap at {missing})",
                position,
            )
        if entry.prev_hash != prev:
            before = signed[-1] if signed and signed[-1][0] == position - 1 else None
            if before is not None and _verify_signatures((key, [before])) is not None:
                # the entry before was altered and re-hashed: its signature gives it away
                return Verdict(False, position - 2, "its signature does not match its content (altered and re-hashed)", position - 1)
            return Verdict(
                False, position - 1,
                "it does not link to the entry before it (an entry was removed, inserted or reordered)", position,
            )
        if entry_hash(entry) != entry.hash:
            return Verdict(False, position - 1, "its content does not match its hash (the entry was altered)", position)
        columns = (kind, call_id) + ((column_hash,) if has_hash else ())
        if columns != (entry.WhichOneof("body"), _call_id_of(entry)) + ((entry.hash,) if has_hash else ()):
            return Verdict(
                False, position - 1,
                "its stored kind, call_id or hash column does not match its hashed content (the row was edited)", position,
            )
        if position == 1:
            if not entry.HasField("genesis") or len(entry.genesis.public_key) != 32:
                return Verdict(False, 0, "the first entry is not a genesis entry naming the key", 1)
            key = entry.genesis.public_key
            if expected_key is not None and key != expected_key:
                return Verdict(
                    False, 0,
                    f"the chain was started with key {fingerprint(key)}, not the expected {fingerprint(expected_key)} "
                    "(the key was swapped and the chain rewritten)",
                    1,
                )
        if entry.WhichOneof("body") in SIGNED or entry.signature:
            signed.append((position, entry.signature, entry.hash))
        prev = entry.hash
        tree.append(entry.hash)
        if position in wanted:
            roots[position] = tree.root()
    problem = _check_checkpoints(stored, "the chain's own checkpoint", key, roots, len(rows)) or _check_checkpoints(
        list(checkpoints), "the checkpoint you gave", key, roots, len(rows)
    )
    if problem is not None:
        return problem
    broken = _check_signatures(key, signed, workers)
    if broken is not None:
        seq, problem_text = broken
        return Verdict(False, seq - 1, problem_text, seq)
    return Verdict(True, len(rows))


def _check_checkpoints(
    checkpoints: list[pb.Checkpoint], which: str, key: bytes, roots: dict[int, bytes], count: int
) -> Verdict | None:
    for cp in checkpoints:
        signature = checkpoint_problem(cp, key)
        if signature:
            return Verdict(False, count, f"{which} of size {cp.size}: {signature}", min(cp.size, count) or 1)
        if cp.size > count:
            return Verdict(
                False, count,
                f"{which} says the log had {cp.size} entries, but it has {count}: "
                f"entries {count + 1} to {cp.size} were removed from its end",
                count + 1,
            )
        if roots.get(cp.size) != cp.root_hash:
            return Verdict(
                False, count,
                f"the first {cp.size} entries no longer have the Merkle root {which} signed: "
                "entries up to it were rewritten (re-hashed and re-linked)",
                cp.size,
            )
    return None


def _check_signatures(key: bytes, signed: list[tuple[int, bytes, bytes]], workers: int | None) -> tuple[int, str] | None:
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if workers <= 1 or len(signed) < 20_000:
        return _verify_signatures((key, signed))
    size = -(-len(signed) // (workers * 4))
    chunks = [signed[i : i + size] for i in range(0, len(signed), size)]
    with ProcessPoolExecutor(workers) as pool:
        for result in pool.map(_verify_signatures, [(key, c) for c in chunks]):
            if result is not None:
                return result  # chunks come back in order: this is the first bad one
    return None
