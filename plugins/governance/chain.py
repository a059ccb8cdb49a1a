"""The audit log: an append-only, hash-chained Merkle tree log (RFC 9162 style) in SQLite, whose
tree heads the kernel signs with Ed25519.

Each entry is an `AuditEntry` message. Its hash is the SHA-256 of its deterministic protobuf
serialization with `hash` and `signature` empty (so `prev_hash`, the previous entry's hash, is
covered). The entry hashes are the leaves of a Merkle tree (merkle.py). The kernel signs tree heads of the
whole log, "the first N entries have Merkle root R", not entries (Certificate Transparency signs
tree heads, not certificates): the audit writer appends batches as calls finish and signs a head
within `sign_ms` of the first entry it does not cover yet (1 s; 0: with every append), at once
when anyone reads the log through the kernel, and at stop. A signature per append was a third of
each append's cost. Entries past the newest head are hash-linked to it but not yet signed, as a
Certificate Transparency log's newest entries wait for its next signed tree head: the offline
verifier waits for the head to catch up before it calls such a tail added without the key. Each
append that is not signed stores a tail tag, an HMAC of the new tree head under a key derived
from the signing key (microseconds, where a signature took a tenth of a millisecond): a kernel
killed inside the window signs the tail it finds at its next start only when the tag says it
wrote exactly that tail, and otherwise refuses to start. Genesis and policy-change entries are
signed themselves, and signed under a head at once.
Verification needs only the database file (and, to rule out a rewritten log, a copy of the public
key or of a signed head kept elsewhere).

The stored `kind`, `call_id` and `hash` columns are indexes derived from the hashed body: readers
check them against the body, and verification recomputes them; nothing is trusted from a column.
The `subtrees` table caches the roots of perfect subtrees of 256 leaves and more, so that
inclusion and consistency proofs in a log of millions of entries read a few dozen rows; a proof
is always checked against a signed root, so a wrong cached hash cannot make one that verifies.

Checkpoints are the signed tree heads the log keeps (every `checkpoint_every` entries or
`checkpoint_seconds`, and at stop), and publishes: a copy kept elsewhere (`cortex proofs
checkpoint --out`, the `audit.checkpoint` event) makes deleting the last entries, or rewriting
any entry below it, detectable: `cortex proofs verify --checkpoint FILE`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from cortex.contracts.governance.v1 import governance_pb2 as pb

from .merkle import Frontier, consistency_path, inclusion_path, node_hash, root_from_inclusion, split_point, tree_hash

log = structlog.get_logger("cortex.governance")

SCHEMA_VERSION = 4
SUBTREE = 256  # perfect subtrees this large and larger are stored (about n / 128 rows)
# An entry with only `hash` set after its body serializes as the body's bytes followed by this
# field (20, length-delimited, 32 bytes): hash 20 and signature 21 are the highest field numbers.
HASH_FIELD = b"\xa2\x01\x20"
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
SIGNED = frozenset({"genesis", "policy_change"})  # the rest are covered by the signed tree heads


def entry_hash(entry: pb.AuditEntry) -> bytes:
    if entry.hash or entry.signature:
        bare = pb.AuditEntry()
        bare.CopyFrom(entry)
        bare.ClearField("hash")
        bare.ClearField("signature")
        entry = bare
    return hashlib.sha256(entry.SerializeToString(deterministic=True)).digest()


def hashes_as_written(body: bytes, entry: pb.AuditEntry) -> bool:
    """Whether the stored `body` of `entry` hashes to its `hash`. An entry as the kernel wrote it is
    its hashed bytes followed by its hash: hashing those bytes is the same check as re-serializing
    the entry, at a fraction of the cost."""
    digest = entry.hash
    if body[-35:-32] == HASH_FIELD and body[-32:] == digest and hashlib.sha256(body[:-35]).digest() == digest:
        return True
    return entry_hash(entry) == digest


def proof_id(entry: pb.AuditEntry) -> str:
    return f"p-{entry.seq}"


# -- the chain -----------------------------------------------------------------------------------------
class AuditChain:
    """One SQLite database, one writer (the kernel). Appends are committed before they return.

    Appends (and keeping checkpoints) use `db`; everything that reads uses `reader`, a second
    connection that sees only committed entries, so that the kernel's audit writer thread and
    the GovernanceService on the event loop never share a connection. `head` changes only after
    its entries are committed."""

    def __init__(self, path: Path, key: Ed25519PrivateKey | None = None, *, read_only: bool = False):
        self.path = path
        self._key = key
        self._tag_key = b""  # the tail tags' HMAC key, derived from the signing key
        self._mine = b""  # the signing key's public half, as every head carries it
        if key is not None:
            self._mine = raw_public(key.public_key())
            raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
            self._tag_key = hashlib.sha256(b"cortex-os audit tail tag\n" + raw).digest()
        if read_only:
            if not path.exists():
                raise ChainError(f"no audit chain at {path}")
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            self.reader = self.db
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():  # owner-only from its first byte (SQLite's -wal and -shm copy it)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill
            self._migrate()
            self.reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.head_seq, self.head_hash = self._head()
        self.frontier = Frontier(SUBTREE)
        self.head: pb.Checkpoint | None = None  # the newest signed tree head (entries after it: `unsigned`)
        if not read_only:
            latest = self.latest_checkpoint()
            self.checkpointed_size = latest.size if latest else 0
            self._check_key()  # before anything is signed with it
            self._open_tree()
            if self.head_seq == 0:
                self.append([pb.AuditEntry(genesis=pb.Genesis(public_key=self._public(), created_by="cortex-os"))])

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
        if version < 3:
            # the newest signed tree head (with the frontier, so a start need not re-read every
            # leaf) and the stored subtree roots; both are filled by _open_tree
            self.db.executescript(
                """
                BEGIN;
                CREATE TABLE subtrees (size INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
                                       PRIMARY KEY (size, idx)) WITHOUT ROWID;
                CREATE TABLE tree_head (id INTEGER PRIMARY KEY CHECK (id = 1), body BLOB NOT NULL, frontier BLOB NOT NULL);
                PRAGMA user_version = 3;
                COMMIT;
                """
            )
        if version < 4:  # the tail tag: what the kernel appended after its newest signed head
            self.db.executescript(
                """
                BEGIN;
                CREATE TABLE IF NOT EXISTS tail_tag (id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL, tag BLOB NOT NULL);
                PRAGMA user_version = 4;
                COMMIT;
                """
            )

    def _head(self) -> tuple[int, bytes]:
        row = self.reader.execute("SELECT body FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return 0, b""
        entry = pb.AuditEntry.FromString(row[0])
        return entry.seq, entry.hash

    def _open_tree(self) -> None:
        """The frontier from the stored tree head, and the entries after it (a kernel killed before
        it signed them) checked and signed; a chain from before schema 3 (no head yet) gets its
        tree rebuilt from every leaf, subtrees too. A stored head that does not match the log, or
        is not signed with this key, stops the start: the log was altered."""
        row = self.db.execute("SELECT body, frontier FROM tree_head WHERE id = 1").fetchone()
        if row is not None:
            head = pb.Checkpoint.FromString(row[0])
            try:
                frontier = Frontier.from_bytes(row[1], SUBTREE)
            except ValueError:
                frontier = None
            problem = checkpoint_problem(head, self._public())
            if problem or frontier is None or not head.size == frontier.size <= self.head_seq or head.root_hash != frontier.root():
                raise ChainError(
                    f"{self.path}: the stored signed tree head ({head.size} entries) "
                    + (problem or f"does not match the log of {self.head_seq} entries")
                    + ": entries were removed or the head was altered. `cortex proofs verify --all` says where."
                )
            self.frontier, self.head = frontier, head
            if head.size < self.head_seq:
                self._sign_tail()
            return
        started = time.monotonic()
        self.frontier = Frontier(SUBTREE)
        self.frontier.extend(self.leaves(MAX_SEQ))
        with self.db:
            self.db.execute("BEGIN")
            self._store_subtrees()
            if self.frontier.size:
                self.head = self._sign_head()
        if self.frontier.size:
            log.info("governance.tree_rebuilt", entries=self.frontier.size, seconds=round(time.monotonic() - started, 3))

    def _sign_tail(self) -> None:
        """Sign the entries a killed kernel left after its newest head, once their hashes and links
        hold and the tail tag says this kernel wrote exactly them (a tail added or rewritten without
        the key is not signed: the chain cannot be used until it is looked at)."""
        signed = self.head.size
        prev = self.get(signed).hash if signed else b""
        rows = self.db.execute("SELECT seq, body FROM entries WHERE seq > ? ORDER BY seq", (signed,)).fetchall()
        for seq, body in rows:
            entry = pb.AuditEntry.FromString(body)
            if entry.seq != seq or entry.prev_hash != prev or not hashes_as_written(body, entry):
                raise ChainError(
                    f"{self.path}: entry {seq}, written after the newest signed tree head ({signed} entries), "
                    "does not hash or link as written: the log was altered. See `cortex proofs verify --all`."
                )
            self.frontier.append(entry.hash)
            prev = entry.hash
        tag = self.db.execute("SELECT size, tag FROM tail_tag WHERE id = 1").fetchone()
        if tag is None or tag[0] != self.frontier.size or not hmac.compare_digest(tag[1], self._tail_tag()):
            raise ChainError(
                f"{self.path}: entries {signed + 1} to {self.head_seq}, written after the newest signed tree head, "
                "are not the ones this kernel wrote (their tail tag does not match): they were added or rewritten "
                "without the key. See `cortex proofs verify --all`."
            )
        self.sign()
        log.info("governance.tail_signed", entries=len(rows), head=self.head.size)

    def _tail_tag(self) -> bytes:
        """The HMAC of the tree head as it is now: the kernel's word, without a signature, that it wrote these entries."""
        message = struct.pack(">Q", self.frontier.size) + self.frontier.root()
        return hmac.new(self._tag_key, message, hashlib.sha256).digest()

    def _public(self) -> bytes:
        if self._key is None:
            raise ChainError("a read-only chain cannot be opened for writing")
        return self._mine

    def _store_subtrees(self) -> None:
        if self.frontier.completed:
            self.db.executemany("INSERT OR REPLACE INTO subtrees(size, idx, hash) VALUES (?, ?, ?)", self.frontier.completed)
            self.frontier.completed = []

    def _sign_head(self) -> pb.Checkpoint:
        """Sign the tree head of the whole log and store it (inside the caller's transaction)."""
        head = pb.Checkpoint(
            size=self.frontier.size, root_hash=self.frontier.root(), time_unix_nanos=time.time_ns(),
            public_key=self._mine,
        )
        head.signature = self._key.sign(checkpoint_note(head))
        self.db.execute(
            "INSERT OR REPLACE INTO tree_head(id, body, frontier) VALUES (1, ?, ?)",
            (head.SerializeToString(), self.frontier.to_bytes()),
        )
        return head

    def _check_key(self) -> None:
        """The signing key is the one the chain was started with (a new chain: any)."""
        mine = self._public()
        if self.head_seq == 0:
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

    def append(self, entries: list[pb.AuditEntry], *, sign: bool = True) -> list[pb.AuditEntry]:
        """Link, hash and store `entries` (and, with `sign`, sign the new tree head) in one
        transaction; returns them completed. A failure leaves the log, the tree and the head as
        they were."""
        if self._key is None:
            raise ChainError("this chain was opened read-only: it cannot be appended to")
        seq, prev = self.head_seq, self.head_hash
        now = time.time_ns()
        rows = []
        for entry in entries:
            seq += 1
            entry.ClearField("hash")
            entry.ClearField("signature")
            entry.seq, entry.prev_hash = seq, prev
            if not entry.time_unix_nanos:
                entry.time_unix_nanos = now
            bare = entry.SerializeToString(deterministic=True)
            digest = hashlib.sha256(bare).digest()
            kind = entry.WhichOneof("body")
            entry.hash = digest
            if kind in SIGNED:
                entry.signature = self._key.sign(digest)
                body = entry.SerializeToString(deterministic=True)
            else:
                body = bare + HASH_FIELD + digest  # the same bytes, without serializing twice
            prev = digest
            rows.append((seq, kind, _call_id_of(entry), body, digest))
        frontier = self.frontier.copy()
        try:
            with self.db:  # one transaction: all or nothing
                self.db.execute("BEGIN")
                self.db.executemany("INSERT INTO entries(seq, kind, call_id, body, hash) VALUES (?, ?, ?, ?, ?)", rows)
                self.frontier.extend(row[4] for row in rows)
                self._store_subtrees()
                if sign:
                    head = self._sign_head()
                else:  # the kernel's word that it wrote them, for a start after a kill (_sign_tail)
                    head = self.head
                    self.db.execute("INSERT OR REPLACE INTO tail_tag(id, size, tag) VALUES (1, ?, ?)",
                                    (self.frontier.size, self._tail_tag()))
        except BaseException:
            self.frontier = frontier
            raise
        self.head_seq, self.head_hash, self.head = seq, prev, head
        return entries

    @property
    def unsigned(self) -> int:
        """Entries appended after the newest signed tree head."""
        return self.frontier.size - (self.head.size if self.head else 0)

    def sign(self) -> pb.Checkpoint:
        """The newest signed tree head, signed now if entries were appended after it."""
        if self._key is None:
            raise ChainError("this chain was opened read-only: it cannot sign")
        if self.head is None or self.unsigned:
            with self.db:
                self.db.execute("BEGIN")
                head = self._sign_head()
            self.head = head
        return self.head

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint(self) -> pb.Checkpoint:
        """Sign the log's head and keep it as a checkpoint (if the log grew since the last one kept)."""
        self.sign()
        if self.checkpointed_size != self.head.size:
            self.db.execute("INSERT OR REPLACE INTO checkpoints(size, body) VALUES (?, ?)", (self.head.size, self.head.SerializeToString()))
            self.checkpointed_size = self.head.size
        return self.head

    def latest_checkpoint(self) -> pb.Checkpoint | None:
        row = self.reader.execute("SELECT body FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return pb.Checkpoint.FromString(row[0]) if row else None

    def stored_head(self) -> pb.Checkpoint | None:
        """The tree head as stored (what a verifier reads; the writer keeps its own in `head`)."""
        try:
            row = self.reader.execute("SELECT body FROM tree_head WHERE id = 1").fetchone()
        except sqlite3.OperationalError:  # a chain from before schema 3
            return None
        return pb.Checkpoint.FromString(row[0]) if row else None

    def newest_head(self) -> pb.Checkpoint | None:
        """The newest signed tree head (entries written since may wait for the next), else the newest kept checkpoint."""
        return self.head or self.stored_head() or self.latest_checkpoint()

    def leaves(self, size: int) -> list[bytes]:
        """The first `size` entry hashes, from the stored column (proofs made from it are checked
        against a signed root, so a wrong column cannot make a proof that verifies)."""
        return [h for (h,) in self.reader.execute("SELECT hash FROM entries WHERE seq <= ? ORDER BY seq", (size,))]

    def _mth(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end): stored subtree roots where they exist, leaves for the rest."""
        n = end - start
        if n >= SUBTREE and n & (n - 1) == 0 and start % n == 0:
            row = self.reader.execute("SELECT hash FROM subtrees WHERE size = ? AND idx = ?", (n, start // n)).fetchone()
            if row is not None:
                return row[0]
        if n <= SUBTREE:
            rows = self.reader.execute("SELECT hash FROM entries WHERE seq > ? AND seq <= ? ORDER BY seq", (start, end))
            return tree_hash(h for (h,) in rows)
        k = split_point(n)
        return node_hash(self._mth(start, start + k), self._mth(start + k, end))

    def inclusion(self, entry: pb.AuditEntry, checkpoint: pb.Checkpoint) -> list[bytes]:
        """The entry's RFC 9162 audit path in the tree `checkpoint` signed (it must cover the entry)."""
        return inclusion_path(entry.seq - 1, checkpoint.size, self._mth)

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof that the log's first `old_size` entries are a prefix of its first `new_size`."""
        return consistency_path(old_size, new_size, self._mth)

    def checkpoints(self) -> list[pb.Checkpoint]:
        return [pb.Checkpoint.FromString(b) for (b,) in self.reader.execute("SELECT body FROM checkpoints ORDER BY size")]

    def get(self, seq: int) -> pb.AuditEntry | None:
        if not 0 < seq <= MAX_SEQ:  # no entry is numbered so (and SQLite's integers end there)
            return None
        row = self.reader.execute("SELECT body FROM entries WHERE seq = ?", (seq,)).fetchone()
        return pb.AuditEntry.FromString(row[0]) if row else None

    def proof_for_call(self, call_id: str) -> pb.AuditEntry | None:
        """The call's proof. The columns only find candidates: the hashed body must say the same."""
        rows = self.reader.execute(
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
        for (body,) in self.reader.execute(query, args):
            yield pb.AuditEntry.FromString(body)

    def tail(self, count: int) -> list[pb.AuditEntry]:
        rows = self.reader.execute("SELECT body FROM entries ORDER BY seq DESC LIMIT ?", (count,)).fetchall()
        return [pb.AuditEntry.FromString(b) for (b,) in reversed(rows)]

    def public_key(self) -> bytes:
        genesis = self.get(1)
        return genesis.genesis.public_key if genesis is not None and genesis.HasField("genesis") else b""

    def close(self) -> None:
        if self.reader is not self.db:
            self.reader.close()
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
    unsigned: int = 0  # the newest entries, after the newest signed tree head

    def __str__(self) -> str:
        if not self.ok:
            return f"BROKEN at entry {self.seq}: {self.problem}"
        if self.unsigned:
            return (f"OK: {self.checked} entries verified; {self.unsigned} written since wait for the kernel's "
                    "next signed tree head")
        return f"OK: {self.checked} entries verified"


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
    *, signed_through: int | None = None, wait_s: float = 0.0,
) -> Verdict:
    """Walk the whole log: order, links, hashes, the stored columns against the hashed bodies;
    then every signed tree head (the newest, which must cover every entry but those written since
    the verifier began; the checkpoints kept in the log; `checkpoints` kept elsewhere) against the
    Merkle tree of the entries, and every signature on an entry (in parallel).

    Entries after the newest signed head are a running kernel's that it has not signed yet, or
    were added without the key. Every entry up to `signed_through` (default: all) must be under a
    signed head; those after it (written since the verifier began: the kernel verifying its own
    log passes the head it has just signed, and that head among `checkpoints`) are reported, not
    vouched for. A tail no head covers is waited for up to `wait_s` (the kernel's signing window);
    then every entry of the first walk must be signed, and those written since may wait."""
    verdict = _walk(path, expected_key, workers, checkpoints, signed_through)
    if verdict.ok or not verdict.unsigned or wait_s <= 0:
        return verdict
    covered, deadline = verdict.checked + verdict.unsigned, time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(min(0.1, wait_s))
        try:
            head = AuditChain(path, read_only=True)
            try:
                size = (head.stored_head() or pb.Checkpoint()).size
            finally:
                head.close()
        except (ChainError, sqlite3.Error, DecodeError):
            break
        if size >= covered:
            return _walk(path, expected_key, workers, checkpoints, covered)
    return verdict


def _walk(path: Path, expected_key: bytes | None, workers: int | None, checkpoints: list[pb.Checkpoint],
          signed_through: int | None) -> Verdict:
    try:
        chain = AuditChain(path, read_only=True)
    except (ChainError, sqlite3.Error) as exc:
        return Verdict(False, 0, f"cannot open the chain: {exc}")
    try:
        chain.db.execute("BEGIN")  # one snapshot: the entries and the heads as of one moment of a live kernel
        version = chain.db.execute("PRAGMA user_version").fetchone()[0]
        query = "SELECT seq, kind, call_id, hash, body FROM entries ORDER BY seq"
        if version < 2:  # a chain from before schema 2, read-only: no hash column yet
            query = query.replace("hash,", "NULL,")
        rows = chain.db.execute(query).fetchall()
        stored = chain.checkpoints() if version >= 2 else []
        head = chain.stored_head() if version >= 3 else None
    except (sqlite3.Error, DecodeError) as exc:
        return Verdict(False, 0, f"cannot read the chain: {exc}")
    finally:
        chain.close()
    if not rows:
        return Verdict(False, 0, "the chain is empty (no genesis entry)")
    has_hash = version >= 2
    key = b""
    prev = b""
    signed: list[tuple[int, bytes, bytes]] = []
    hashes: list[bytes] = []
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
        digest = entry.hash
        if entry.prev_hash != prev:
            later = [row[3] for row in rows[position - 1 :]] if has_hash else []
            return _link_broken(position, entry, key, signed, hashes, later, [head, *stored, *checkpoints])
        if not hashes_as_written(body, entry):
            return Verdict(False, position - 1, "its content does not match its hash (the entry was altered)", position)
        body_kind = entry.WhichOneof("body")
        if kind != body_kind or call_id != _call_id_of(entry) or (has_hash and column_hash != digest):
            return Verdict(
                False, position - 1,
                "its stored kind, call_id or hash column does not match its hashed content (the row was edited)", position,
            )
        if position == 1:
            if body_kind != "genesis" or len(entry.genesis.public_key) != 32:
                return Verdict(False, 0, "the first entry is not a genesis entry naming the key", 1)
            key = entry.genesis.public_key
            if expected_key is not None and key != expected_key:
                return Verdict(
                    False, 0,
                    f"the chain was started with key {fingerprint(key)}, not the expected {fingerprint(expected_key)} "
                    "(the key was swapped and the chain rewritten)",
                    1,
                )
        if body_kind in SIGNED or entry.signature:
            signed.append((position, entry.signature, digest))
        prev = digest
        hashes.append(digest)
    count = len(rows)
    if has_hash and version >= 3:
        if head is None:
            return Verdict(False, count, "no signed tree head covers the log (the tree_head row was removed)", count)
        unsigned = count - head.size
        if head.size > count:
            return Verdict(
                False, count,
                f"the newest signed tree head covers {head.size} entries, but the log has {count}: "
                f"entries {count + 1} to {head.size} were removed from its end",
                count + 1,
            )
        if head.size < (count if signed_through is None else min(count, signed_through)):
            which = f"entry {count} is" if unsigned == 1 else f"entries {head.size + 1} to {count} are"
            return Verdict(
                False, head.size,
                f"the newest signed tree head covers {head.size} entries, but the log has {count}: {which} signed "
                "by no head (added without the key, or written by a kernel killed before it signed them, which signs "
                "them when it starts again if their tail tag says it wrote them)",
                head.size + 1, unsigned,
            )
    roots = _roots_at(hashes, {cp.size for cp in [*stored, *checkpoints, *([head] if head else [])]})
    for heads, which in (([head] if head else [], "the newest signed tree head"), (stored, "the chain's own checkpoint"),
                         (list(checkpoints), "the checkpoint you gave")):
        problem = _check_checkpoints(heads, which, key, roots, count)
        if problem is not None:
            return _narrowed(problem, [head, *stored], key, roots)
    broken = _check_signatures(key, signed, workers)
    if broken is not None:
        seq, problem_text = broken
        return Verdict(False, seq - 1, problem_text, seq)
    if has_hash and version >= 3:
        return Verdict(True, head.size, unsigned=unsigned)
    return Verdict(True, count)


def _roots_at(hashes: list[bytes], sizes: set[int]) -> dict[int, bytes]:
    """The Merkle root of the first n leaves, for each n in `sizes` (one pass)."""
    roots: dict[int, bytes] = {}
    tree = Frontier()
    if 0 in sizes:
        roots[0] = tree.root()
    wanted = sorted(s for s in sizes if 0 < s <= len(hashes))
    done = 0
    for size in wanted:
        tree.extend(hashes[done:size])
        done = size
        roots[size] = tree.root()
    return roots


def _link_broken(
    position: int, entry: pb.AuditEntry, key: bytes, signed: list, hashes: list[bytes], later: list[bytes],
    heads: list[pb.Checkpoint | None],
) -> Verdict:
    """Entry `position` does not link to the one before. Which was altered? If the entry before
    was re-hashed, `entry.prev_hash` is its original hash: put back, it gives the root that a
    signed tree head holds (for an entry that is signed itself, its signature gives it away).
    `later` are the stored hashes of the entries from `position` on."""
    before = position - 1
    link = Verdict(False, before, "it does not link to the entry before it (an entry was removed, inserted or reordered)", position)
    if signed and signed[-1][0] == before and _verify_signatures((key, [signed[-1]])) is not None:
        return Verdict(False, before - 1, "its signature does not match its content (altered and re-hashed)", before)
    covering = [h for h in heads if h is not None and h.size >= before and not checkpoint_problem(h, key)]
    if not covering:
        return link
    head = min(covering, key=lambda h: h.size)
    original = [*hashes[: before - 1], entry.prev_hash, *later][: head.size]
    # the entries after `before` are taken as stored: if they were rewritten too, the root
    # cannot match and the broken link is reported as it is
    if len(original) == head.size and tree_hash(original) == head.root_hash:
        return Verdict(
            False, before - 1,
            f"its content was altered and re-hashed: the signed tree head of {head.size} entries holds its original hash",
            before,
        )
    return link


def _narrowed(problem: Verdict, heads: list[pb.Checkpoint | None], key: bytes, roots: dict[int, bytes]) -> Verdict:
    """A head's root no longer matches the entries: name the stretch between the largest signed
    head that still matches and the first that does not, where the rewritten entries are."""
    valid = [h for h in heads if h is not None and h.size in roots and not checkpoint_problem(h, key)]
    bad = [h.size for h in valid if roots[h.size] != h.root_hash]
    if not bad:
        return problem
    first_bad = min(bad)
    good = max((h.size for h in valid if h.size < first_bad and roots[h.size] == h.root_hash), default=0)
    return Verdict(
        False, good,
        f"{problem.problem}; the first {good} entries still match a signed tree head, so the rewritten entries are "
        f"among {good + 1} to {first_bad}",
        good + 1,
    )


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
