"""`cortex.memories.v1.MemoryService`: validation, embeddings through the kernel, and the three
search modes over the store and the vector index."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc
import numpy as np
import structlog

from cortex.contracts.events.v1 import events_pb2
from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc
from cortex.contracts.models.v1 import models_pb2, models_pb2_grpc
from cortex.kernel import RouterError

from .ann_index import AnnIndex
from .bulk import MAX_BULK, SAMPLE, confirmation, retagged
from .currency import current_first, newer_of
from .fusion import fuse, query_terms
from .labelling import Labeller
from .namespaces import DEFAULT, Access, Denied, caller
from .restatement import restates
from .store import DuplicateContent, Link, Query, Record, version_body
from .vector_index import VectorIndex

if TYPE_CHECKING:
    from .plugin import MemoriesPlugin

log = structlog.get_logger("cortex.memories")

SEMANTIC, KEYWORD, HYBRID = pb.SEARCH_MODE_SEMANTIC, pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_HYBRID
MAX_TAGS, MAX_TAG_CHARS, MAX_METADATA, MAX_METADATA_CHARS = 32, 64, 32, 1024
MAX_TOP_K, MAX_PAGE = 100, 500
MAX_TTL_SECONDS = 100 * 365 * 24 * 3600  # a century: any longer is "never", which is 0
# Timestamps a filter may name: protobuf's own range (years 1 to 9999), in milliseconds
MIN_TIME_MS, MAX_TIME_MS = -62_135_596_800_000, 253_402_300_799_999
MASK_PATHS = {"text", "kind", "tags", "metadata", "source", "ttl_seconds"}
EMBED_TIMEOUT = 120.0


class Invalid(ValueError):
    pass


PLAIN = Labeller()  # a tag named "private" is the label, no rules


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def content_hash(kind: str, text: str, tags: list[str], namespace: str = DEFAULT) -> str:
    """What makes two stores one memory. The namespace counts (alice's "buy milk" is not bob's),
    but not the default one's, so hashes made before namespaces existed still hold.

    The parts are joined with a separator no person types (U+001F), and the namespace is a last
    part of its own; a text or tag holding that separator, or a tag that reads like the namespace
    part, could make another namespace's hash (and so be handed that memory as "already stored"),
    so such memories are hashed from an unambiguous encoding (JSON) instead."""
    kept = sorted(set(tags))
    if "\x1f" in text or any("\x1f" in t or t.startswith("namespace=") for t in kept):
        return hashlib.sha256(json.dumps(["v2", kind, text, kept, namespace]).encode()).hexdigest()
    parts = [kind, text, *kept] + ([f"namespace={namespace}"] if namespace != DEFAULT else [])
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def new_id() -> str:
    return f"m{now_ms():012x}{os.urandom(5).hex()}"


def to_proto(r: Record, superseded_by: str = "", labeller: Labeller = PLAIN) -> pb.Memory:
    m = pb.Memory(
        id=r.id, kind=r.kind, text=r.text, tags=r.tags, metadata=r.metadata, source=r.source,
        embedding_model=r.embedding_model, dimension=0 if r.embedding is None else len(r.embedding),
        content_hash=r.content_hash, superseded_by=superseded_by, namespace=r.namespace, labels=labeller.labels_of(r),
    )
    m.created_at.FromMilliseconds(r.created_at)
    m.updated_at.FromMilliseconds(r.updated_at)
    if r.expires_at is not None:
        m.expires_at.FromMilliseconds(r.expires_at)
    return m


def link_proto(link: Link) -> pb.Supersession:
    out = pb.Supersession(old_id=link.old_id, new_id=link.new_id, rule=link.rule)
    out.at.FromMilliseconds(link.at)
    return out


class MemoryServicer(memories_pb2_grpc.MemoryServiceServicer):
    def __init__(self, plugin: MemoriesPlugin):
        self.p = plugin
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cortex-memories-write")
        self._reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cortex-memories-read")
        self.index: VectorIndex | AnnIndex | None = None
        self._index_lock = asyncio.Lock()
        # while the exact index is being replaced by an approximate one: the changes meanwhile
        self._switching: list[tuple[str, Record | str]] | None = None
        self.switch_task: asyncio.Task | None = None

    # -- plumbing ---------------------------------------------------------------------------------
    def to_proto(self, record: Record, superseded_by: str = "") -> pb.Memory:
        """The memory as the contract has it, with the labels config gives it (labelling.py)."""
        return to_proto(record, superseded_by, self.p.labeller or PLAIN)

    def labels_of(self, record: Record) -> list[str]:
        return (self.p.labeller or PLAIN).labels_of(record)

    def _carried(self, context, tags: list[str]) -> list[str]:
        """The labels the Store's call carries that the memory would not (its caller read private
        data, or said so in x-cortex-labels), as tags: text stored from a private memory stays
        private when it is read back later, outside the run that wrote it."""
        names = (self.p.labeller or PLAIN).names
        return sorted(label for label in getattr(context, "labels", ()) if label in names and label not in tags)

    def embedding_labels(self, record: Record) -> tuple[str, ...]:
        """What an Embed of the memory's text is labelled with: its tags (as a Store's request
        was) and its labels."""
        return tuple(sorted({*record.tags, *self.labels_of(record)}))

    @property
    def store(self):
        store = self.p.store
        if store is None:  # registered, not yet started (or stopping): a call now is retried, not a crash
            raise RouterError(grpc.StatusCode.UNAVAILABLE, "the memory store is not open yet (the kernel is starting or "
                                                           "stopping): retry in a moment")
        return store

    async def io(self, fn, *args):
        """Writes, one at a time, on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def read(self, fn, *args):
        """Reads and searches, beside the writes (WAL readers; numpy and SQLite drop the GIL)."""
        return await asyncio.get_running_loop().run_in_executor(self._reads, fn, *args)

    def close(self) -> None:
        self._io.shutdown(wait=True)
        self._reads.shutdown(wait=True)
        if isinstance(self.index, AnnIndex):
            self.index.save()  # (a kill -9 skips this: the next open repairs what lags)

    async def _refuse(self, context, error: Invalid | Denied) -> None:
        code = grpc.StatusCode.PERMISSION_DENIED if isinstance(error, Denied) else grpc.StatusCode.INVALID_ARGUMENT
        await context.abort(code, str(error))

    def access(self, context) -> Access:
        """What the caller may read and write (namespaces.py)."""
        return self.p.namespaces.access(*caller(context))

    async def _visible(self, memory_id: str, access: Access, now: int) -> Record | None:
        """The live memory `memory_id` when the caller may see it; None as for an unknown id (a
        memory of another namespace does not exist for this caller: no probing for ids)."""
        record = await self.read(self.store.get, memory_id, now) if memory_id else None
        return record if record is not None and access.may_read(record.namespace) else None

    # -- validation -------------------------------------------------------------------------------
    def _kind(self, kind: str) -> str:
        kind = kind or "note"
        if kind not in self.p.kinds:
            raise Invalid(f"unknown kind {kind!r}; use one of {', '.join(self.p.kinds)} (or set [plugins.memories] kinds)")
        return kind

    def _text(self, text: str) -> str:
        if not text.strip():
            raise Invalid("text is empty: send the memory's text")
        if len(text) > self.p.max_text_chars:
            raise Invalid(f"text is {len(text)} characters; the limit is {self.p.max_text_chars} (split it into several memories)")
        return text

    @staticmethod
    def _tags(tags) -> list[str]:
        tags = list(dict.fromkeys(t.strip() for t in tags))
        if len(tags) > MAX_TAGS or any(not t or len(t) > MAX_TAG_CHARS for t in tags):
            raise Invalid(f"tags: at most {MAX_TAGS}, each 1 to {MAX_TAG_CHARS} characters")
        return tags

    @staticmethod
    def _metadata(metadata) -> dict[str, str]:
        metadata = dict(metadata)
        if len(metadata) > MAX_METADATA or any(not k or len(k) + len(v) > MAX_METADATA_CHARS for k, v in metadata.items()):
            raise Invalid(f"metadata: at most {MAX_METADATA} entries, keys non-empty, key+value up to {MAX_METADATA_CHARS} characters")
        return metadata

    @staticmethod
    def _expiry(ttl_seconds: int, now: int) -> int | None:
        if ttl_seconds > MAX_TTL_SECONDS:
            raise Invalid(f"ttl_seconds is {ttl_seconds}; at most {MAX_TTL_SECONDS} (100 years), or 0 to keep it forever")
        return now + ttl_seconds * 1000 if ttl_seconds else None

    @staticmethod
    def _time(name: str, stamp) -> int:
        millis = stamp.seconds * 1000 + stamp.nanos // 1_000_000
        if not MIN_TIME_MS <= millis <= MAX_TIME_MS or not 0 <= stamp.nanos < 1_000_000_000:
            raise Invalid(f"filter: {name} is out of range; give a time between the years 1 and 9999")
        return millis

    def _query(self, f: pb.Filter, access: Access) -> Query:
        """The store's query for filter `f`, within the namespaces `access` allows (Denied)."""
        for kind in f.kinds:
            self._kind(kind)
        for name, values in (("kinds", f.kinds), ("exclude_kinds", f.exclude_kinds), ("tags_all", f.tags_all),
                             ("tags_any", f.tags_any)):
            if len(values) > MAX_TAGS:
                raise Invalid(f"filter: {name} has {len(values)} entries; at most {MAX_TAGS}")
        if len(f.namespaces) > MAX_TAGS:
            raise Invalid(f"filter: namespaces has {len(f.namespaces)} entries; at most {MAX_TAGS}")
        if len(f.metadata) > MAX_METADATA:
            raise Invalid(f"filter: metadata has {len(f.metadata)} entries; at most {MAX_METADATA}")
        query = Query(
            kinds=list(f.kinds), exclude_kinds=list(f.exclude_kinds), tags_all=list(f.tags_all), tags_any=list(f.tags_any),
            metadata=dict(f.metadata), namespaces=access.search(list(f.namespaces)),
            created_after=self._time("created_after", f.created_after) if f.HasField("created_after") else None,
            created_before=self._time("created_before", f.created_before) if f.HasField("created_before") else None,
        )
        if query.created_after is not None and query.created_before is not None and query.created_after >= query.created_before:
            raise Invalid("filter: created_after must be before created_before")
        return query

    # -- events, through the kernel ------------------------------------------------------------------
    def announce(self, topic: str, record: Record | None, memory_id: str = "", namespace: str = "") -> None:
        """Publish `memory.stored`, `memory.updated` or `memory.deleted` on the event bus when one
        is served, without making the caller wait: the change is made either way. The event names
        the memory, not its text (events may leave the machine through webhooks; private text must
        not); a deleted memory's event carries its id alone. It is the memory's namespace's event
        (admin storing into key:alice's is alice's to see, not the owner's); the bus takes that
        from a caller who may write every namespace, else the caller's own."""
        if self.p.channel is None:
            return
        memory_id = record.id if record is not None else memory_id
        namespace = record.namespace if record is not None else namespace
        fields = {"id": memory_id} if record is None else {
            "id": record.id, "kind": record.kind, "tags": record.tags, "source": record.source,
            "content_hash": record.content_hash}
        data = json.dumps(fields)
        self.p.channel.publish(events_pb2.Event(type=topic, source="cortex/memories", subject=memory_id, data=data,
                                                datacontenttype="application/json", namespace=namespace),
                               timeout=EMBED_TIMEOUT)

    # -- embeddings, through the kernel ------------------------------------------------------------
    async def embed(self, texts: list[str], labels: list[str]) -> tuple[str, np.ndarray] | None:
        """(model, vectors), or None when no provider can embed now (the caller degrades)."""
        stub = models_pb2_grpc.ModelServiceStub(self.p.own_channel)
        try:
            reply = await stub.Embed(
                models_pb2.EmbedRequest(texts=texts, model=self.p.embedding_model, labels=labels), timeout=EMBED_TIMEOUT
            )
        except grpc.RpcError as exc:
            log.warning("memories.embed_unavailable", code=exc.code().name, details=exc.details())
            return None
        vectors = np.array([v.values for v in reply.vectors], dtype=np.float32)
        return reply.model, vectors

    async def ready_index(self, model: str | None = None) -> VectorIndex | AnnIndex | None:
        """The index of the current embedding model, loaded from the store on first use."""
        if model is None and self.index is not None:
            return self.index  # the common case, without a trip to the database
        async with self._index_lock:
            current = model or await self.stored_model()
            if current is None:
                return None
            if self.index is None or self.index.model != current:
                await self.io(self.store.meta, "embedding_model", current)
                self.index = await self.io(self._load_index, current)
            return self.index

    def _load_index(self, model: str, rebuild: bool = False) -> VectorIndex | AnnIndex:
        """The exact index below ann_threshold vectors, the approximate one from there on."""
        own = self.store.own_index(model)
        if own is not None:
            return own
        started = time.monotonic()
        if self.store.count_vectors(model) >= self.p.ann_threshold:
            if rebuild:
                AnnIndex.discard(self.store, model)
            return AnnIndex.open(self.store, model, self.store.vector_dimension(model))
        index = VectorIndex(model)
        for record in self.store.vectors(model, now_ms()):
            index.add(record, record.embedding)
        log.info("memories.index_loaded", model=model, vectors=len(index), seconds=round(time.monotonic() - started, 3))
        return index

    async def stored_model(self) -> str | None:
        """The embedding model of the store's vectors (None before the first)."""
        return await self.read(self.store.meta, "embedding_model")

    async def index_new(self, record: Record) -> None:
        """Put a newly written memory's vector in the index, loading the index first if this is
        the first vector since start (of the store's model, else of this memory's)."""
        if record.embedding is None:
            return
        if self.index is None:
            await self.ready_index(await self.stored_model() or record.embedding_model)
        self.index_add(record)

    def index_add(self, record: Record) -> None:
        if self.index is not None and record.embedding is not None and record.embedding_model == self.index.model:
            self.index.add(record, record.embedding)
            if self._switching is not None:
                self._switching.append(("add", record))
            elif isinstance(self.index, VectorIndex) and len(self.index) >= self.p.ann_threshold:
                self._switching = []
                self.switch_task = asyncio.get_running_loop().create_task(self._switch_to_ann(self.index.model))

    def index_remove(self, memory_id: str) -> None:
        if self.index is not None:
            self.index.remove(memory_id)
            if self._switching is not None:
                self._switching.append(("remove", memory_id))

    async def _switch_to_ann(self, model: str) -> None:
        """Past ann_threshold: build the approximate index in the background (exact search
        answers meanwhile), then replay the changes made while it was built, and swap."""
        log.info("memories.ann_building", model=model, vectors=len(self.index))
        try:
            ann = await asyncio.to_thread(AnnIndex.open, self.store, model, self.store.vector_dimension(model))
        except Exception as exc:  # noqa: BLE001 - exact search goes on; the next start tries again
            log.error("memories.ann_build_failed", model=model, error=repr(exc))
            self._switching = None
            return
        async with self._index_lock:
            if self.index is not None and self.index.model == model:
                for op, item in self._switching or []:
                    if op == "add":
                        ann.add(item, item.embedding)
                    else:
                        ann.remove(item)
                self.index = ann
            self._switching = None

    # -- the methods --------------------------------------------------------------------------------
    async def Store(self, request, context):
        now = now_ms()
        access = self.access(context)
        try:
            kind, text = self._kind(request.kind), self._text(request.text)
            tags, metadata = self._tags(request.tags), self._metadata(request.metadata)
            tags += self._carried(context, tags)
            expires_at = self._expiry(request.ttl_seconds, now)
            namespace = access.target(request.namespace)
        except (Invalid, Denied) as exc:
            await self._refuse(context, exc)
        digest = content_hash(kind, text, tags, namespace)
        existing = await self.read(self.store.by_hash, digest)  # the common repeat costs no embedding
        if existing is not None and existing.namespace == namespace and (existing.expires_at is None or existing.expires_at > now):
            return pb.StoreResponse(id=existing.id, created=False, memory=self.to_proto(existing))
        supersedes, rule = "", ""
        if request.supersedes:
            old = await self._visible(request.supersedes, access, now)
            if old is None:
                await context.abort(grpc.StatusCode.NOT_FOUND,
                                    f"supersedes: no memory {request.supersedes!r} (it may have expired or been deleted)")
            if old.namespace != namespace:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"supersedes: memory {old.id!r} is in namespace {old.namespace!r}, this one goes to "
                                    f"{namespace!r}; a memory supersedes only one of its own namespace")
            supersedes, rule = old.id, "asked"
        record = Record(
            id=new_id(), kind=kind, text=text, tags=tags, metadata=metadata, source=request.source or "",
            created_at=now, updated_at=now, expires_at=expires_at,
            content_hash=digest, namespace=namespace,
        )
        # Embed first so one transaction writes the memory with its vector; without an embedding
        # it is stored all the same (acknowledged means stored).
        result = await self.embed([text], [*tags, *self.labels_of(record)])
        if result is not None:
            record.embedding_model, record.embedding = result[0], result[1][0]
            if not supersedes and self.p.restatements != "off":
                supersedes, rule = await self._restated(record, now) or ("", "")
                if supersedes and self.p.restatements == "update":
                    return await self._fold(record, supersedes, rule, now, context)
        return await self._put(record, supersedes, rule, now)

    async def _put(self, record: Record, supersedes: str, rule: str, now: int) -> pb.StoreResponse:
        """Write a new memory (with its link to the one it supersedes, if any) and announce it."""
        # Another Store of the same content may have won while this one embedded: put() decides
        # atomically, and the loser answers with the winner's memory, as a sequential repeat would.
        record, created = await self.io(self.store.put, record, now)
        if not created:
            return pb.StoreResponse(id=record.id, created=False, memory=self.to_proto(record))
        await self.index_new(record)
        if supersedes:
            await self.io(self.store.supersede, supersedes, record.id, rule, now)
            log.info("memories.superseded", old_id=supersedes, new_id=record.id, rule=rule)
        self.announce("memory.stored", record)
        return pb.StoreResponse(id=record.id, created=True, memory=self.to_proto(record), supersedes=supersedes, rule=rule)

    async def _fold(self, record: Record, into: str, rule: str, now: int, context) -> pb.StoreResponse:
        """`restatements = "update"`: the restated memory takes the new text (and its kind, tags,
        and the metadata and source when the Store gave them); what it said before is a version."""
        old = await self.read(self.store.get, into, now)
        if old is None:  # deleted since the search found it: the new text is a memory of its own
            return await self._put(record, "", "", now)
        updated = Record(**{**old.__dict__, "kind": record.kind, "text": record.text, "tags": record.tags,
                            "metadata": record.metadata or old.metadata, "source": record.source or old.source,
                            "content_hash": record.content_hash, "embedding_model": record.embedding_model,
                            "embedding": record.embedding, "updated_at": now,
                            "expires_at": record.expires_at if record.expires_at is not None else old.expires_at})
        memory = await self._replace(updated, old, rule, now, context)
        log.info("memories.restated", id=old.id, rule=rule)
        return pb.StoreResponse(id=old.id, created=False, updated=True, memory=memory, rule=rule)

    async def _restated(self, record: Record, now: int) -> tuple[str, str] | None:
        """The memory whose fact `record` restates, by the restatement rule (restatement.py)."""
        index = await self.ready_index()
        if index is None or index.model != record.embedding_model:
            return None
        nearest = await self.read(index.search, record.embedding, 1, Query(kinds=[record.kind], namespaces=[record.namespace]), now)
        return restates(record.text, nearest, self.p.restatement_min_similarity)

    async def _newer(self, ids: list[str]) -> dict[str, str]:
        """old id -> the id of the memory that supersedes it, for those of `ids` that are superseded."""
        return await self.read(newer_of, self.store, ids)

    async def Get(self, request, context):
        record = await self._visible(request.id, self.access(context), now_ms())
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no memory {request.id!r} (it may have expired or been deleted)")
        newer = await self._newer([record.id])
        return pb.GetResponse(memory=self.to_proto(record, newer.get(record.id, "")))

    async def Search(self, request, context):
        mode = request.mode or HYBRID
        top_k = request.top_k
        try:
            if not request.query.strip():
                raise Invalid("query is empty: send what to look for")
            if len(request.query) > self.p.max_text_chars:
                raise Invalid(f"query is over {self.p.max_text_chars} characters")
            if not 1 <= top_k <= MAX_TOP_K:
                raise Invalid(f"top_k is {top_k}; ask for 1 to {MAX_TOP_K}")
            if mode not in (SEMANTIC, KEYWORD, HYBRID):
                raise Invalid(f"unknown mode {mode}; use SEMANTIC, KEYWORD or HYBRID")
            query = self._query(request.filter, self.access(context))
        except (Invalid, Denied) as exc:
            await self._refuse(context, exc)
        now = now_ms()
        wide = max(top_k * 4, 40) if mode == HYBRID else top_k
        model, vector, index = "", None, None
        if mode in (SEMANTIC, HYBRID):
            model, vector, index, why = await self._query_vector(request.query)
            if why and mode == SEMANTIC:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"semantic search is unavailable: {why}")
            if why:
                mode = KEYWORD  # hybrid degrades to keyword, and says so
        # the ranking, the memories and their links in one trip to a reader thread: under load each
        # trip costs the event loop a wake-up and a handover, and a search made five
        ranked, records, newer = await self.read(self._ranked, request.query, mode, index, vector, model, query, now, wide)
        results = []
        for memory_id, entry in ranked:
            record = records.get(memory_id)
            if record is None or entry["hybrid"] < request.min_score:
                continue
            matched = [m for m, name in ((SEMANTIC, "semantic"), (KEYWORD, "keyword")) if name in entry]
            results.append(
                pb.SearchResult(
                    memory=self.to_proto(record, newer.get(memory_id, "")), score=entry["hybrid"], matched=matched,
                    semantic_score=entry.get("semantic", 0.0), keyword_score=entry.get("keyword", 0.0),
                )
            )
            if len(results) == top_k:
                break
        return pb.SearchResponse(results=results, mode=mode, embedding_model=model)

    async def _query_vector(self, text: str) -> tuple[str, np.ndarray | None, VectorIndex | AnnIndex | None, str]:
        """(model, the query's vector, the index to search, why semantic search cannot be done)."""
        result = await self.embed([text], [])
        if result is None:
            return "", None, None, "no embedding provider answered"
        model, vectors = result
        index = await self.ready_index()
        if index is not None and index.model != model:
            return model, None, None, (
                f"the query was embedded by {model}, the memories by {index.model}; run `cortex memories reindex` "
                "to move them to the new model"
            )
        return model, vectors[0], index, ""  # (no index: nothing embedded yet, nothing to find by meaning)

    def _ranked(self, text: str, mode: int, index: VectorIndex | AnnIndex | None, vector: np.ndarray | None, model: str,
                query: Query, now: int, wide: int) -> tuple[list, dict[str, Record], dict[str, str]]:
        """(ranked best first, the memories ranked, old id -> its superseder's), on a reader thread."""
        store = self.store
        semantic = index.search(vector, wide, query, now) if index is not None and mode in (SEMANTIC, HYBRID) else []
        keyword = store.keyword(text, query, now, wide) if mode in (KEYWORD, HYBRID) else []
        if mode == HYBRID:
            records = store.get_many(list(dict.fromkeys([i for i, _ in semantic + keyword])), now)
            ranked = fuse(semantic, keyword, records, query_terms(text, store.common_terms()), vector, model)
        else:
            name = "semantic" if mode == SEMANTIC else "keyword"
            ranked = [(i, {name: score, "hybrid": score}) for i, score in (semantic if mode == SEMANTIC else keyword)]
            records = store.get_many([i for i, _ in ranked], now)
        newer = newer_of(store, [i for i, _ in ranked])
        return current_first(ranked, newer), records, newer

    async def Update(self, request, context):
        paths = set(request.update_mask.paths) or {
            f.name for f, _ in request.ListFields() if f.name in MASK_PATHS
        }
        try:
            unknown = paths - MASK_PATHS
            if unknown:
                raise Invalid(f"update_mask: unknown path(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(MASK_PATHS))}")
            if not paths:
                raise Invalid("nothing to update: set the fields to change (and list them in update_mask)")
            record = await self._visible(request.id, self.access(context), now_ms())
            if record is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no memory {request.id!r}")
            updated = Record(**record.__dict__)
            if "text" in paths:
                updated.text = self._text(request.text)
            if "kind" in paths:
                updated.kind = self._kind(request.kind)
            if "tags" in paths:
                updated.tags = self._tags(request.tags)
            if "metadata" in paths:
                updated.metadata = self._metadata(request.metadata)
            if "source" in paths:
                updated.source = request.source
            now = now_ms()
            if "ttl_seconds" in paths:
                updated.expires_at = self._expiry(request.ttl_seconds, now)
        except Invalid as exc:
            await self._refuse(context, exc)
        updated.updated_at = now
        updated.content_hash = content_hash(updated.kind, updated.text, updated.tags, updated.namespace)
        if "text" in paths and updated.text != record.text:
            result = await self.embed([updated.text], [*updated.tags, *self.labels_of(updated)])
            updated.embedding_model, updated.embedding = (result[0], result[1][0]) if result else ("", None)
        return pb.UpdateResponse(memory=await self._replace(updated, record, "update", now, context))

    async def _replace(self, updated: Record, previous: Record, cause: str, now: int, context) -> pb.Memory:
        """Write `updated`, keeping `previous` as a version when anything but the time changed."""
        try:
            await self._rewrite(updated, previous, cause, now)
        except DuplicateContent as clash:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(clash))
        newer = await self._newer([updated.id])
        return self.to_proto(updated, newer.get(updated.id, ""))

    async def _rewrite(self, updated: Record, previous: Record, cause: str, now: int, keep: bool = True) -> None:
        """_replace, raising DuplicateContent when `updated` would be a copy of another memory;
        `keep` False keeps no version (a passage whose lines moved is the same passage)."""
        changed = version_body(updated) != version_body(Record(**{**previous.__dict__, "updated_at": updated.updated_at}))
        await self.io(self.store.replace, updated, previous if changed and keep else None, cause, now)
        self.index_remove(updated.id)
        self.index_add(updated)
        self.announce("memory.updated", updated)

    async def History(self, request, context):
        record = await self._visible(request.id, self.access(context), now_ms())
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no memory {request.id!r} (it may have expired or been deleted)")
        versions = await self.read(self.store.versions, record.id)
        links = await self.read(self.store.links, [record.id])
        older = [link_proto(link) for link in links if link.new_id == record.id]
        newer = next((link for link in links if link.old_id == record.id), None)
        reply = pb.HistoryResponse(memory=self.to_proto(record, newer.new_id if newer else ""), supersedes=older)
        if newer is not None:
            reply.superseded_by.CopyFrom(link_proto(newer))
        for v in versions:
            version = reply.versions.add(version=v.version, memory=self.to_proto(v.record), cause=v.cause)
            version.replaced_at.FromMilliseconds(v.replaced_at)
        return reply

    async def Revert(self, request, context):
        now = now_ms()
        record = await self._visible(request.id, self.access(context), now)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no memory {request.id!r} (it may have expired or been deleted)")
        versions = await self.read(self.store.versions, record.id)
        chosen = next((v for v in versions if v.version == request.version), None)
        if chosen is None:
            have = f"versions 1 to {len(versions)}" if versions else "no earlier versions"
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"memory {record.id!r} has no version {request.version} ({have}; History lists them)")
        old = chosen.record
        restored = Record(**{**record.__dict__, "kind": old.kind, "text": old.text, "tags": old.tags,
                             "metadata": old.metadata, "source": old.source, "updated_at": now})
        restored.content_hash = content_hash(restored.kind, restored.text, restored.tags, restored.namespace)
        if restored.text != record.text:
            result = await self.embed([restored.text], [*restored.tags, *self.labels_of(restored)])
            restored.embedding_model, restored.embedding = (result[0], result[1][0]) if result else ("", None)
        return pb.RevertResponse(memory=await self._replace(restored, record, f"revert to {chosen.version}", now, context))

    async def Delete(self, request, context):
        visible = await self._visible(request.id, self.access(context), now_ms())
        deleted = await self.io(self.store.delete, request.id) if visible is not None else False
        if deleted:
            self.index_remove(request.id)
            self.announce("memory.deleted", None, request.id, visible.namespace)
        return pb.DeleteResponse(deleted=deleted)

    async def DeleteMatching(self, request, context):
        matched, reply = await self._bulk("delete", request, context)
        if matched is None:
            return pb.DeleteMatchingResponse(outcome=reply)
        gone = await self.forget([r.id for r in matched], {r.id: r.namespace for r in matched})
        log.info("memories.bulk_deleted", matched=len(matched), deleted=len(gone))
        reply.changed = len(gone)
        return pb.DeleteMatchingResponse(outcome=reply)

    async def forget(self, ids: list[str], namespaces: dict[str, str] | None = None) -> list[str]:
        """Delete `ids` in one transaction, from the index too, and announce each (in its namespace,
        when `namespaces` says); those deleted."""
        gone = await self.io(self.store.delete_many, ids)
        for memory_id in gone:
            self.index_remove(memory_id)
            self.announce("memory.deleted", None, memory_id, (namespaces or {}).get(memory_id, ""))
        return gone

    async def TagMatching(self, request, context):
        try:
            add, remove = self._tags(request.add_tags), self._tags(request.remove_tags)
            if not add and not remove:
                raise Invalid("name add_tags, remove_tags or both: nothing to change")
        except Invalid as exc:
            await self._refuse(context, exc)
        matched, reply = await self._bulk("tag", request, context)
        if matched is None:
            return pb.TagMatchingResponse(outcome=reply)
        now = now_ms()
        for record in matched:
            tags = retagged(record.tags, add, remove)
            if tags == record.tags:
                continue
            try:
                tags = self._tags(tags)
            except Invalid as exc:
                reply.skipped.append(f"{record.id}: {exc}")
                continue
            updated = Record(**{**record.__dict__, "tags": tags, "updated_at": now,
                                "content_hash": content_hash(record.kind, record.text, tags, record.namespace)})
            try:
                await self._rewrite(updated, record, "tag", now)
            except DuplicateContent as clash:
                reply.skipped.append(f"{record.id}: {clash}")
                continue
            reply.changed += 1
        log.info("memories.bulk_tagged", matched=len(matched), changed=reply.changed, skipped=len(reply.skipped))
        return pb.TagMatchingResponse(outcome=reply)

    async def _bulk(self, action: str, request, context) -> tuple[list[Record] | None, pb.BulkOutcome]:
        """What `request`'s filter matches and the reply so far: (None, the dry run's reply), or
        (the memories to change, a reply to count them in) once the confirm token holds."""
        try:
            query = self._query(request.filter, self.access(context))
        except (Invalid, Denied) as exc:
            await self._refuse(context, exc)
        now, matched, after = now_ms(), [], None
        while True:
            page = await self.read(self.store.page, query, now, after, 1000)
            matched += page
            if len(matched) > MAX_BULK:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"the filter matches more than {MAX_BULK:,} memories; narrow it (kinds, tags, "
                                    "created_before) and change them in parts")
            if len(page) < 1000:
                break
            after = (page[-1].created_at, page[-1].id)
        shown = pb.TagMatchingRequest(filter=request.filter, add_tags=getattr(request, "add_tags", []),
                                      remove_tags=getattr(request, "remove_tags", []))
        token = confirmation(self.p.secret, action, shown.SerializeToString(deterministic=True),
                             [(r.id, r.content_hash) for r in matched])
        newer = await self._newer([r.id for r in matched[:SAMPLE]])
        reply = pb.BulkOutcome(matched=len(matched), sample=[self.to_proto(r, newer.get(r.id, "")) for r in matched[:SAMPLE]])
        if request.dry_run:
            reply.confirm = token
            return None, reply
        if not request.confirm:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "dry-run first: send dry_run=true, check what it matched, then send its confirm token")
        if not hmac.compare_digest(request.confirm.encode(), token.encode()):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"the memories this filter matches changed since the dry run (it matches {len(matched)} "
                                "now), or the request differs from it: dry-run again")
        return matched, reply

    # -- paging ---------------------------------------------------------------------------------------
    def _token(self, record: Record, filter_bytes: bytes) -> str:
        body = json.dumps([record.created_at, record.id, hashlib.sha256(filter_bytes).hexdigest()[:16]]).encode()
        mac = hmac.new(self.p.secret, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + body).decode()

    def _after(self, token: str, filter_bytes: bytes) -> tuple[int, str]:
        try:
            raw = base64.urlsafe_b64decode(token.encode())
            mac, body = raw[:16], raw[16:]
            if not hmac.compare_digest(mac, hmac.new(self.p.secret, body, hashlib.sha256).digest()[:16]):
                raise ValueError
            created, memory_id, filter_hash = json.loads(body)
        except (ValueError, TypeError, json.JSONDecodeError):
            raise Invalid("page_token was not made by this store: pass the next_page_token of the previous List, unchanged") from None
        if filter_hash != hashlib.sha256(filter_bytes).hexdigest()[:16]:
            raise Invalid("page_token belongs to a List with another filter: keep the filter the same while paging")
        return int(created), str(memory_id)

    async def List(self, request, context):
        size = request.page_size or 50
        filter_bytes = request.filter.SerializeToString(deterministic=True)
        try:
            if not 1 <= size <= MAX_PAGE:
                raise Invalid(f"page_size is {size}; ask for 1 to {MAX_PAGE}")
            query = self._query(request.filter, self.access(context))
            after = self._after(request.page_token, filter_bytes) if request.page_token else None
        except (Invalid, Denied) as exc:
            await self._refuse(context, exc)
        records = await self.read(self.store.page, query, now_ms(), after, size + 1)
        more = len(records) > size
        records = records[:size]
        newer = await self._newer([r.id for r in records])
        return pb.ListResponse(
            memories=[self.to_proto(r, newer.get(r.id, "")) for r in records],
            next_page_token=self._token(records[-1], filter_bytes) if more else "",
        )

    async def Stats(self, request, context):
        try:
            namespaces = self.access(context).search(list(request.namespaces))
        except Denied as exc:
            await self._refuse(context, exc)
        index = await self.ready_index()
        model = index.model if index else ""
        stats = await self.io(self.store.stats, model, now_ms(), namespaces)
        # the file's size and the index's (every namespace's vectors) are the whole store's: told
        # only to a caller that sees every namespace; anyone else gets its own counts alone
        everything = getattr(context, "sees_every_namespace", False)
        if not index:
            described = "empty: nothing embedded yet"
        elif everything:
            described = await self.read(index.describe)
        else:
            described = "approximate (HNSW)" if isinstance(index, AnnIndex) else "exact in-memory matrix"
        return pb.StatsResponse(
            total=stats["total"], by_kind=stats["by_kind"], by_tag=stats["by_tag"],
            storage_bytes=stats["storage_bytes"] if everything else 0,
            embedding_model=model, stale=stats["stale"], expired=stats["expired"], schema_version=self.store.version,
            index=described,
        )

    async def Reindex(self, request, context):
        """Embed the memories without a vector of the current model (all of them: `all`, or when
        the model changed). Across namespaces, and moving the store to a new model, only for a
        caller that sees every namespace (admin): anyone else embeds its own stale memories (those
        of the namespaces it may write), with the model the store already has."""
        everything = getattr(context, "sees_every_namespace", False)
        if request.all and not everything:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "Reindex with all re-embeds every namespace's memories: only admin may ask it (`cortex memories "
                "reindex --all`, with the admin token); without all, Reindex embeds your own memories that lack a "
                "vector of the current model",
            )
        current = await self.stored_model() or ""
        probe = await self.embed(["reindex"], [])
        if probe is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no embedding provider answered; start one (e.g. enable mlx) and retry")
        model = probe[0]
        if model != current and not everything:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the memories are embedded by {current or 'no model yet'} and the embedding model is now {model}: "
                "moving every namespace's memories to it is admin's (`cortex memories reindex`, with the admin token)",
            )
        records = await self.io(self.store.unembedded, model, request.all or model != current)
        if not everything:
            access = self.access(context)
            records = [r for r in records if access.may_write(r.namespace)]
        total, done = len(records), 0
        yield pb.ReindexResponse(done=0, total=total, embedding_model=model)
        for start in range(0, total, 32):
            batch = records[start : start + 32]
            for labels in {self.embedding_labels(r) for r in batch}:  # labels travel with their texts
                group = [r for r in batch if self.embedding_labels(r) == labels]
                result = await self.embed([r.text for r in group], list(labels))
                if result is None or result[0] != model:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, f"embedding stopped after {done} of {total}; run reindex again")
                for record, vector in zip(group, result[1], strict=True):
                    await self.io(self.store.set_embedding, record.id, model, vector)
                    if not everything:  # the store keeps its model and index: these join it
                        record.embedding_model, record.embedding = model, vector
                        await self.index_new(record)
                done += len(group)
            yield pb.ReindexResponse(done=done, total=total, embedding_model=model)
        if not everything:
            return
        await self.io(self.store.meta, "embedding_model", model)
        async with self._index_lock:
            self.index = await self.io(self._load_index, model, True)
            if isinstance(self.index, AnnIndex):
                await self.io(self.index.save)
