"""Where memories live. `MemoryStore` is the interface; `SqliteStore` is the embedded default: one
SQLite file in the data dir, WAL, FTS5 for keyword search, each memory's vector stored with its row.
`PostgresStore` (pg_store.py) is the one several kernels share.

Every write is one transaction, committed before it returns (synchronous=FULL by default), so
an acknowledged memory survives a kill -9 or a power cut, and the database stays consistent.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cortex.kernel.sdk import at_rest


@dataclass
class Record:
    id: str
    kind: str
    text: str
    tags: list[str]
    metadata: dict[str, str]
    source: str
    created_at: int  # unix milliseconds
    updated_at: int
    expires_at: int | None
    content_hash: str
    embedding_model: str = ""
    embedding: np.ndarray | None = field(default=None, repr=False)
    namespace: str = "default"  # whose memory it is (namespaces.py)


@dataclass
class Query:
    """A filter, as the store applies it."""

    kinds: list[str] = field(default_factory=list)
    exclude_kinds: list[str] = field(default_factory=list)
    tags_all: list[str] = field(default_factory=list)
    tags_any: list[str] = field(default_factory=list)
    created_after: int | None = None
    created_before: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    namespaces: list[str] | None = None  # None: every namespace

    def matches(self, r: Record) -> bool:
        return (
            (self.namespaces is None or r.namespace in self.namespaces)
            and (not self.kinds or r.kind in self.kinds)
            and r.kind not in self.exclude_kinds
            and all(t in r.tags for t in self.tags_all)
            and (not self.tags_any or any(t in r.tags for t in self.tags_any))
            and (self.created_after is None or r.created_at > self.created_after)
            and (self.created_before is None or r.created_at < self.created_before)
            and all(r.metadata.get(k) == v for k, v in self.metadata.items())
        )


class DuplicateContent(Exception):
    """A write would give a second memory the kind, text and tags of `existing` (content hashes
    are unique: one memory per content)."""

    def __init__(self, existing: Record | None):
        super().__init__(f"memory {existing.id if existing else '?'} already has this kind, text and tags")


@dataclass(frozen=True)
class Version:
    """A memory as it was before a change (its vector is not kept: a revert embeds again)."""

    version: int
    record: Record
    replaced_at: int
    cause: str


@dataclass(frozen=True)
class Link:
    """`new_id` restates `old_id`'s fact; `rule` says who decided, and why."""

    old_id: str
    new_id: str
    rule: str
    at: int


VERSIONED = ("kind", "text", "tags", "metadata", "source", "created_at", "updated_at", "expires_at", "content_hash")


def version_body(record: Record) -> str:
    return json.dumps({k: getattr(record, k) for k in VERSIONED}, sort_keys=True)


def version_record(memory_id: str, body: str) -> Record:
    return Record(id=memory_id, **json.loads(body))


