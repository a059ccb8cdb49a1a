"""`cortex.memories.v1.ArchiveService`: a caller's memories out as archive lines, and back in.

The format (archive.proto) is the store's own facts, not a re-telling: ids, namespaces, times,
content hashes, every version, the supersession links, the watched sources with what each file
became, and optionally the exact float32 vectors. So an import elsewhere (another machine, another
backend) is the same memories, found the same way, without embedding them again when the models
agree; and exporting what was imported gives the same lines back.

Import is idempotent and never overwrites: a memory already here is "unchanged", an id here with
other content is skipped with the reason, and a memory whose content does not hash to its
content_hash (an edited or damaged archive) is skipped too.
"""

from __future__ import annotations

import asyncio
import re
import time

import grpc
import numpy as np
import structlog

from cortex.contracts.memories.v1 import archive_pb2 as pb
from cortex.contracts.memories.v1 import archive_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as mem

from .namespaces import Denied
from .source_store import FileRow, SourceRow
from .store import Link, Query, Record, Version

log = structlog.get_logger("cortex.memories.archive")

FORMAT, VERSION = "cortex-memories", 1
PAGE = 500
MAX_LINES = 1000
MAX_PROBLEMS = 100
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _ms(stamp) -> int:
    return stamp.seconds * 1000 + stamp.nanos // 1_000_000


def record_of(m: mem.Memory, vector: bytes = b"") -> Record:
    """The store's record of an archived memory (its vector when one came with it)."""
    return Record(
        id=m.id, kind=m.kind, text=m.text, tags=list(m.tags), metadata=dict(m.metadata), source=m.source,
        created_at=_ms(m.created_at), updated_at=_ms(m.updated_at),
        expires_at=_ms(m.expires_at) if m.HasField("expires_at") else None, content_hash=m.content_hash,
        embedding_model=m.embedding_model if vector else "",
        embedding=np.frombuffer(vector, dtype="<f4").astype(np.float32) if vector else None, namespace=m.namespace,
    )


