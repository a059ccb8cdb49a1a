"""The memories plugin: `MemoryService`, `SourceService` (watched folders) and `ArchiveService`
(export and import), stored in `<data dir>/memories/memories.db`, or in PostgreSQL + pgvector
shared by several kernels (pg_store.py).

Embeddings come from `cortex.models.v1.ModelService` through the kernel (whichever provider the
router picks; the plugin's manifest declares that call), never from a model plugin directly.

Settings (`[plugins.memories]`):

    backend = "sqlite"          # or "postgres": PostgreSQL 14+ with pgvector 0.8+ (pg_store.py),
                                # which several kernels share; needs pip install 'cortex-os[cluster]'
    postgres_dsn_env = "CORTEX_POSTGRES_DSN"  # the variable holding the DSN (it has the password)
    postgres_dsn = ""           # or the DSN here, e.g. "postgresql://cortex@127.0.0.1/cortex";
                                # beyond loopback it must ask for TLS (sslmode=verify-full) and a credential
    postgres_pool_size = 4      # connections this kernel keeps
    kinds = ["note", "fact", "event", "learning-example", "task", "preference", "summary"]
    max_text_chars = 32000
    embedding_model = ""        # ask ModelService for this model ("" = the provider's default)
    synchronous = "FULL"        # SQLite: FULL survives power loss; NORMAL only process crashes
    ann_threshold = 20000       # from this many vectors, semantic search uses an HNSW index
                                # (ann_index.py, beside memories.db); below, an exact scan
    restatements = "link"       # a Store that restates an older memory's fact supersedes it
                                # (restatement.py; both kept, the newer ranked first); "update":
                                # the older memory takes the new text, keeping the old as a
                                # version; "off": only when the Store names `supersedes`
    restatement_min_similarity = 0.5
    watch = true                # follow the OS's change notifications under each source's folder
    rescan_seconds = 300        # and sync every source this often anyway (a missed notification)
    watch_debounce_ms = 500
    namespaces = "principal"    # each principal's memories its own (namespaces.py; kernel.owners
                                # says whose are the owner's); "off": one namespace for every caller

    [plugins.memories.shared]   # shared namespaces, and who reads and writes each (principal globs)
    family = ["key:alice", "key:bob"]

    [[plugins.memories.source]] # a folder of notes kept in sync (repeatable; `cortex sources add`
    name = "notes"              # adds more at run time). Cited as "notes:path#L3-L9".
    path = "/home/me/notes"
    include = ["**/*.md", "**/*.txt", "**/*.pdf"]   # the default
    exclude = ["drafts/**"]     # hidden files and folders are always left out
    namespace = "default"       # whose memories its notes become (the default: the owner's)
    labels = ["private"]        # data labels of its every passage (labelling.py): private stays local

    [plugins.memories.labels.private]   # more memories labelled (a tag named "private" always is)
    tags = ["health"]           # by tag, source name, kind or namespace
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cortex.contracts.memories.v1 import archive_pb2, sources_pb2
from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.kernel import Health, check_settings, hookimpl

from .namespaces import DEFAULT, Namespaces

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SERVICE = pb.DESCRIPTOR.services_by_name["MemoryService"]
SOURCE_SERVICE = sources_pb2.DESCRIPTOR.services_by_name["SourceService"]
ARCHIVE_SERVICE = archive_pb2.DESCRIPTOR.services_by_name["ArchiveService"]
KINDS = ["note", "fact", "event", "learning-example", "task", "preference", "summary"]
SETTINGS = {"backend", "postgres_dsn", "postgres_dsn_env", "postgres_pool_size", "kinds", "max_text_chars", "embedding_model",
            "synchronous", "ann_threshold", "restatements", "restatement_min_similarity", "watch", "rescan_seconds",
            "watch_debounce_ms", "source", "namespaces", "shared", "labels"}


class MemoriesPlugin:
    def __init__(self) -> None:
        self.kinds = list(KINDS)
        self.max_text_chars = 32_000
        self.embedding_model = ""
        self.synchronous = "FULL"
        self.folder = Path()
        self.store: Any = None
        self.servicer: Any = None
        self.sources: Any = None
        self.labeller: Any = None  # which data labels a memory carries (labelling.py), from config
        self.configured_sources: list = []
        self.watch, self.rescan_seconds, self.watch_debounce_ms = True, 300.0, 500
        self.channel: Any = None
        self.own_channel: Any = None
        self.data_dir: Any = None
        self.secret = b""
        self.restatements = "link"
        self.restatement_min_similarity = 0.5
        self.namespaces = Namespaces()
        self.open_store: Any = None  # () -> MemoryStore, as the config says
        self.source_db: Any = None  # where watched sources are kept (this machine's folders)

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, SETTINGS, context.name)
        kinds = config.get("kinds", KINDS)
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) and k for k in kinds):
            raise ValueError("[plugins.memories] kinds must be a non-empty list of names")
        self.kinds = kinds
        self.max_text_chars = int(config.get("max_text_chars", 32_000))
        self.embedding_model = str(config.get("embedding_model", ""))
        self.synchronous = str(config.get("synchronous", "FULL")).upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError('[plugins.memories] synchronous must be "FULL", "NORMAL" or "EXTRA"')
        self.ann_threshold = int(config.get("ann_threshold", 20_000))
        if self.ann_threshold < 1:
            raise ValueError("[plugins.memories] ann_threshold must be at least 1 (vectors before search turns approximate)")
        self.restatements = config.get("restatements", "link")
        if self.restatements not in ("link", "update", "off"):
            raise ValueError('[plugins.memories] restatements must be "link", "update" or "off"')
        self.restatement_min_similarity = float(config.get("restatement_min_similarity", 0.5))
        if not 0 < self.restatement_min_similarity <= 1:
            raise ValueError("[plugins.memories] restatement_min_similarity must be above 0 and at most 1 (a cosine)")
        self.watch = bool(config.get("watch", True))
        self.rescan_seconds = float(config.get("rescan_seconds", 300))
        self.watch_debounce_ms = int(config.get("watch_debounce_ms", 500))
        if self.rescan_seconds < 1 or not 0 <= self.watch_debounce_ms <= 60_000:
            raise ValueError("[plugins.memories] rescan_seconds must be at least 1, watch_debounce_ms 0 to 60000")
        shared = config.get("shared", {})
        if not isinstance(shared, dict):
            raise ValueError("[plugins.memories.shared] is a table: namespace = [principal globs]")
        self.namespaces = Namespaces(str(config.get("namespaces", "principal")), shared)
        if context.credentials is not None:  # a gateway's user named "family" must not become the family
            context.credentials.reserve(shared)
        self.configured_sources = self._configured_sources(config.get("source", []))
        from .labelling import Labeller

        source_labels = {str(e.get("name", "")): e.get("labels", []) for e in config.get("source", [])}
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in source_labels.values()):
            raise ValueError('[[plugins.memories.source]] labels is a list of names: labels = ["private"]')
        self.labeller = Labeller.from_config(config.get("labels", {}), source_labels)
        self.data_dir = context.data_dir
        self.folder = context.data_dir / "memories"
        self.open_store = store_opener(config, self.folder, self.synchronous)
        self.channel = context.channel
        # embedding what a caller stores is this plugin's own work, not the caller's choice: judged
        # as the plugin (its manifest), not bounded by the caller's key scopes
        self.own_channel = context.channel.for_own_work()
        self.store = None

    @staticmethod
    def _configured_sources(entries) -> list:
        from .source_service import Invalid, source_row

        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("[[plugins.memories.source]] entries are tables: name, path, include, exclude")
        sources = []
        for entry in entries:
            unknown = set(entry) - {"name", "path", "include", "exclude", "namespace", "labels"}
            if unknown:
                raise ValueError(f"[[plugins.memories.source]] has no setting {', '.join(sorted(unknown))} "
                                 "(name, path, include, exclude, namespace, labels)")
            try:
                sources.append(source_row(str(entry.get("name", "")), str(entry.get("path", "")), list(entry.get("include", [])),
                                          list(entry.get("exclude", [])), True, str(entry.get("namespace", DEFAULT))))
            except Invalid as exc:
                raise ValueError(f"[[plugins.memories.source]] {exc}") from None
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError("[[plugins.memories.source]] names must differ")
        return sources

    @hookimpl
    def cortex_register(self, registry) -> None:
        from .archive_service import ArchiveServicer
        from .service import MemoryServicer
        from .source_service import SourceServicer

        self.servicer = MemoryServicer(self)
        self.sources = SourceServicer(self, self.servicer)
        registry.add(SERVICE, self.servicer, local=True)
        registry.add(SOURCE_SERVICE, self.sources, local=True)
        registry.add(ARCHIVE_SERVICE, ArchiveServicer(self, self.servicer, self.sources), local=True)

    @hookimpl
    async def cortex_start(self, context) -> None:
        import asyncio

        from .store import SqliteStore

        self.store = await asyncio.to_thread(self.open_store)
        # a watched folder is a folder of this machine: its bookkeeping stays here, beside the
        # memories when they are here too
        self.source_db = self.store if isinstance(self.store, SqliteStore) else SqliteStore(
            self.folder / "sources.db", self.synchronous)
        self.secret = await asyncio.to_thread(self.store.shared_secret, "cursor") or self._secret()
        await self.sources.start(self.configured_sources)

    def _secret(self) -> bytes:
        """The key that signs page tokens, so a token from elsewhere is refused."""
        path = self.folder / "cursor.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(os.urandom(32))
        return path.read_bytes()

    @hookimpl
    async def cortex_health(self) -> Health:
        if self.store is None:
            return Health(False, "the store is not open")
        from cortex.kernel.sdk import DatabaseUnavailable

        from .service import now_ms

        try:  # expired memories go for good
            expired = await self.servicer.io(self.store.purge_expired, now_ms())
        except DatabaseUnavailable as exc:
            return Health(False, str(exc))
        for memory_id in expired:
            self.servicer.index_remove(memory_id)
        return Health(True, self.store.location)

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.sources is not None:
            await self.sources.stop()
        if self.servicer is not None:
            self.servicer.close()
        if self.source_db is not None and self.source_db is not self.store:
            self.source_db.close()
        self.source_db = None
        if self.store is not None:
            self.store.close()
            self.store = None

    @hookimpl
    def cortex_register_commands(self, cli) -> None:
        from .cli import register

        register(cli)


def store_opener(config: dict[str, Any], folder: Path, synchronous: str = "FULL"):
    """A function that opens the store `config` names (checked now, opened on start and by
    `cortex memories migrate`)."""
    backend = config.get("backend", "sqlite")
    if backend == "sqlite":
        from .store import SqliteStore

        return lambda: SqliteStore(folder / "memories.db", synchronous)
    if backend != "postgres":
        raise ValueError(f'[plugins.memories] backend = {backend!r}: use "sqlite" or "postgres"')
    try:
        import pgvector  # noqa: F401 - only to say which extra is missing
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ValueError("[plugins.memories] backend = \"postgres\" needs psycopg and pgvector: "
                         "pip install 'cortex-os[cluster]'") from None
    from cortex.kernel.sdk import postgres_dsn

    dsn = postgres_dsn(config, "plugins.memories")
    pool_size = int(config.get("postgres_pool_size", 4))
    if not 1 <= pool_size <= 100:
        raise ValueError("[plugins.memories] postgres_pool_size must be 1 to 100")
    from .pg_store import PostgresStore

    return lambda: PostgresStore(dsn, pool_size)


plugin = MemoriesPlugin()