class MemoryStore(ABC):
    """The storage a MemoryService needs."""

    version: int  # the schema version the store is at
    location: str  # where it is, for health and logs (no credentials)

    def own_index(self, model: str):
        """The semantic search of a backend that searches its vectors itself (pgvector), shaped as
        VectorIndex is; None: the plugin keeps an index of the vectors in memory."""
        return None

    def shared_secret(self, name: str) -> bytes | None:
        """A key every kernel on this store signs with (page and confirm tokens: one kernel's is
        good on another), made by the first to ask; None for a store one kernel keeps alone."""
        return None

    @abstractmethod
    def insert(self, record: Record) -> None: ...
    @abstractmethod
    def put(self, record: Record, now: int) -> tuple[Record, bool]:
        """Store `record` unless a live memory has its content hash: (the memory stored or found,
        created). Atomic, so concurrent identical stores make one memory. An expired memory with the
        same content is replaced by `record`, keeping its id."""
    @abstractmethod
    def get(self, memory_id: str, now: int) -> Record | None: ...
    @abstractmethod
    def get_many(self, ids: list[str], now: int) -> dict[str, Record]: ...
    @abstractmethod
    def by_hash(self, content_hash: str) -> Record | None: ...
    @abstractmethod
    def replace(self, record: Record, previous: Record | None = None, cause: str = "update", now: int = 0) -> None:
        """Rewrite the memory `record.id`, keeping `previous` as a version (in one transaction);
        DuplicateContent if another memory has its content."""
    @abstractmethod
    def delete(self, memory_id: str) -> bool:
        """Remove a memory, its versions and its supersession links; False when it was not there."""
    def delete_many(self, ids: list[str]) -> list[str]:
        """Delete each of `ids` (as delete does); the ids that were there."""
        return [memory_id for memory_id in ids if self.delete(memory_id)]
    @abstractmethod
    def versions(self, memory_id: str) -> list[Version]: ...
    @abstractmethod
    def supersede(self, old_id: str, new_id: str, rule: str, now: int) -> None:
        """Record that `new_id` restates `old_id`'s fact (a later link for `old_id` replaces it)."""
    @abstractmethod
    def links(self, ids: list[str]) -> list[Link]:
        """Every supersession link in which one of `ids` is the old or the new memory."""
    @abstractmethod
    def import_batch(self, items: list[tuple[Record, list[Version]]], now: int) -> list[str]:
        """Write archived memories as they were (ids, times, versions), in one transaction; for
        each, "added", "unchanged" (this very memory is here), or why it was skipped."""
    @abstractmethod
    def import_links(self, links: list[Link]) -> int:
        """Record the links whose two memories are here (an existing link stays); how many were new."""
    @abstractmethod
    def page(self, query: Query, now: int, after: tuple[int, str] | None, limit: int) -> list[Record]: ...
    @abstractmethod
    def keyword(self, text: str, query: Query, now: int, limit: int) -> list[tuple[str, float]]: ...
    def common_terms(self) -> frozenset[str]:
        """This corpus's words too common to say anything (none, for a backend that cannot tell)."""
        return frozenset()
    @abstractmethod
    def vectors(self, model: str, now: int) -> Iterator[Record]: ...
    @abstractmethod
    def unembedded(self, model: str, everything: bool) -> list[Record]: ...
    @abstractmethod
    def set_embedding(self, memory_id: str, model: str, vector: np.ndarray) -> None: ...
    @abstractmethod
    def stats(self, model: str, now: int, namespaces: list[str] | None = None) -> dict: ...
    @abstractmethod
    def purge_expired(self, now: int) -> list[str]: ...
    @abstractmethod
    def meta(self, key: str, value: str | None = None) -> str | None: ...
    @abstractmethod
    def count_vectors(self, model: str) -> int: ...
    @abstractmethod
    def vector_dimension(self, model: str) -> int: ...
    @abstractmethod
    def close(self) -> None: ...


