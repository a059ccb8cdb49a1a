"""The event log behind EventService. `EventBus` is the interface; `SqliteEventBus` is the
embedded default: one SQLite file, WAL, each publish one transaction committed before it is
acknowledged, positions from an integer key. `NatsEventBus` (nats_bus.py) keeps the log in a
NATS JetStream stream that several kernels share.

Topics are event types; subscribers read the rows after their position whose type matches one
of their globs (SQLite GLOB: `*`, `?` and `[...]`, case-sensitive, as fnmatch), then wait for
the next publish.

Every event is one namespace's (the publisher's call's, `context.namespace`): a subscriber that
does not see every namespace reads only its own namespace's rows, and (source, id) is unique
within a namespace (another namespace's event of the same source and id is not a duplicate: its
position is not the publisher's to learn). Events stored before namespaces are the owner's.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cortex.kernel.sdk import at_rest

SCHEMA_VERSION = 3
OWNER_NAMESPACE = "default"  # whose the events stored before events had a namespace are


@dataclass
class StoredEvent:
    position: int
    id: str
    source: str
    type: str
    subject: str
    time_ms: int
    datacontenttype: str
    data: str
    trace_id: str
    publisher: str = ""  # who published it, from their credential (the bus's record, not the client's claim)
    namespace: str = OWNER_NAMESPACE  # whose data it is about: the publisher's call's namespace, never the client's claim


MAX_POSITION = 2**63 - 1


class BusUnavailable(Exception):
    """The log cannot be reached now (a NATS server down, a cut link): UNAVAILABLE, retry."""


class EventBus(ABC):
    async def start(self, appended_elsewhere: Callable[[], None]) -> None:  # noqa: B027 - optional: most logs need nothing
        """Begin; call `appended_elsewhere` whenever another process appends (so this kernel's
        subscribers read on). A log only this process writes has nothing to do."""

    @abstractmethod
    async def append(self, event: StoredEvent) -> tuple[int, bool]:
        """Store the event (position ignored), durably before returning; (position, duplicate)."""

    @abstractmethod
    async def read_after(self, position: int, topics: list[str], limit: int, namespace: str | None = None) -> list[StoredEvent]:
        """Events after `position` whose type matches a glob (all when none), of `namespace`
        (None: every namespace), oldest first."""

    @abstractmethod
    async def latest_position(self) -> int: ...

    @abstractmethod
    async def close(self) -> None: ...


class SqliteEventBus(EventBus):
    """The SQLite file, worked on one thread beside the event loop."""

    def __init__(self, path: Path, synchronous: str = "FULL"):
        self._sqlite = SqliteLog(path, synchronous)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cortex-events")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def append(self, event: StoredEvent) -> tuple[int, bool]:
        return await self._run(self._sqlite.append, event)

    async def read_after(self, position: int, topics: list[str], limit: int, namespace: str | None = None) -> list[StoredEvent]:
        return await self._run(self._sqlite.read_after, position, topics, limit, namespace)

    async def latest_position(self) -> int:
        return await self._run(self._sqlite.latest_position)

    async def close(self) -> None:
        await self._run(self._sqlite.close)
        self._io.shutdown(wait=True)


class SqliteLog:
    """The events table; blocking calls."""

    def __init__(self, path: Path, synchronous: str = "FULL", data_dir: Path | None = None):
        """`data_dir`: whose encryption at rest applies (at_rest.py); by default the folder above
        `<data dir>/events/events.db`."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = at_rest.connect(path, path.parent.parent if data_dir is None else data_dir,
                                   check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"events database schema v{version} is newer than this cortex-os (v{SCHEMA_VERSION})")
        if version < 1:
            self._db.executescript(
                """
                BEGIN;
                CREATE TABLE events (
                    position INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL, source TEXT NOT NULL, type TEXT NOT NULL, subject TEXT NOT NULL,
                    time_ms INTEGER NOT NULL, datacontenttype TEXT NOT NULL, data TEXT NOT NULL,
                    trace_id TEXT NOT NULL,
                    UNIQUE (source, id)
                );
                CREATE INDEX events_type ON events (type, position);
                PRAGMA user_version = 1;
                COMMIT;
                """
            )
        if version < 2:
            self._db.executescript(
                "BEGIN; ALTER TABLE events ADD COLUMN publisher TEXT NOT NULL DEFAULT ''; PRAGMA user_version = 2; COMMIT;"
            )
        if version < 3:
            # the namespace, and (source, id) unique within one: the table is copied into one with
            # that constraint (SQLite cannot change a constraint in place); positions are kept, and
            # sqlite_sequence goes on from the largest, so none is ever reused
            self._db.executescript(
                f"""
                BEGIN;
                CREATE TABLE events_v3 (
                    position INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL, source TEXT NOT NULL, type TEXT NOT NULL, subject TEXT NOT NULL,
                    time_ms INTEGER NOT NULL, datacontenttype TEXT NOT NULL, data TEXT NOT NULL,
                    trace_id TEXT NOT NULL, publisher TEXT NOT NULL DEFAULT '',
                    namespace TEXT NOT NULL DEFAULT '{OWNER_NAMESPACE}',
                    UNIQUE (namespace, source, id)
                );
                INSERT INTO events_v3 (position, id, source, type, subject, time_ms, datacontenttype, data, trace_id, publisher)
                    SELECT position, id, source, type, subject, time_ms, datacontenttype, data, trace_id, publisher FROM events;
                INSERT INTO sqlite_sequence (name, seq) SELECT 'events_v3', 0
                    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events_v3');
                UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))
                    WHERE name = 'events_v3';
                DROP TABLE events;
                ALTER TABLE events_v3 RENAME TO events;
                CREATE INDEX events_type ON events (type, position);
                CREATE INDEX events_namespace ON events (namespace, position);
                PRAGMA user_version = 3;
                COMMIT;
                """
            )

    def append(self, event: StoredEvent) -> tuple[int, bool]:
        with self._lock:
            row = self._db.execute(
                "SELECT position FROM events WHERE namespace = ? AND source = ? AND id = ?",
                (event.namespace, event.source, event.id),
            ).fetchone()
            if row:
                return row[0], True
            cursor = self._db.execute(
                "INSERT INTO events (id, source, type, subject, time_ms, datacontenttype, data, trace_id, publisher, namespace)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event.id, event.source, event.type, event.subject, event.time_ms, event.datacontenttype,
                 event.data, event.trace_id, event.publisher, event.namespace),
            )
            return cursor.lastrowid, False

    def read_after(self, position: int, topics: list[str], limit: int, namespace: str | None = None) -> list[StoredEvent]:
        # positions are SQLite integers: a uint64 past them is past every event there can be
        where, args = "position > ?", [min(position, MAX_POSITION)]
        if namespace is not None:
            where += " AND namespace = ?"
            args.append(namespace)
        if topics:
            where += " AND (" + " OR ".join("type GLOB ?" for _ in topics) + ")"
            args += topics
        with self._lock:
            rows = self._db.execute(
                "SELECT position, id, source, type, subject, time_ms, datacontenttype, data, trace_id, publisher, namespace"
                f" FROM events WHERE {where} ORDER BY position LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [StoredEvent(*row) for row in rows]

    def latest_position(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Wakeup:
    """Lets subscribers sleep until the next publish: take `current` before reading, wait on it
    after finding nothing; a publish in between has already set it, so nothing is missed."""

    def __init__(self) -> None:
        self.current = asyncio.Event()

    def notify(self) -> None:
        self.current.set()
        self.current = asyncio.Event()
