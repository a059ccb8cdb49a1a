"""The memories contract runs on both stores: every test that takes `backend` runs on the SQLite
file and on PostgreSQL + pgvector (a real server, a database of its own per test), so the two
cannot drift."""

from __future__ import annotations

import pytest


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