MIGRATIONS = [
    # 1: memories, their tags, full-text index kept in step by triggers, key/value meta
    """
    CREATE TABLE memories (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        tags TEXT NOT NULL,
        metadata TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        expires_at INTEGER,
        content_hash TEXT NOT NULL UNIQUE,
        embedding_model TEXT NOT NULL DEFAULT '',
        embedding BLOB
    );
    CREATE INDEX memories_created ON memories(created_at DESC, id DESC);
    CREATE INDEX memories_model ON memories(embedding_model);
    CREATE TABLE memory_tags (
        memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (memory_id, tag)
    );
    CREATE INDEX memory_tags_tag ON memory_tags(tag);
    CREATE VIRTUAL TABLE memories_fts USING fts5(text, tags, content='memories', content_rowid='rowid');
    CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
        INSERT INTO memories_fts(rowid, text, tags) VALUES (new.rowid, new.text, new.tags);
    END;
    CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
        INSERT INTO memories_fts(memories_fts, rowid, text, tags) VALUES ('delete', old.rowid, old.text, old.tags);
    END;
    CREATE TRIGGER memories_au AFTER UPDATE OF text, tags ON memories BEGIN
        INSERT INTO memories_fts(memories_fts, rowid, text, tags) VALUES ('delete', old.rowid, old.text, old.tags);
        INSERT INTO memories_fts(rowid, text, tags) VALUES (new.rowid, new.text, new.tags);
    END;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: document frequencies of indexed terms, to tell this corpus's stopwords
    """
    CREATE VIRTUAL TABLE memories_vocab USING fts5vocab(memories_fts, row);
    """,
    # 3: each memory's key in the approximate index (ann_index.py), found back by it
    """
    ALTER TABLE memories ADD COLUMN vkey INTEGER;
    UPDATE memories SET vkey = cortex_vector_key(id);
    CREATE INDEX memories_vkey ON memories(vkey);
    """,
    # 4: every version a change replaced, and which memory restates which one's fact
    """
    CREATE TABLE memory_versions (
        memory_id TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL, replaced_at INTEGER NOT NULL,
        cause TEXT NOT NULL, PRIMARY KEY (memory_id, version)
    );
    CREATE TABLE supersessions (old_id TEXT PRIMARY KEY, new_id TEXT NOT NULL, rule TEXT NOT NULL, at INTEGER NOT NULL);
    CREATE INDEX supersessions_new ON supersessions(new_id);
    """,
    # 5: watched note folders and what each of their files became (source_store.py)
    """
    CREATE TABLE sources (
        name TEXT PRIMARY KEY, path TEXT NOT NULL, include TEXT NOT NULL, exclude TEXT NOT NULL,
        from_config INTEGER NOT NULL, added_at INTEGER NOT NULL, last_synced INTEGER
    );
    CREATE TABLE source_files (
        source TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        content_hash TEXT NOT NULL, chunker INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL,
        chunk_ids TEXT NOT NULL, synced_at INTEGER NOT NULL, PRIMARY KEY (source, path)
    );
    """,
    # 6: whose memory each memory is, and in whose namespace a source's notes are (namespaces.py)
    """
    ALTER TABLE memories ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX memories_namespace ON memories(namespace, created_at DESC, id DESC);
    ALTER TABLE sources ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
COLUMNS = ("id, kind, text, tags, metadata, source, created_at, updated_at, expires_at, content_hash, embedding_model, "
           "embedding, namespace")
WORD = re.compile(r"\w+", re.UNICODE)


# Words too common to say anything: matching them only adds noise to hybrid ranking.
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from had has have how i if in is it its me my of on or our "
    "should so that the their them then there these they this to was we were what when where which who why "
    "will with would you your".split()
)


COMMON_SHARE = 0.05  # a term in more than this share of memories says little (and costs a lot)


COMMON_WINDOW = 10_000  # a query of common terms only looks at this many recent memories (PostgreSQL)
# ... and on SQLite at this many of the newest memories it matches, within the caller's filters:
# BM25 costs ~5 us a row, and a common word matched a fifth of a growing store (8 ms a search at
# 6,000 memories, the search's largest cost under load; 1.7 ms here, at any size)
COMMON_CANDIDATES = 200


def query_words(text: str, common: frozenset[str] = frozenset()) -> tuple[list[str], bool]:
    """The words of a query a keyword search looks for, any of which may match. Stopwords, and
    this corpus's own common terms, are dropped. A query of nothing else looks for all of its
    words together, and says so (True): any one of them would match most of the store."""
    words = list(dict.fromkeys(WORD.findall(text.lower())))[:32]
    meaningful = [w for w in words if w not in STOPWORDS] or words
    selective = [w for w in meaningful if w not in common]
    return (selective, False) if selective else (meaningful, bool(meaningful))


