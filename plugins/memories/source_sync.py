"""Keeping a folder's passages in step with its files: the sync of one source.

A sync stats every file (no read when its size and modification time match what was indexed
and the chunker did not change), reads and hashes the rest (no re-chunk when the hash is the
same), and reconciles each changed file's passages with the memories made from it before:

- a passage whose text is unchanged keeps its memory (its line range follows it, no version);
- a passage under the same heading with new text rewrites that memory (the old text is a
  version: History shows it), and is embedded again;
- a new passage is a new memory; a passage gone is a memory deleted.

A file that disappeared while a new file with its exact content appeared was renamed: its
memories move (file and range rewritten, nothing embedded). A deleted file's memories go.
Passages are embedded a file at a time, in one call. Progress goes to `progress(phase, done, total)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .chunking import CHUNKER_VERSION, Chunk, Unreadable, chunks_of
from .labelling import Labeller
from .source_store import FileRow, SourceRow, SourceTable
from .store import DuplicateContent, Record

log = structlog.get_logger("cortex.memories.sources")

DEFAULT_INCLUDE = ["**/*.md", "**/*.markdown", "**/*.txt", "**/*.pdf"]
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_HEADING_CHARS = 300
BATCH_FILES = 64  # files read, matched and embedded together
EMBED_BATCH = 256  # passages in one Embed call


def glob_regex(pattern: str) -> re.Pattern:
    """A glob over relative POSIX paths: `**/` any folders (or none), `*` within one name."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def scan(root: Path, include: list[str], exclude: list[str]) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file the globs take; hidden names never. A linked
    folder is not walked (os.walk does not follow links); a linked file is listed, and reading it
    (read_inside) refuses it when it leads out of the folder."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder (moved, or not mounted?)")
    takes = [glob_regex(g) for g in include or DEFAULT_INCLUDE]
    leaves = [glob_regex(g) for g in exclude]
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(folder).relative_to(root).as_posix()
        for name in files:
            if name.startswith("."):
                continue
            rel = name if base == "." else f"{base}/{name}"
            if any(t.match(rel) for t in takes) and not any(x.match(rel) for x in leaves):
                try:
                    st = os.stat(os.path.join(folder, name))
                except OSError:
                    continue  # gone between the listing and the stat: the next sync sees it
                found[rel] = (st.st_size, st.st_mtime_ns)
    return found


@dataclass
class Report:
    files_seen: int = 0
    files_read: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_moved: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    chunks_added: int = 0
    chunks_updated: int = 0
    chunks_removed: int = 0
    chunks_moved: int = 0
    seconds: float = 0.0


@dataclass
class Read:
    """A file read: its content hash and passages, or why it has none."""
    rel: str
    size: int
    mtime_ns: int
    content_hash: str = ""
    chunks: list[Chunk] = field(default_factory=list)
    state: str = "indexed"
    reason: str = ""


class Refused(Exception):
    """A file of a folder that is not read: it leads out of the folder (a link), or is no file."""


def _too_large(size: int) -> str:
    return f"{size / 1e6:.0f} MB: over the {MAX_FILE_BYTES // (1024 * 1024)} MB limit"


