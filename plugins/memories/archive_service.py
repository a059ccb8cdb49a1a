"""`cortex.memories.v1.ArchiveService`: a caller's memories out as archive lines, and back in.

The format (archive.proto) is the store's own facts, not a re-telling: ids, namespaces, times,
content hashes, every version, the supersession links, the watched sources with what each file
became, and optionally the exact float32 vectors. So an import elsewhere (another machine, another
backend) is the same memories, found the same way, without embedding them again when the models
agree; and exporting what was imported gives the same lines back.

Import is idempotent and never overwrites: a memory already here is "unchanged", an id here with
other content is skipped with the reason, and a memory whose content does not hash to its
content_hash (an edited or damaged archive) is skipped too.

Import is a side door, so it follows the front door's rules line by line: a memory line is a
Store into a namespace the caller may write; a link joins two memories of one namespace the
caller may write; a source line is an AddSource, admitted by the kernel as that direct call would
be (admin only, unless a policy says otherwise) and checked as AddSource checks its folder; its
files' memory ids count only when they are memories of the source's own namespace.
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
ADD_SOURCE = "/cortex.memories.v1.SourceService/AddSource"
STORE = "/cortex.memories.v1.MemoryService/Store"
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z: the last time a Timestamp may hold


def _ms(stamp) -> int:
    return stamp.seconds * 1000 + stamp.nanos // 1_000_000


def bad_time(message) -> str:
    """The first Timestamp anywhere in `message` that is no real time (an archive is a caller's
    text like any other: 2**62 seconds would overflow the store), as "field.path", or ""."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        for item in value if field.is_repeated else [value]:
            if not hasattr(item, "ListFields"):  # a map's scalar values
                continue
            if field.message_type.full_name == "google.protobuf.Timestamp":
                if not (0 <= item.seconds <= LAST_SECOND and 0 <= item.nanos < 1_000_000_000):
                    return field.name
            elif inner := bad_time(item):
                return f"{field.name}.{inner}"
    return ""


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
        for number, line in enumerate(request.lines, start=1):
            if where := bad_time(line):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"line {number} of the batch: {where} is not a time between 1970 and the year 9999")
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
        await self._memories(memories, manifest, into, access.own, reply)
        links = [Link(line.link.old_id, line.link.new_id, line.link.rule, _ms(line.link.at))
                 for line in request.lines if line.HasField("link")]
        if links:
            reply.links = await self._links(links, access, reply)
        for line in request.lines:
            if line.HasField("source"):
                await self._source(line.source, into or line.source.source.namespace or access.own, reply)
        log.info("memories.imported", added=reply.added, unchanged=reply.unchanged, skipped=reply.skipped,
                 embedded=reply.embedded, links=reply.links, sources=reply.sources)
        return reply

    async def _memories(self, lines: list, manifest, into: str, own: str, reply: pb.ImportResponse) -> None:
        """Memory lines, each a Store: into `into` when the import names one, else into the
        namespace the line names (checked already), else into the caller's `own`."""
        from .service import Invalid, content_hash

        svc, items, embed = self.memories, [], []
        model = await svc.stored_model() or await self._model()
        dimension = await self._dimension(model) if manifest.vectors else 0
        for line in lines:
            m = line.memory
            target = into or m.namespace or own
            try:
                if not ID.match(m.id):
                    raise Invalid(f"id {m.id!r} is not a memory id")
                for each in (m, *(v.memory for v in line.versions)):  # a version is restored by Revert
                    svc._kind(each.kind)
                    svc._text(each.text)
                    svc._tags(each.tags)
                    svc._metadata(each.metadata)
                if content_hash(m.kind, m.text, svc._tags(m.tags), m.namespace or "default") != m.content_hash:
                    raise Invalid("its content does not hash to its content_hash (an edited or damaged archive)")
                # a memory line is a Store: admitted as the caller's Store would be (scopes, policy)
                await self.p.channel.admit(STORE, mem.StoreRequest(kind=m.kind, text=m.text, tags=m.tags,
                                                                   metadata=m.metadata, namespace=target))
            except Invalid as exc:
                _problem(reply, f"{m.id or '?'}: {exc}")
                continue
            except grpc.RpcError as exc:
                _problem(reply, f"{m.id or '?'}: not imported: {exc.code().name}: {exc.details()}")
                continue
            same_model = m.embedding_model == manifest.embedding_model == model
            record = record_of(m, usable_vector(line.vector, manifest, same_model, dimension))
            record.tags = svc._tags(m.tags)  # as a Store keeps them (the hash above was of these)
            record.namespace = record.namespace or "default"  # (an archive's default is its owner's)
            if target != record.namespace:
                record.namespace = target
                record.content_hash = content_hash(record.kind, record.text, record.tags, target)
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

    async def _dimension(self, model: str) -> int:
        """How many values this kernel's vectors of `model` have (0: none can be told now)."""
        stored = await self.memories.read(self.memories.store.vector_dimension, model)
        if stored:
            return stored
        probe = await self.memories.embed(["dimension"], [])
        return int(probe[1].shape[1]) if probe and probe[0] == model else 0

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
            for labels in {self.memories.embedding_labels(r) for r in batch}:  # labels travel with their texts
                group = [r for r in batch if self.memories.embedding_labels(r) == labels]
                result = await self.memories.embed([r.text for r in group], list(labels))
                if result is None:
                    return done
                for record, vector in zip(group, result[1], strict=True):
                    record.embedding_model, record.embedding = result[0], vector
                done += len(group)
        return done

    async def _links(self, links: list[Link], access, reply: pb.ImportResponse) -> int:
        """Record the links whose two memories are of one namespace the caller may write; a link
        naming another namespace's memory is skipped as if that memory were not here."""
        ids = list({i for link in links for i in (link.old_id, link.new_id)})
        found = await self.memories.read(self.memories.store.get_many, ids, time.time_ns() // 1_000_000)
        kept = []
        for link in links:
            old, new = found.get(link.old_id), found.get(link.new_id)
            if old is None or new is None or old.namespace != new.namespace or not access.may_write(old.namespace):
                _problem(reply, f"link {link.old_id} -> {link.new_id}: both memories must be here, in one namespace "
                                "you may write", False)
                continue
            kept.append(link)
        return await self.memories.io(self.memories.store.import_links, kept) if kept else 0

    async def _source(self, line: pb.ArchivedSource, namespace: str, reply: pb.ImportResponse) -> None:
        from cortex.contracts.memories.v1 import sources_pb2

        from .source_service import Invalid

        s = line.source
        table = self.sources.table
        wanted = sources_pb2.Source(name=s.name, path=s.path, include=s.include, exclude=s.exclude, namespace=namespace)
        try:  # a source line is an AddSource: admitted only as that direct call would be
            await self.p.channel.admit(ADD_SOURCE, sources_pb2.AddSourceRequest(source=wanted))
            row = await self.sources.checked(wanted)
        except grpc.RpcError as exc:
            return _problem(reply, f"source {s.name}: not imported: {exc.code().name}: {exc.details()}", False)
        except Invalid as exc:
            return _problem(reply, f"source {s.name}: not imported: {exc}; its memories are imported, the source is "
                                   "not (add the folder with `cortex sources add`)", False)
        if await asyncio.to_thread(table.get, s.name) is not None:
            return _problem(reply, f"source {s.name}: a source of that name is here already (kept as it is)", False)
        row.added_at = int(time.time() * 1000)
        row.last_synced = _ms(s.last_synced) if s.HasField("last_synced") else None
        files = await self._own_files(line.files, namespace)
        await asyncio.to_thread(table.put, row)
        await asyncio.to_thread(table.put_files, row.name, files)
        self.sources.follow(row, sync_first=True)  # what changed in the folder since, the sync finds
        reply.sources += 1


    async def _own_files(self, archived: list, namespace: str) -> list[FileRow]:
        """The archived file rows whose memories are all the source's own namespace's: a row naming
        another namespace's memory (whose sync would delete it) is dropped, and the next sync
        reads that file afresh."""
        ids = [i for f in archived for i in f.memory_ids]
        found = await self.memories.read(self.memories.store.get_many, ids, time.time_ns() // 1_000_000) if ids else {}
        return [FileRow(f.path, f.size, f.mtime_ns, f.content_hash, f.chunker, f.state, f.reason, list(f.memory_ids),
                        _ms(f.synced_at))
                for f in archived
                if all(i in found and found[i].namespace == namespace for i in f.memory_ids)]


def usable_vector(vector: bytes, manifest, same_model: bool, dimension: int) -> bytes:
    """The archived vector when it can stand for its text here: of this kernel's model, of its
    dimension (the manifest's word is the caller's: a 3-value vector in a 384-value index would
    break every search), all finite; else nothing, and the memory is embedded again."""
    if not (manifest.vectors and same_model and manifest.embedding_model and dimension
            and len(vector) == 4 * dimension):
        return b""
    return vector if np.isfinite(np.frombuffer(vector, dtype="<f4")).all() else b""


def _problem(reply: pb.ImportResponse, why: str, memory: bool = True) -> None:
    reply.skipped += memory
    if len(reply.problems) < MAX_PROBLEMS:
        reply.problems.append(why)


def _version() -> str:
    from cortex.kernel.sdk import cortex_version

    return cortex_version()