def fts_query(text: str, common: frozenset[str] = frozenset()) -> tuple[str, bool]:
    """User words as an FTS5 query: each quoted (no operators get through); query_words says which."""
    words, every = query_words(text, common)
    return (" AND " if every else " OR ").join(f'"{w}"' for w in words), every


def vector_key(memory_id: str) -> int:
    """A memory's key in the approximate index: 63 bits of BLAKE2b of its id."""
    return int.from_bytes(hashlib.blake2b(memory_id.encode(), digest_size=8).digest(), "big") >> 1


def _vector_batch(rows: list[tuple]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    if rows:
        keys = np.array([r[0] for r in rows], dtype=np.int64)
        vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
        yield keys, vectors, max(r[2] for r in rows)


def _record(row: tuple) -> Record:
    blob = row[11]
    return Record(
        id=row[0], kind=row[1], text=row[2], tags=json.loads(row[3]), metadata=json.loads(row[4]), source=row[5],
        created_at=row[6], updated_at=row[7], expires_at=row[8], content_hash=row[9], embedding_model=row[10],
        embedding=np.frombuffer(blob, dtype=np.float32) if blob else None, namespace=row[12],
    )


class SqliteStore(MemoryStore):
    def __init__(self, path: Path, synchronous: str = "FULL", data_dir: Path | None = None):
        """`data_dir`: whose encryption at rest applies (at_rest.py); by default the folder above
        the plugin's own, as `<data dir>/memories/memories.db` is laid out."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.location = str(path)
        self._key = at_rest.key(path.parent.parent if data_dir is None else data_dir)  # None: not encrypted
        self.db = at_rest.open_keyed(path, self._key, isolation_level=None, check_same_thread=False)
        self.lock = threading.RLock()  # one writer; readers share the connection (plugin runs one thread)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.version = self._migrate()
        # WAL lets readers run beside the writer: one read connection a thread, no lock
        # (SQLite releases the GIL while it works)
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        self._common: frozenset[str] = frozenset()
        self._writes_since_common = 10**9  # compute on first use

    def _migrate(self) -> int:
        self.db.create_function("cortex_vector_key", 1, vector_key, deterministic=True)
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema {version}, newer than this Cortex-OS knows ({SCHEMA_VERSION})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.lock:
                self.db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        return SCHEMA_VERSION

    # -- writes --------------------------------------------------------------------------------
    def _write(self, record: Record) -> None:
        self.db.execute(
            f"INSERT INTO memories ({COLUMNS}, vkey) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id, record.kind, record.text, json.dumps(record.tags), json.dumps(record.metadata, sort_keys=True),
                record.source, record.created_at, record.updated_at, record.expires_at, record.content_hash,
                record.embedding_model,
                record.embedding.astype(np.float32).tobytes() if record.embedding is not None else None,
                record.namespace, vector_key(record.id),
            ),
        )
        self.db.executemany(
            "INSERT INTO memory_tags(memory_id, tag) VALUES (?, ?)", [(record.id, t) for t in dict.fromkeys(record.tags)]
        )

    def insert(self, record: Record) -> None:
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._write(record)
        self._writes_since_common += 1

    def put(self, record: Record, now: int) -> tuple[Record, bool]:
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute(f"SELECT {COLUMNS} FROM memories WHERE content_hash = ?", (record.content_hash,)).fetchone()
            if row is not None:
                existing = _record(row)
                if existing.expires_at is None or existing.expires_at > now:
                    return existing, False
                self.db.execute("DELETE FROM memories WHERE id = ?", (existing.id,))
                record.id = existing.id  # the same content, expired: it comes back as new, under its id
            self._write(record)
        self._writes_since_common += 1
        return record, True

    def replace(self, record: Record, previous: Record | None = None, cause: str = "update", now: int = 0) -> None:
        try:
            with self.lock, self.db:
                self.db.execute("BEGIN IMMEDIATE")
                if previous is not None:
                    (last,) = self.db.execute("SELECT COALESCE(MAX(version), 0) FROM memory_versions WHERE memory_id = ?",
                                              (record.id,)).fetchone()
                    self.db.execute("INSERT INTO memory_versions(memory_id, version, body, replaced_at, cause) VALUES (?, ?, ?, ?, ?)",
                                    (record.id, last + 1, version_body(previous), now, cause))
                self.db.execute("DELETE FROM memories WHERE id = ?", (record.id,))
                self._write(record)
        except at_rest.errors("IntegrityError"):  # (from sqlite3, or SQLCipher in an encrypted data dir)
            raise DuplicateContent(self.by_hash(record.content_hash)) from None

    def _forget(self, ids: list[str]) -> None:
        """A memory's versions and links go with it (deleted means deleted)."""
        pairs = [(i,) for i in ids]
        self.db.executemany("DELETE FROM memory_versions WHERE memory_id = ?", pairs)
        self.db.executemany("DELETE FROM supersessions WHERE old_id = ? OR new_id = ?", [(i, i) for i in ids])

    def delete(self, memory_id: str) -> bool:
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._forget([memory_id])
            return self.db.execute("DELETE FROM memories WHERE id = ?", (memory_id,)).rowcount > 0

    def delete_many(self, ids: list[str]) -> list[str]:
        """One transaction for all of them: a bulk delete is done or not done."""
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            present = [i for i in ids if self.db.execute("SELECT 1 FROM memories WHERE id = ?", (i,)).fetchone()]
            self._forget(present)
            self.db.executemany("DELETE FROM memories WHERE id = ?", [(i,) for i in present])
            return present

    def versions(self, memory_id: str) -> list[Version]:
        rows = self._read().execute(
            "SELECT version, body, replaced_at, cause FROM memory_versions WHERE memory_id = ? ORDER BY version", (memory_id,)
        ).fetchall()
        return [Version(v, version_record(memory_id, body), at, cause) for v, body, at, cause in rows]

    def supersede(self, old_id: str, new_id: str, rule: str, now: int) -> None:
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT OR REPLACE INTO supersessions(old_id, new_id, rule, at) VALUES (?, ?, ?, ?)",
                            (old_id, new_id, rule, now))

    def links(self, ids: list[str]) -> list[Link]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._read().execute(
            f"SELECT old_id, new_id, rule, at FROM supersessions WHERE old_id IN ({marks}) OR new_id IN ({marks})",
            [*ids, *ids],
        ).fetchall()
        return [Link(*row) for row in rows]

    def import_batch(self, items: list[tuple[Record, list[Version]]], now: int) -> list[str]:
        outcomes = []
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for record, versions in items:
                same_id = self.db.execute("SELECT content_hash FROM memories WHERE id = ?", (record.id,)).fetchone()
                same_content = self.db.execute("SELECT id FROM memories WHERE content_hash = ?", (record.content_hash,)).fetchone()
                if same_id is not None:
                    outcomes.append("unchanged" if same_id[0] == record.content_hash else "id in use by another memory here")
                elif same_content is not None:
                    outcomes.append(f"the same content is memory {same_content[0]} here")
                elif record.expires_at is not None and record.expires_at <= now:
                    outcomes.append("expired")
                else:
                    self._write(record)
                    self.db.executemany(
                        "INSERT OR IGNORE INTO memory_versions(memory_id, version, body, replaced_at, cause) VALUES (?, ?, ?, ?, ?)",
                        [(record.id, v.version, version_body(v.record), v.replaced_at, v.cause) for v in versions])
                    outcomes.append("added")
        self._writes_since_common += len(items)
        return outcomes

    def import_links(self, links: list[Link]) -> int:
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            added = 0
            for link in links:
                both = self.db.execute("SELECT COUNT(*) FROM memories WHERE id IN (?, ?)", (link.old_id, link.new_id)).fetchone()[0]
                if both == 2:
                    added += self.db.execute("INSERT OR IGNORE INTO supersessions(old_id, new_id, rule, at) VALUES (?, ?, ?, ?)",
                                             (link.old_id, link.new_id, link.rule, link.at)).rowcount
            return added

    def set_embedding(self, memory_id: str, model: str, vector: np.ndarray) -> None:
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "UPDATE memories SET embedding_model = ?, embedding = ? WHERE id = ?",
                (model, vector.astype(np.float32).tobytes(), memory_id),
            )

    def purge_expired(self, now: int) -> list[str]:
        with self.lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            ids = [r[0] for r in self.db.execute("SELECT id FROM memories WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))]
            self._forget(ids)
            self.db.executemany("DELETE FROM memories WHERE id = ?", [(i,) for i in ids])
            return ids

    def meta(self, key: str, value: str | None = None) -> str | None:
        with self.lock:
            if value is not None:
                self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
                return value
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

    # -- reads ---------------------------------------------------------------------------------
    def _read(self) -> sqlite3.Connection:
        db = getattr(self._readers, "db", None)
        if db is None:
            db = self._readers.db = at_rest.open_keyed(f"file:{self.path}?mode=ro", self._key, uri=True,
                                                          check_same_thread=False)
            with self.lock:
                self._all_readers.append(db)
        return db
    @staticmethod
    def _where(query: Query, now: int, alias: str = "m") -> tuple[str, list]:
        clauses = [f"({alias}.expires_at IS NULL OR {alias}.expires_at > ?)"]
        args: list = [now]
        if query.namespaces is not None:
            clauses.append(f"{alias}.namespace IN ({','.join('?' * len(query.namespaces))})")
            args += query.namespaces
        if query.kinds:
            clauses.append(f"{alias}.kind IN ({','.join('?' * len(query.kinds))})")
            args += query.kinds
        if query.exclude_kinds:
            clauses.append(f"{alias}.kind NOT IN ({','.join('?' * len(query.exclude_kinds))})")
            args += query.exclude_kinds
        for tag in query.tags_all:
            clauses.append(f"EXISTS (SELECT 1 FROM memory_tags t WHERE t.memory_id = {alias}.id AND t.tag = ?)")
            args.append(tag)
        if query.tags_any:
            marks = ",".join("?" * len(query.tags_any))
            clauses.append(f"EXISTS (SELECT 1 FROM memory_tags t WHERE t.memory_id = {alias}.id AND t.tag IN ({marks}))")
            args += query.tags_any
        if query.created_after is not None:
            clauses.append(f"{alias}.created_at > ?")
            args.append(query.created_after)
        if query.created_before is not None:
            clauses.append(f"{alias}.created_at < ?")
            args.append(query.created_before)
        for key, value in query.metadata.items():
            clauses.append(f"json_extract({alias}.metadata, ?) = ?")
            args += [f'$."{key}"', value]
        return " AND ".join(clauses), args

    def get(self, memory_id: str, now: int) -> Record | None:
        return self.get_many([memory_id], now).get(memory_id)

    def get_many(self, ids: list[str], now: int) -> dict[str, Record]:
        """The live ones among `ids`, by id, in one query."""
        if not ids:
            return {}
        rows = self._read().execute(
            f"SELECT {COLUMNS} FROM memories WHERE id IN ({','.join('?' * len(ids))}) "
            "AND (expires_at IS NULL OR expires_at > ?)",
            [*ids, now],
        ).fetchall()
        return {r[0]: _record(r) for r in rows}

    def by_hash(self, content_hash: str) -> Record | None:
        row = self._read().execute(f"SELECT {COLUMNS} FROM memories WHERE content_hash = ?", (content_hash,)).fetchone()
        return _record(row) if row else None

    def page(self, query: Query, now: int, after: tuple[int, str] | None, limit: int) -> list[Record]:
        where, args = self._where(query, now)
        if after is not None:
            where += " AND (m.created_at < ? OR (m.created_at = ? AND m.id < ?))"
            args += [after[0], after[0], after[1]]
        rows = self._read().execute(
            f"SELECT {', '.join('m.' + c for c in COLUMNS.split(', '))} FROM memories m WHERE {where} "
            "ORDER BY m.created_at DESC, m.id DESC LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [_record(r) for r in rows]

    def common_terms(self) -> frozenset[str]:
        """Terms in more than COMMON_SHARE of memories, recounted after every 1,000 writes."""
        if self._writes_since_common >= 1000:
            with self.lock:
                total = self.db.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
                rows = self.db.execute(
                    "SELECT term FROM memories_vocab WHERE doc > ?", (max(50, int(total * COMMON_SHARE)),)
                ).fetchall()
            self._common = frozenset(r[0] for r in rows)
            self._writes_since_common = 0
        return self._common

    def keyword(self, text: str, query: Query, now: int, limit: int) -> list[tuple[str, float]]:
        match, only_common = fts_query(text, self.common_terms())
        if not match:
            return []
        where, args = self._where(query, now)
        db = self._read()
        joined = "FROM memories_fts JOIN memories m ON m.rowid = memories_fts.rowid WHERE memories_fts MATCH ?"
        floor, floor_args = "0", []
        if only_common:  # ranking most of the store by BM25 costs much and tells little: the newest matches
            floor = (f"COALESCE((SELECT memories_fts.rowid {joined} AND {where} ORDER BY memories_fts.rowid DESC "
                     "LIMIT 1 OFFSET ?), 0)")
            floor_args = [match, *args, COMMON_CANDIDATES - 1]
        rows = db.execute(
            f"SELECT m.id, -bm25(memories_fts) AS score {joined} AND memories_fts.rowid >= {floor} AND {where} "
            "ORDER BY bm25(memories_fts) LIMIT ?",
            [match, *floor_args, *args, limit],
        ).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    # -- for the approximate index (ann_index.py) ------------------------------------------------------
    def count_vectors(self, model: str) -> int:
        sql = "SELECT COUNT(*) FROM memories WHERE embedding_model = ? AND embedding IS NOT NULL"
        return self._read().execute(sql, (model,)).fetchone()[0]

    def vector_dimension(self, model: str) -> int:
        row = self._read().execute(
            "SELECT length(embedding) / 4 FROM memories WHERE embedding_model = ? AND embedding IS NOT NULL LIMIT 1", (model,)
        ).fetchone()
        return int(row[0]) if row else 0

    def vector_keys(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys, updated_at) of every memory with a vector of `model`."""
        rows = self._read().execute(
            "SELECT vkey, updated_at FROM memories WHERE embedding_model = ? AND embedding IS NOT NULL", (model,)
        ).fetchall()
        array = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return array[:, 0].copy(), array[:, 1].copy()

    def vectors_by_key(self, model: str, keys: np.ndarray, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """(keys, float32 vectors, newest updated_at) of those memories, a batch at a time."""
        sql = "SELECT vkey, embedding, updated_at FROM memories WHERE embedding_model = ? AND embedding IS NOT NULL"
        if len(keys) > 50_000:  # most of the store: one pass over it beats a lookup per key
            wanted = set(keys.tolist())
            cursor = self._read().execute(sql, (model,))
            while rows := cursor.fetchmany(batch):
                yield from _vector_batch([r for r in rows if r[0] in wanted])
            return
        for start in range(0, len(keys), 5000):
            part = keys[start : start + 5000].tolist()
            by_key = sql.replace("FROM memories", "FROM memories INDEXED BY memories_vkey")
            rows = self._read().execute(f"{by_key} AND vkey IN ({','.join('?' * len(part))})", (model, *part)).fetchall()
            yield from _vector_batch(rows)

    def filtered_vectors_by_key(self, model: str, keys: np.ndarray, query: Query, now: int) -> list[tuple[str, np.ndarray]]:
        """(id, vector) of those memories that pass the query's filters."""
        if not len(keys):
            return []
        where, args = self._where(query, now)
        part = keys.tolist()
        rows = self._read().execute(
            # (by key, never by model: SQLite would otherwise scan every vector of the model)
            f"SELECT m.id, m.embedding FROM memories m INDEXED BY memories_vkey WHERE m.vkey IN ({','.join('?' * len(part))}) "
            f"AND m.embedding_model = ? AND m.embedding IS NOT NULL AND {where}",
            [*part, model, *args],
        ).fetchall()
        return [(r[0], np.frombuffer(r[1], dtype=np.float32)) for r in rows]

    def filtered_vectors(self, model: str, query: Query, now: int) -> list[tuple[str, np.ndarray]]:
        """(id, vector) of every memory that passes the query's filters (an exact search's rows)."""
        where, args = self._where(query, now)
        rows = self._read().execute(
            f"SELECT m.id, m.embedding FROM memories m WHERE m.embedding_model = ? AND m.embedding IS NOT NULL AND {where}",
            [model, *args],
        ).fetchall()
        return [(r[0], np.frombuffer(r[1], dtype=np.float32)) for r in rows]

    def vectors(self, model: str, now: int) -> Iterator[Record]:
        with self.lock:
            rows = self.db.execute(
                f"SELECT {COLUMNS} FROM memories WHERE embedding_model = ? AND embedding IS NOT NULL "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (model, now),
            ).fetchall()
        for row in rows:
            yield _record(row)

    def unembedded(self, model: str, everything: bool) -> list[Record]:
        sql = f"SELECT {COLUMNS} FROM memories"
        args: tuple = ()
        if not everything:
            sql += " WHERE embedding_model != ? OR embedding IS NULL"
            args = (model,)
        with self.lock:
            return [_record(r) for r in self.db.execute(sql + " ORDER BY created_at", args).fetchall()]

    def stats(self, model: str, now: int, namespaces: list[str] | None = None) -> dict:
        """Counts over `namespaces` (None: all); storage is the whole file's."""
        live = "(m.expires_at IS NULL OR m.expires_at > ?)"
        mine, spaces = "", []
        if namespaces is not None:
            mine, spaces = f" AND m.namespace IN ({','.join('?' * len(namespaces))})", list(namespaces)

        def count(sql: str, *args) -> list[tuple]:
            return self.db.execute(sql, (*args, *spaces)).fetchall()

        with self.lock:
            total = count(f"SELECT COUNT(*) FROM memories m WHERE {live}{mine}", now)[0][0]
            by_kind = dict(count(f"SELECT m.kind, COUNT(*) FROM memories m WHERE {live}{mine} GROUP BY m.kind", now))
            by_tag = dict(count(f"SELECT t.tag, COUNT(*) FROM memory_tags t JOIN memories m ON m.id = t.memory_id "
                                f"WHERE {live}{mine} GROUP BY t.tag", now))
            stale = count(f"SELECT COUNT(*) FROM memories m WHERE {live} AND (m.embedding_model != ? OR m.embedding IS NULL)"
                          f"{mine}", now, model)[0][0]
            expired = count(f"SELECT COUNT(*) FROM memories m WHERE m.expires_at IS NOT NULL AND m.expires_at <= ?{mine}",
                            now)[0][0]
            # (int: SQLCipher answers page_size as text)
            pages = self.db.execute("PRAGMA page_count").fetchone()[0] * int(self.db.execute("PRAGMA page_size").fetchone()[0])
        wal = self.path.with_name(self.path.name + "-wal")
        return {
            "total": total, "by_kind": by_kind, "by_tag": by_tag, "stale": stale, "expired": expired,
            "storage_bytes": pages + (wal.stat().st_size if wal.exists() else 0),
        }

    def close(self) -> None:
        with self.lock:
            for reader in self._all_readers:
                reader.close()
            self.db.close()
