"""The memories contract runs on both stores: every test that takes `backend` runs on the SQLite
file and on PostgreSQL + pgvector (a real server, a database of its own per test), so the two
cannot drift."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from cortex.kernel.sdk import at_rest


def with_backend(config: str, backend: str) -> str:
    """`config` with the memories settings of `backend` added to its [plugins.memories] table."""
    if not backend:
        return config
    if "[plugins.memories]\n" in config:
        return config.replace("[plugins.memories]\n", f"[plugins.memories]\n{backend}", 1)
    return f"{config}\n[plugins.memories]\n{backend}"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    """The [plugins.memories] lines that choose the store ("" for the embedded default)."""
    if request.param == "sqlite":
        return ""
    dsn = request.getfixturevalue("postgres_dsn")
    return f'backend = "postgres"\npostgres_dsn = "{dsn}"\n'


@dataclass
class AtRest:
    """How a test's data dir is kept on disk: `env` is what `cortex serve` needs to open it,
    `connect(path)` opens one of its databases from the test (for PRAGMA integrity_check)."""

    data_dir: Path
    env: dict[str, str]
    key: bytes | None

    def connect(self, path: Path):
        return at_rest.open_keyed(path, self.key)


@pytest.fixture(params=["plain", "encrypted"])
def stored_at_rest(request, tmp_path) -> AtRest:
    """`tmp_path / "data"` plain, or encrypted (encryption.json written before the first start,
    as `cortex memories encrypt` does on a new data dir): the durability tests run on both."""
    data_dir = tmp_path / "data"
    if request.param == "plain":
        return AtRest(data_dir, {}, None)
    data_dir.mkdir(parents=True)
    marker, key = at_rest.create(data_dir, "durable passphrase")
    at_rest.write_marker(data_dir, marker)
    return AtRest(data_dir, {"CORTEX_PASSPHRASE": "durable passphrase"}, key)
