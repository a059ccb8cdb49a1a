"""`cortex.memories.v1.SourceService`: watched note folders, and the passages citations name.

Sources come from `[[plugins.memories.source]]` (kept in step with the config at every start)
or from AddSource (kept until RemoveSource). Each is synced when added, at start, whenever the
operating system reports a change under its folder (watchfiles, debounced), and every
`rescan_seconds` as a safety net for changes no notification reported (network mounts, a
sleeping laptop).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from pathlib import Path

import grpc
import structlog

from cortex.contracts.memories.v1 import sources_pb2 as pb
from cortex.contracts.memories.v1 import sources_pb2_grpc

from .chunking import chunks_of
from .namespaces import DEFAULT, Denied
from .namespaces import NAME as NAMESPACE
from .source_store import SourceRow, SourceTable
from .source_sync import Refused, Report, Syncer, read_inside

log = structlog.get_logger("cortex.memories.sources")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CITATION = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]{0,63}):(?P<path>[^#]+?)(?:#(?P<lines>[\s\S]*))?$")
LINES = re.compile(r"L([0-9]+)(?:-L?([0-9]+))?")  # [0-9], not \d: int() reads other scripts' digits too
MAX_LINE = 2**32 - 1  # OpenResponse's line numbers are uint32
RANGE_FORM = "source:path#L3-L9 (lines 3 to 9, pages of a PDF), source:path#L3 (one) or source:path (all), from line 1"
STATES = {"indexed": pb.FILE_STATE_INDEXED, "skipped": pb.FILE_STATE_SKIPPED, "failed": pb.FILE_STATE_FAILED}
MAX_GLOBS = 32


class Invalid(Exception):
    pass


def line_range(text: str) -> tuple[int, int] | None:
    """A citation's lines: "L3-L9" (or "L3-9") -> (3, 9), "L3" -> (3, 3), "" -> None (the whole
    file); ValueError saying what is wrong with anything else (L0, a reversed range, a number
    beyond a uint32, garbage)."""
    if not text:
        return None
    found = LINES.fullmatch(text)
    if found is None:
        raise ValueError(f"'#{text[:40]}' is not a line range")
    numbers = [found[1], found[2] or found[1]]
    if any(len(n.lstrip("0")) > len(str(MAX_LINE)) or int(n) > MAX_LINE for n in numbers):
        raise ValueError(f"line numbers go up to {MAX_LINE}")
    first, last = int(numbers[0]), int(numbers[1])
    if first < 1:
        raise ValueError("lines count from 1")
    if last < first:
        raise ValueError(f"the range ends (line {last}) before it starts (line {first})")
    return first, last


def report_proto(report: Report) -> pb.SyncReport:
    return pb.SyncReport(**report.__dict__)


class SourceServicer(sources_pb2_grpc.SourceServiceServicer):
    def __init__(self, plugin, memories):
        self.p = plugin
        self.memories = memories  # the MemoryServicer whose memories the passages are
        self.table: SourceTable | None = None
        self.syncer: Syncer | None = None
        self.watchers: dict[str, asyncio.Task] = {}
        self._rescan: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self, configured: list[SourceRow]) -> None:
        self.table = SourceTable(self.p.source_db)
        self.syncer = Syncer(self.memories, self.table)
        for source in configured:
            known = await asyncio.to_thread(self.table.get, source.name)
            source.added_at = known.added_at if known else _now()
            source.last_synced = known.last_synced if known else None
            await asyncio.to_thread(self.table.put, source)
        for source in await asyncio.to_thread(self.table.all):
            self.follow(source, sync_first=True)
        self._rescan = asyncio.create_task(self._rescan_loop())

    async def stop(self) -> None:
        tasks = [*self.watchers.values(), *self._background, *([self._rescan] if self._rescan else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.watchers.clear()

    def follow(self, source: SourceRow, sync_first: bool) -> None:
        if self.p.watch and source.name not in self.watchers:
            self.watchers[source.name] = asyncio.create_task(self._watch(source, sync_first))
        elif sync_first:  # not watched: synced at start all the same, then by the rescan
            self._background.add(task := asyncio.create_task(self._sync_quietly(source.name)))
            task.add_done_callback(self._background.discard)

    async def _watch(self, source: SourceRow, sync_first: bool) -> None:
        from watchfiles import awatch

        while True:
            changes = awatch(source.path, debounce=self.p.watch_debounce_ms, step=50, recursive=True)
            # The watcher is armed when the generator first runs (before its first wait): before the first
            # sync, so that a note written while that sync runs is seen now, not at the next rescan.
            pending = asyncio.ensure_future(anext(changes))
            try:
                await asyncio.sleep(0)
                if sync_first:
                    await self._sync_quietly(source.name)
                    sync_first = False
                while True:
                    await pending
                    await self._sync_quietly(source.name)
                    pending = asyncio.ensure_future(anext(changes))
            except StopAsyncIteration:
                return  # awatch ends when the folder goes away; the rescan reports it
            except FileNotFoundError:
                await asyncio.sleep(self.p.rescan_seconds)
            finally:
                pending.cancel()  # (stopping: the watcher's thread is told to stop)

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.p.rescan_seconds)
            for source in await asyncio.to_thread(self.table.all):
                await self._sync_quietly(source.name)

    async def _sync_quietly(self, name: str) -> None:
        source = await asyncio.to_thread(self.table.get, name)
        if source is None:
            return
        try:
            await self.syncer.sync(source)
        except Exception as exc:  # noqa: BLE001 (a background sync reports, and the next one retries)
            log.warning("sources.sync_failed", source=name, error=f"{type(exc).__name__}: {exc}")

    # -- the methods --------------------------------------------------------------------------------
    async def AddSource(self, request, context):
        try:
            namespace = self.memories.access(context).target(request.source.namespace)
            source = await self.checked(request.source)
            source.namespace = namespace
        except Invalid as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Denied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        known = await asyncio.to_thread(self.table.get, source.name)
        if known is not None and (known.path, known.namespace) != (source.path, source.namespace):
            await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                f"source {source.name!r} is {known.path} (namespace {known.namespace!r}); choose another "
                                "name or remove it first")
        source.added_at = known.added_at if known else _now()
        source.from_config = known.from_config if known else False
        await asyncio.to_thread(self.table.put, source)
        report = await self._sync(source, False, context)
        self.follow(source, sync_first=False)
        return pb.AddSourceResponse(source=await self._proto(source), report=report_proto(report))

    async def ListSources(self, request, context):
        access = self.memories.access(context)
        return pb.ListSourcesResponse(sources=[await self._proto(s) for s in await asyncio.to_thread(self.table.all)
                                               if access.may_read(s.namespace)])

    async def SourceStatus(self, request, context):
        source = await self._named(request.name, context)
        files = await asyncio.to_thread(self.table.files, source.name)
        reply = pb.SourceStatusResponse(source=await self._proto(source, files))
        for rel in sorted(files):
            row = files[rel]
            entry = reply.files.add(path=rel, state=STATES[row.state], reason=row.reason, content_hash=row.content_hash,
                                    chunks=len(row.chunk_ids))
            entry.synced_at.FromMilliseconds(row.synced_at)
        return reply

    async def SyncSource(self, request, context):
        source = await self._named(request.name, context)
        queue: asyncio.Queue = asyncio.Queue()
        task = asyncio.ensure_future(self.syncer.sync(source, request.full, lambda *p: queue.put_nowait(p)))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                phase, done_files, total = getter.result()
                if phase != "done":
                    yield pb.SyncSourceResponse(phase=phase, done=done_files, total=total)
            report = await self._report_or_abort(task, context)
        finally:
            if not task.done():
                task.cancel()  # the caller went away: the files synced so far stay synced
        yield pb.SyncSourceResponse(phase="done", done=report.files_read, total=report.files_read,
                                    report=report_proto(report))

    async def RemoveSource(self, request, context):
        source = await self._named(request.name, context)
        watcher = self.watchers.pop(source.name, None)
        if watcher is not None:
            watcher.cancel()
        files = await asyncio.to_thread(self.table.files, source.name)
        await asyncio.to_thread(self.table.remove, source.name)
        deleted = []
        if not request.keep_memories:
            ids = [i for row in files.values() for i in row.chunk_ids]
            still = await asyncio.to_thread(self.table.referenced, ids)
            deleted = await self.memories.forget([i for i in dict.fromkeys(ids) if i not in still])
        log.info("sources.removed", source=source.name, memories_deleted=len(deleted))
        return pb.RemoveSourceResponse(memories_deleted=len(deleted))

    async def Open(self, request, context):
        ref = request.ref.strip()
        cited = CITATION.match(ref)
        memory = None
        if cited is None or await asyncio.to_thread(self.table.get, cited["name"]) is None:
            memory = await self.memories._visible(ref, self.memories.access(context), _now())
            if memory is None or "file" not in memory.metadata:
                why = "a memory made from a note" if memory is not None else "a memory id or source:path#Lfirst-Llast"
                await context.abort(grpc.StatusCode.NOT_FOUND, f"{ref!r} is not {why} (cortex sources list shows the sources)")
            name, rel = memory.metadata.get("source", ""), memory.metadata["file"]
            lines = memory.metadata.get("lines", "")
            lines = f"L{lines}" if lines else ""  # "6-7", as the sync writes it (anyone may write metadata)
        else:
            name, rel, lines = cited["name"], cited["path"], cited["lines"] or ""
        try:
            wanted = line_range(lines)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{ref[:300]!r}: {exc}; cite a passage as {RANGE_FORM}")
        source = await self._named(name, context)
        if await asyncio.to_thread(inside, source.path, rel) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{rel!r} is outside source {name!r}")
        files = await asyncio.to_thread(self.table.files, name)
        row = files.get(rel)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{name}:{rel} is not a file of source {name!r} (cortex sources status {name})")
        try:  # the file opened, not only its name, must be in the folder (a link swapped in is refused)
            data = await asyncio.to_thread(read_inside, Path(source.path), rel)
        except Refused as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}:{rel} is not opened: {exc}")
        except OSError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"cannot read {name}:{rel} now: {exc.strerror or exc}")
        note = "" if hashlib.sha256(data).hexdigest() == row.content_hash else (
            "the file changed since it was indexed: this is its text now (cortex sources sync updates the memories)")
        if rel.lower().endswith(".pdf"):
            chunks = await asyncio.to_thread(chunks_of, rel, data)
            count, unit = max((c.last for c in chunks), default=0), "pages"
        else:
            all_lines = data.decode("utf-8-sig", errors="replace").splitlines()
            count, unit = len(all_lines), "lines"
        first_n, last_n = wanted or (1, count)
        if wanted is not None and first_n > count:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE,
                                f"{ref[:300]!r} starts at {unit[:-1]} {first_n}, but {name}:{rel} has {count} {unit} now")
        last_n = min(last_n, count)  # a range past the end is the file's end
        if unit == "pages":
            text = "\n\n".join(c.text for c in chunks if first_n <= c.first <= last_n)
        else:
            text = "\n".join(all_lines[first_n - 1:last_n])
        reply = pb.OpenResponse(source=name, path=rel, first_line=first_n, last_line=last_n, text=text, note=note)
        records = await self.memories.read(self.memories.store.get_many, row.chunk_ids, _now())
        # the text is the file's: it carries the labels of the file's every passage, and its source's
        labels = {label for r in records.values() for label in self.memories.labels_of(r)}
        reply.labels.extend(sorted(labels.union(self.p.labeller.of_source(name) if self.p.labeller else ())))
        if memory is None:
            span = f"{first_n}-{last_n}"
            memory = next((r for r in records.values() if r.metadata.get("lines") == span), None)
        if memory is not None:
            reply.memory_id, reply.heading = memory.id, memory.metadata.get("heading", "")
        return reply

    # -- helpers ------------------------------------------------------------------------------------
    async def _sync(self, source: SourceRow, full: bool, context) -> Report:
        return await self._report_or_abort(asyncio.ensure_future(self.syncer.sync(source, full)), context)

    @staticmethod
    async def _report_or_abort(task: asyncio.Future, context) -> Report:
        try:
            return await task
        except FileNotFoundError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    async def _named(self, name: str, context) -> SourceRow:
        source = await asyncio.to_thread(self.table.get, name) if name else None
        if source is None or not self.memories.access(context).may_read(source.namespace):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no source {name!r} (cortex sources list shows them)")
        return source

    async def _proto(self, source: SourceRow, files: dict | None = None) -> pb.Source:
        files = files if files is not None else await asyncio.to_thread(self.table.files, source.name)
        out = pb.Source(
            name=source.name, path=source.path, include=source.include, exclude=source.exclude, from_config=source.from_config,
            files_indexed=sum(r.state == "indexed" for r in files.values()),
            files_skipped=sum(r.state == "skipped" for r in files.values()),
            files_failed=sum(r.state == "failed" for r in files.values()),
            chunks=sum(len(r.chunk_ids) for r in files.values()),
            watching=source.name in self.watchers and not self.watchers[source.name].done(), namespace=source.namespace,
        )
        if source.last_synced:
            out.last_synced.FromMilliseconds(source.last_synced)
        return out

    async def checked(self, message: pb.Source) -> SourceRow:
        """A source as AddSource (or an imported source line) gives it, checked: a folder on this
        machine, outside the kernel's data dir (whose keys and databases no source may index),
        with sane globs. Invalid says what to fix."""
        source = self._source(message)
        source.namespace = message.namespace or DEFAULT
        path, data_dir = Path(source.path), self.p.data_dir.resolve()
        if path == data_dir or path.is_relative_to(data_dir) or data_dir.is_relative_to(path):
            raise Invalid(f"source {source.name!r}: {source.path} is, holds or is inside the kernel's data dir "
                          f"({data_dir}), whose keys and databases are never indexed; choose a folder of notes")
        if not await asyncio.to_thread(path.is_dir):
            raise Invalid(f"{source.path} is not a folder on the kernel's machine")
        return source

    @staticmethod
    def _source(message: pb.Source, from_config: bool = False) -> SourceRow:
        return source_row(message.name, message.path, list(message.include), list(message.exclude), from_config)


def source_row(name: str, path: str, include: list[str], exclude: list[str], from_config: bool,
               namespace: str = DEFAULT) -> SourceRow:
    """A source as given (config or AddSource), checked: Invalid says what to fix."""
    if not NAME.match(name or ""):
        raise Invalid(f"source name {name!r}: use 1 to 64 letters, digits, '-' or '_' (it is cited as name:path)")
    if not path or not Path(path).expanduser().is_absolute():
        raise Invalid(f"source {name!r}: path {path!r} must be an absolute folder on the kernel's machine")
    for kind, globs in (("include", include), ("exclude", exclude)):
        if len(globs) > MAX_GLOBS or any(not g or len(g) > 256 or g.startswith("/") for g in globs):
            raise Invalid(f"source {name!r}: {kind} takes up to {MAX_GLOBS} relative globs such as '**/*.md'")
    if not NAMESPACE.match(namespace):
        raise Invalid(f"source {name!r}: namespace {namespace!r} is not a namespace name (letters, digits and ._:@-)")
    return SourceRow(name, str(Path(path).expanduser().resolve()), include, exclude, from_config, namespace=namespace)


def inside(root: str, rel: str) -> Path | None:
    """The file `rel` of folder `root`, or None when `rel` leads out of it ("../", a link)."""
    base = Path(root).resolve()
    path = (base / rel).resolve()
    return path if path.is_relative_to(base) else None


def _now() -> int:
    return time.time_ns() // 1_000_000
