"""The memories plugin: `MemoryService`, stored in `<data dir>/memories/memories.db`.

Embeddings come from `cortex.models.v1.ModelService` through the kernel (whichever provider the
router picks; the plugin's manifest declares that call), never from a model plugin directly.

Settings (`[plugins.memories]`):

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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.kernel import Health, check_settings, hookimpl

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SERVICE = pb.DESCRIPTOR.services_by_name["MemoryService"]
KINDS = ["note", "fact", "event", "learning-example", "task", "preference", "summary"]
SETTINGS = {"kinds", "max_text_chars", "embedding_model", "synchronous", "ann_threshold", "restatements",
            "restatement_min_similarity"}


class MemoriesPlugin:
    def __init__(self) -> None:
        self.kinds = list(KINDS)
        self.max_text_chars = 32_000
        self.embedding_model = ""
        self.synchronous = "FULL"
        self.folder = Path()
        self.store: Any = None
        self.servicer: Any = None
        self.channel: Any = None
        self.secret = b""
        self.restatements = "link"
        self.restatement_min_similarity = 0.5

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
        self.folder = context.data_dir / "memories"
        self.channel = context.channel
        self.store = None

    @hookimpl
    def cortex_register(self, registry) -> None:
        from .service import MemoryServicer

        self.servicer = MemoryServicer(self)
        registry.add(SERVICE, self.servicer, local=True)

    @hookimpl
    async def cortex_start(self, context) -> None:
        from .store import SqliteStore

        self.store = SqliteStore(self.folder / "memories.db", self.synchronous)
        self.secret = self._secret()

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
        from .service import now_ms

        for memory_id in self.store.purge_expired(now_ms()):  # expired memories go for good
            self.servicer.index_remove(memory_id)
        return Health(True, str(self.store.path))

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self.servicer is not None:
            self.servicer.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    @hookimpl
    def cortex_register_commands(self, cli) -> None:
        from .cli import register

        register(cli)


plugin = MemoriesPlugin()