class ArchiveServicer(archive_pb2_grpc.ArchiveServiceServicer):
    def __init__(self, plugin, memories, sources):
        self.p, self.memories, self.sources = plugin, memories, sources

    # -- export -------------------------------------------------------------------------------------
    async def Export(self, request, context):
        from .service import to_proto

        try:
            scope = self.memories.access(context).search(list(request.namespaces))
        except Denied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        store, read = self.memories.store, self.memories.read
        model = await self.memories.stored_model() or ""
        manifest = pb.ArchiveManifest(format=FORMAT, version=VERSION, vectors=request.vectors and bool(model),
                                      embedding_model=model if request.vectors else "",
                                      dimension=await read(store.vector_dimension, model) if request.vectors and model else 0,
                                      cortex_version=_version(), namespaces=scope or ["*"])
        manifest.exported_at.FromMilliseconds(time.time_ns() // 1_000_000)
        yield pb.ExportResponse(line=pb.ArchiveLine(manifest=manifest))
        now, after, exported, links = time.time_ns() // 1_000_000, None, set(), {}
        while True:
            page = await read(store.page, Query(namespaces=scope), now, after, PAGE)
            for record in page:
                line = pb.ArchivedMemory(memory=to_proto(record))
                if manifest.vectors and record.embedding is not None and record.embedding_model == model:
                    line.vector = record.embedding.astype("<f4").tobytes()
                for v in await read(store.versions, record.id):
                    version = line.versions.add(version=v.version, memory=to_proto(v.record), cause=v.cause)
                    version.replaced_at.FromMilliseconds(v.replaced_at)
                exported.add(record.id)
                yield pb.ExportResponse(line=pb.ArchiveLine(memory=line))
            for link in await read(store.links, [r.id for r in page]):
                links[link.old_id] = link
            if len(page) < PAGE:
                break
            after = (page[-1].created_at, page[-1].id)
        kept = [links[old] for old in sorted(links) if old in exported and links[old].new_id in exported]
        for link in kept:
            out = mem.Supersession(old_id=link.old_id, new_id=link.new_id, rule=link.rule)
            out.at.FromMilliseconds(link.at)
            yield pb.ExportResponse(line=pb.ArchiveLine(link=out))
        sources = [s for s in await asyncio.to_thread(self.sources.table.all) if scope is None or s.namespace in scope]
        for source in sources:
            yield pb.ExportResponse(line=pb.ArchiveLine(source=await self._source_line(source)))
        log.info("memories.exported", memories=len(exported), links=len(kept), sources=len(sources))
        end = pb.ArchiveEnd(memories=len(exported), links=len(kept), sources=len(sources))
        yield pb.ExportResponse(line=pb.ArchiveLine(end=end))

    async def _source_line(self, source: SourceRow) -> pb.ArchivedSource:
        from cortex.contracts.memories.v1 import sources_pb2

        line = pb.ArchivedSource(source=sources_pb2.Source(
            name=source.name, path=source.path, include=source.include, exclude=source.exclude,
            from_config=source.from_config, namespace=source.namespace))
        if source.last_synced:
            line.source.last_synced.FromMilliseconds(source.last_synced)
        files = await asyncio.to_thread(self.sources.table.files, source.name)
        for rel in sorted(files):
            row = files[rel]
            entry = line.files.add(path=rel, size=row.size, mtime_ns=row.mtime_ns, content_hash=row.content_hash,
                                   chunker=row.chunker, state=row.state, reason=row.reason, memory_ids=row.chunk_ids)
            entry.synced_at.FromMilliseconds(row.synced_at)
        return line

    # -- import -------------------------------------------------------------------------------------
    async def Import(self, request, context):
        manifest = request.manifest
        if manifest.format != FORMAT or manifest.version != VERSION:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"not a {FORMAT} archive of version {VERSION} (manifest says {manifest.format!r} "
                                f"version {manifest.version}): send its manifest line with every batch")
        if len(request.lines) > MAX_LINES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{len(request.lines)} lines in one batch; send at most {MAX_LINES}")
        access = self.memories.access(context)
        try:
            into = access.target(request.into) if request.into else ""
            for line in request.lines:
                kind = line.WhichOneof("line")
                if kind in ("manifest", "end", None):
                    raise ValueError(f"a batch holds memory, link and source lines, not {kind or 'an empty line'}")
                if not into:
                    namespace = line.memory.memory.namespace if kind == "memory" else line.source.source.namespace \
                        if kind == "source" else ""
                    if namespace:
                        access.target(namespace)
        except Denied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{exc} (import into a namespace you may write with `into`, `--into` in the CLI)")
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        reply = pb.ImportResponse()
        memories = [line.memory for line in request.lines if line.HasField("memory")]
        await self._memories(memories, manifest, into, reply)
        links = [Link(line.link.old_id, line.link.new_id, line.link.rule, _ms(line.link.at))
                 for line in request.lines if line.HasField("link")]
        if links:
            reply.links = await self.memories.io(self.memories.store.import_links, links)
        for line in request.lines:
            if line.HasField("source"):
                await self._source(line.source, into, reply)
        log.info("memories.imported", added=reply.added, unchanged=reply.unchanged, skipped=reply.skipped,
                 embedded=reply.embedded, links=reply.links, sources=reply.sources)
        return reply

    async def _memories(self, lines: list, manifest, into: str, reply: pb.ImportResponse) -> None:
        from .service import Invalid, content_hash

        svc, items, embed = self.memories, [], []
        model = await svc.stored_model() or await self._model()
        for line in lines:
            m = line.memory
            try:
                if not ID.match(m.id):
                    raise Invalid(f"id {m.id!r} is not a memory id")
                svc._kind(m.kind)
                svc._text(m.text)
                svc._tags(m.tags)
                svc._metadata(m.metadata)
                if content_hash(m.kind, m.text, list(m.tags), m.namespace or "default") != m.content_hash:
                    raise Invalid("its content does not hash to its content_hash (an edited or damaged archive)")
            except Invalid as exc:
                _problem(reply, f"{m.id or '?'}: {exc}")
                continue
            usable = line.vector if (manifest.vectors and m.embedding_model == manifest.embedding_model == model
                                     and len(line.vector) == 4 * manifest.dimension) else b""
            record = record_of(m, usable)
            if into and into != record.namespace:
                record.namespace = into
                record.content_hash = content_hash(record.kind, record.text, record.tags, into)
            record.namespace = record.namespace or "default"
            if record.embedding is None:
                embed.append(record)
            versions = [Version(v.version, record_of(v.memory), _ms(v.replaced_at), v.cause) for v in line.versions]
            items.append((record, versions))
        reply.embedded += await self._embed(embed)
        outcomes = await svc.io(svc.store.import_batch, items, time.time_ns() // 1_000_000)
        for (record, _), outcome in zip(items, outcomes, strict=True):
            if outcome == "added":
                reply.added += 1
                await svc.index_new(record)
            elif outcome == "unchanged":
                reply.unchanged += 1
            else:
                _problem(reply, f"{record.id}: {outcome}")

    async def _model(self) -> str:
        """This kernel's embedding model, when no memory has told the store yet."""
        probe = await self.memories.embed(["model"], [])
        return probe[0] if probe else ""

    async def _embed(self, records: list[Record]) -> int:
        """Embed the memories that came without a usable vector (as Reindex does: labels travel
        with their texts); those that cannot be embedded now are kept for `cortex memories reindex`."""
        done = 0
        for start in range(0, len(records), 32):
            batch = records[start:start + 32]
            for labels in {tuple(sorted(r.tags)) for r in batch}:
                group = [r for r in batch if tuple(sorted(r.tags)) == labels]
                result = await self.memories.embed([r.text for r in group], list(labels))
                if result is None:
                    return done
                for record, vector in zip(group, result[1], strict=True):
                    record.embedding_model, record.embedding = result[0], vector
                done += len(group)
        return done

    async def _source(self, line: pb.ArchivedSource, into: str, reply: pb.ImportResponse) -> None:
        from pathlib import Path

        s = line.source
        table = self.sources.table
        if await asyncio.to_thread(table.get, s.name) is not None:
            return _problem(reply, f"source {s.name}: a source of that name is here already (kept as it is)", False)
        if not await asyncio.to_thread(Path(s.path).is_dir):
            return _problem(reply, f"source {s.name}: {s.path} is not a folder on this machine; its memories are "
                                   "imported, the source is not (add the folder with `cortex sources add`)", False)
        row = SourceRow(s.name, s.path, list(s.include), list(s.exclude), False, int(time.time() * 1000),
                        _ms(s.last_synced) if s.HasField("last_synced") else None, into or s.namespace or "default")
        files = [FileRow(f.path, f.size, f.mtime_ns, f.content_hash, f.chunker, f.state, f.reason, list(f.memory_ids),
                         _ms(f.synced_at)) for f in line.files]
        await asyncio.to_thread(table.put, row)
        await asyncio.to_thread(table.put_files, row.name, files)
        self.sources.follow(row, sync_first=True)  # what changed in the folder since, the sync finds
        reply.sources += 1


def _problem(reply: pb.ImportResponse, why: str, memory: bool = True) -> None:
    reply.skipped += memory
    if len(reply.problems) < MAX_PROBLEMS:
        reply.problems.append(why)


def _version() -> str:
    from cortex.kernel import cortex_version

    return cortex_version()