def read_inside(root: Path, rel: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of file `rel` of folder `root`, read only when the file actually opened lies in the
    folder: links are followed to open it, then what was opened is checked (its real path is in the
    folder's real path, and that path names the very file opened, device and inode), so a link that
    leads out, or one swapped in after the folder was listed or after the check, is never read.
    Refused says why not; OSError when it cannot be read."""
    base = os.path.realpath(root)
    path = os.path.join(base, rel)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)  # O_NONBLOCK: a FIFO does not hang the sync (refused below)
    try:
        opened = os.fstat(fd)
        real = os.path.realpath(path)
        if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
            raise Refused(f"outside the source's folder (a link to {real}): not indexed")
        try:
            there = os.stat(real)
        except OSError:
            there = None
        if there is None or (there.st_dev, there.st_ino) != (opened.st_dev, opened.st_ino):
            raise Refused("changed into a link while it was read (it may lead outside the source's folder): not indexed")
        if not stat.S_ISREG(opened.st_mode):
            raise Refused("not a regular file (a pipe, a device or a socket): not indexed")
        if opened.st_size > limit:
            raise Refused(_too_large(opened.st_size))
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise Refused(_too_large(size))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_file(root: Path, rel: str, size: int, mtime_ns: int) -> Read:
    out = Read(rel, size, mtime_ns)
    if size > MAX_FILE_BYTES:
        out.state, out.reason = "skipped", _too_large(size)
        return out
    try:
        data = read_inside(root, rel)
    except Refused as exc:
        out.state, out.reason = "skipped", str(exc)
        log.warning("sources.file_refused", root=str(root), file=rel, reason=str(exc))
        return out
    except OSError as exc:
        out.state, out.reason = "failed", f"cannot read: {exc.strerror or exc}"
        return out
    out.content_hash = hashlib.sha256(data).hexdigest()
    try:
        out.chunks = chunks_of(rel, data)
    except Unreadable as exc:
        out.state, out.reason = "failed", str(exc)
        return out
    except Exception as exc:  # noqa: BLE001 (a parser's bug in one file must not stop the sync)
        out.state, out.reason = "failed", f"{type(exc).__name__}: {exc}"
        return out
    if not out.chunks:
        out.state, out.reason = "skipped", "no text"
    return out


@dataclass
class FilePlan:
    """A changed file's passages, each with the memory it continues (None: a new one), the old
    memories no passage continues, and the vectors of the passages to embed, by index."""
    read: Read
    pairs: list[tuple[Chunk, Record | None]]
    leftover: list[str]
    vectors: dict[int, tuple[str, object]] = field(default_factory=dict)


class Syncer:
    """Syncs sources into the memories of `servicer` (the MemoryServicer), one at a time each."""

    def __init__(self, servicer, table: SourceTable):
        self.servicer = servicer
        self.table = table
        self._locks: dict[str, asyncio.Lock] = {}

    async def sync(self, source: SourceRow, full: bool = False,
                   progress: Callable[[str, int, int], None] = lambda *_: None) -> Report:
        async with self._locks.setdefault(source.name, asyncio.Lock()):
            return await self._sync(source, full, progress)

    async def _sync(self, source: SourceRow, full: bool, progress) -> Report:
        started, report = time.monotonic(), Report()
        root = Path(source.path)
        progress("scanning", 0, 0)
        seen = await asyncio.to_thread(scan, root, source.include, source.exclude)
        known = await asyncio.to_thread(self.table.files, source.name)
        report.files_seen = len(seen)
        stale = [rel for rel, (size, mtime) in seen.items()
                 if full or rel not in known or (known[rel].size, known[rel].mtime_ns, known[rel].chunker)
                 != (size, mtime, CHUNKER_VERSION) or known[rel].state == "failed"]
        report.files_unchanged = len(seen) - len(stale)
        gone = {rel: known[rel] for rel in known if rel not in seen}
        by_hash = {row.content_hash: rel for rel, row in gone.items() if row.content_hash and row.state == "indexed"}
        rows: list[FileRow] = []
        moved_from: list[str] = []
        for start in range(0, len(stale), BATCH_FILES):
            batch = stale[start:start + BATCH_FILES]
            reads = await asyncio.to_thread(lambda b=batch: [read_file(root, rel, *seen[rel]) for rel in b])
            report.files_read += len(reads)
            plans: list[FilePlan] = []
            for read in reads:
                old = known.get(read.rel)
                if old is not None and old.content_hash == read.content_hash and old.chunker == CHUNKER_VERSION \
                        and old.state == read.state == "indexed":
                    rows.append(FileRow(read.rel, read.size, read.mtime_ns, read.content_hash, CHUNKER_VERSION, "indexed", "",
                                        old.chunk_ids, old.synced_at))  # touched, not changed
                    report.files_unchanged += 1
                elif old is None and read.content_hash in by_hash:
                    before = gone.pop(by_hash.pop(read.content_hash))
                    moved_from.append(before.path)
                    rows.append(await self._move(source, before, read, report))
                    report.files_moved += 1
                elif read.state != "indexed":
                    rows.append(await self._unindexed(source, read, old, report))
                else:
                    plans.append(await self._match(read, old))
            await self._embed_fresh(plans, source)  # one call for the batch's new passages, not one per file
            for plan in plans:
                rows.append(await self._apply(source, plan, report))
            await asyncio.to_thread(self.table.put_files, source.name, rows)
            rows = []
            progress("reading", start + len(batch), len(stale))
        await asyncio.to_thread(self.table.put_files, source.name, rows)
        await asyncio.to_thread(self.table.drop_files, source.name, [*gone, *moved_from])
        report.chunks_removed += len(await self._forget([i for row in gone.values() for i in row.chunk_ids], source.namespace))
        report.files_removed = len(gone)
        files = await asyncio.to_thread(self.table.files, source.name)
        report.files_failed = sum(r.state == "failed" for r in files.values())
        report.files_skipped = sum(r.state == "skipped" for r in files.values())
        now = _now()
        await asyncio.to_thread(self.table.synced, source.name, now)
        report.seconds = time.monotonic() - started
        log.info("sources.synced", source=source.name, **{k: v for k, v in report.__dict__.items() if v})
        progress("done", len(stale), len(stale))
        return report

    async def _forget(self, ids: list[str], namespace: str) -> list[str]:
        """Delete the memories `ids` unless a file still makes them (call once the file's row no
        longer names them)."""
        if not ids:
            return []
        still = await asyncio.to_thread(self.table.referenced, ids)
        gone = [i for i in dict.fromkeys(ids) if i not in still]
        return await self.servicer.forget(gone, dict.fromkeys(gone, namespace))

    async def _move(self, source: SourceRow, before: FileRow, read: Read, report: Report) -> FileRow:
        records = await self.servicer.read(self.servicer.store.get_many, before.chunk_ids, _now())
        now = _now()
        for memory_id in before.chunk_ids:
            record = records.get(memory_id)
            if record is None:
                continue
            updated = Record(**{**record.__dict__, "metadata": {**record.metadata, "file": read.rel},
                                "source": _cite(source.name, read.rel, record.metadata.get("lines", "")), "updated_at": now})
            await self.servicer._rewrite(updated, record, f"moved from {before.path}", now, keep=False)
            report.chunks_moved += 1
        return FileRow(read.rel, read.size, read.mtime_ns, read.content_hash, CHUNKER_VERSION, "indexed", "",
                       before.chunk_ids, now)

    async def _unindexed(self, source: SourceRow, read: Read, old: FileRow | None, report: Report) -> FileRow:
        """A file skipped or failed: a failure keeps what was indexed until the file reads again."""
        now, old_ids = _now(), (old.chunk_ids if old else [])
        if read.state == "failed" and old is not None:
            return FileRow(read.rel, read.size, read.mtime_ns, old.content_hash, old.chunker, "failed", read.reason, old_ids, now)
        row = FileRow(read.rel, read.size, read.mtime_ns, read.content_hash, CHUNKER_VERSION, read.state, read.reason, [], now)
        await asyncio.to_thread(self.table.put_files, source.name, [row])
        report.chunks_removed += len(await self._forget(old_ids, source.namespace))
        return row

    async def _match(self, read: Read, old: FileRow | None) -> FilePlan:
        """Each passage of `read` with the memory it continues: the same text, else the same heading."""
        old_ids = old.chunk_ids if old else []
        records = await self.servicer.read(self.servicer.store.get_many, old_ids, _now()) if old_ids else {}
        unused = [records[i] for i in old_ids if i in records]
        by_text: dict[str, Record] = {}
        for record in unused:
            by_text.setdefault(record.text, record)
        pairs: list[tuple[Chunk, Record | None]] = [(chunk, by_text.pop(chunk.text, None)) for chunk in read.chunks]
        taken = {r.id for _, r in pairs if r is not None}
        by_heading: dict[str, list[Record]] = {}
        for record in unused:
            if record.id not in taken:
                by_heading.setdefault(record.metadata.get("heading", ""), []).append(record)
        for i, (chunk, match) in enumerate(pairs):
            if match is None and by_heading.get(chunk.heading):
                pairs[i] = (chunk, by_heading[chunk.heading].pop(0))  # the same section, rewritten
        matched = {r.id for _, r in pairs if r is not None}
        leftover = [r.id for r in unused if r.id not in matched]
        return FilePlan(read, pairs, leftover)

    async def _embed_fresh(self, plans: list[FilePlan], source: SourceRow) -> None:
        """Vectors for every new or rewritten passage of `plans`, batched by what the Embed is
        labelled with: its tags and the labels it will carry as a memory (labelling.py: its source's,
        and the rules'), so that a private note is embedded only by a local provider."""
        labeller = self.servicer.p.labeller or Labeller()
        groups: dict[tuple[str, ...], list[tuple[FilePlan, int]]] = {}
        for plan in plans:
            for k, (chunk, match) in enumerate(plan.pairs):
                if match is None or match.text != chunk.text:
                    labels = labeller.labels_for(chunk.tags, "note", source.name, source.namespace)
                    groups.setdefault(tuple(sorted({*chunk.tags, *labels})), []).append((plan, k))
        for labels, wanted in groups.items():
            for start in range(0, len(wanted), EMBED_BATCH):
                part = wanted[start:start + EMBED_BATCH]
                result = await self.servicer.embed([plan.pairs[k][0].text for plan, k in part], list(labels))
                if result is None:
                    return  # stored all the same; `cortex memories reindex` embeds them later
                for (plan, k), vector in zip(part, result[1], strict=True):
                    plan.vectors[k] = (result[0], vector)

    async def _apply(self, source: SourceRow, plan: FilePlan, report: Report) -> FileRow:
        now, read = _now(), plan.read
        ids: list[str] = []
        leftover = list(plan.leftover)
        for k, (chunk, match) in enumerate(plan.pairs):
            record = self._record(source, read.rel, chunk, match, now)
            if k in plan.vectors:
                record.embedding_model, record.embedding = plan.vectors[k]
            if match is None:
                reply = await self.servicer._put(record, "", "", now)
                ids.append(reply.id)
                report.chunks_added += reply.created
                continue
            ids.append(match.id)
            if match.text != chunk.text:
                cause, keep = f"sync: {read.rel} changed", True
                report.chunks_updated += 1
            elif (match.metadata, match.source, match.tags) != (record.metadata, record.source, record.tags):
                cause, keep = "sync: lines moved", False
            else:
                continue
            try:
                await self.servicer._rewrite(record, match, cause, now, keep=keep)
            except DuplicateContent:  # another file holds this passage already: share its memory
                existing = await self.servicer.read(self.servicer.store.by_hash, record.content_hash)
                if existing is not None:
                    ids[-1] = existing.id
                    leftover.append(match.id)
        kept = set(ids)
        row = FileRow(read.rel, read.size, read.mtime_ns, read.content_hash, CHUNKER_VERSION, "indexed", "",
                      list(dict.fromkeys(ids)), now)
        await asyncio.to_thread(self.table.put_files, source.name, [row])  # before forgetting: counts references
        report.chunks_removed += len(await self._forget([i for i in leftover if i not in kept], source.namespace))
        return row

    def _record(self, source: SourceRow, rel: str, chunk: Chunk, match: Record | None, now: int) -> Record:
        from .service import content_hash, new_id

        metadata = {"source": source.name, "file": rel, "heading": chunk.heading[:MAX_HEADING_CHARS], "lines": chunk.lines}
        base = match.__dict__ if match is not None else {
            "id": new_id(), "kind": "note", "created_at": now, "expires_at": None, "embedding_model": "", "embedding": None}
        return Record(**{**base, "text": chunk.text, "tags": chunk.tags, "metadata": metadata,
                         "source": _cite(source.name, rel, chunk.lines), "updated_at": now, "namespace": source.namespace,
                         "content_hash": content_hash("note", chunk.text, chunk.tags, source.namespace)})


def _cite(name: str, rel: str, lines: str) -> str:
    """How a passage is cited, and what `cortex open` takes: "notes:health/dentist.md#L3-L9"."""
    first, _, last = lines.partition("-")
    return f"{name}:{rel}#L{first}-L{last}" if lines else f"{name}:{rel}"


def _now() -> int:
    return time.time_ns() // 1_000_000
