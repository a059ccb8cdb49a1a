"""Where watched sources and their files are kept: two tables of memories.db (migration 5), so
the index of a folder survives restarts and upgrades with the memories made from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .store import SqliteStore


@dataclass
class SourceRow:
    name: str
    path: str
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    from_config: bool = False
    added_at: int = 0
    last_synced: int | None = None
    namespace: str = "default"  # whose memories its passages are


@dataclass
class FileRow:
    path: str
    size: int
    mtime_ns: int
    content_hash: str
    chunker: int
    state: str  # "indexed" | "skipped" | "failed"
    reason: str
    chunk_ids: list[str]
    synced_at: int


class SourceTable:
    """Reads and writes of `sources` and `source_files` on the memories store's connection."""

    def __init__(self, store: SqliteStore):
        self.store = store

    def all(self) -> list[SourceRow]:
        rows = self.store._read().execute(
            "SELECT name, path, include, exclude, from_config, added_at, last_synced, namespace FROM sources ORDER BY name"
        ).fetchall()
        return [SourceRow(n, p, json.loads(i), json.loads(e), bool(c), a, s, ns) for n, p, i, e, c, a, s, ns in rows]

    def get(self, name: str) -> SourceRow | None:
        return next((s for s in self.all() if s.name == name), None)

    def put(self, source: SourceRow) -> None:
        with self.store.lock, self.store.db:
            self.store.db.execute(
                "INSERT INTO sources (name, path, include, exclude, from_config, added_at, last_synced, namespace) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET path = excluded.path, "
                "include = excluded.include, exclude = excluded.exclude, from_config = excluded.from_config, "
                "namespace = excluded.namespace",
                (source.name, source.path, json.dumps(source.include), json.dumps(source.exclude), int(source.from_config),
                 source.added_at, source.last_synced, source.namespace))

    def synced(self, name: str, at: int) -> None:
        with self.store.lock, self.store.db:
            self.store.db.execute("UPDATE sources SET last_synced = ? WHERE name = ?", (at, name))

    def remove(self, name: str) -> None:
        with self.store.lock, self.store.db:
            self.store.db.execute("BEGIN IMMEDIATE")
            self.store.db.execute("DELETE FROM source_files WHERE source = ?", (name,))
            self.store.db.execute("DELETE FROM sources WHERE name = ?", (name,))

    def files(self, name: str) -> dict[str, FileRow]:
        rows = self.store._read().execute(
            "SELECT path, size, mtime_ns, content_hash, chunker, state, reason, chunk_ids, synced_at FROM source_files "
            "WHERE source = ?", (name,)).fetchall()
        return {r[0]: FileRow(*r[:7], json.loads(r[7]), r[8]) for r in rows}

    def put_files(self, name: str, rows: list[FileRow]) -> None:
        if not rows:
            return
        with self.store.lock, self.store.db:
            self.store.db.execute("BEGIN IMMEDIATE")
            self.store.db.executemany(
                "INSERT OR REPLACE INTO source_files (source, path, size, mtime_ns, content_hash, chunker, state, reason, "
                "chunk_ids, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(name, r.path, r.size, r.mtime_ns, r.content_hash, r.chunker, r.state, r.reason, json.dumps(r.chunk_ids),
                  r.synced_at) for r in rows])

    def drop_files(self, name: str, paths: list[str]) -> None:
        if not paths:
            return
        with self.store.lock, self.store.db:
            self.store.db.execute("BEGIN IMMEDIATE")
            self.store.db.executemany("DELETE FROM source_files WHERE source = ? AND path = ?", [(name, p) for p in paths])

    def referenced(self, ids: list[str]) -> set[str]:
        """Those of `ids` some file of any source still makes (two files may hold one passage)."""
        wanted, found = set(ids), set()
        for (chunk_ids,) in self.store._read().execute("SELECT chunk_ids FROM source_files"):
            found |= wanted & set(json.loads(chunk_ids))
        return found
