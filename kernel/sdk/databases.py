"""The PostgreSQL database plugins share with other kernels: one way to name it in config, and
one rule for where it may be.

A plugin section that says `backend = "postgres"` takes the DSN from `postgres_dsn`, else from the
environment variable `postgres_dsn_env` names (CORTEX_POSTGRES_DSN by default: a DSN holds a
password, which a config file should not). The database must be on this machine (loopback, or a
Unix socket), or reached over TLS that verifies the server (`sslmode=verify-full` or `verify-ca`)
with a credential: the rule every connection that leaves the machine follows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..security.remote import is_loopback_host

if TYPE_CHECKING:
    import grpc
    import psycopg

DSN_ENV = "CORTEX_POSTGRES_DSN"


def postgres_dsn(config: dict[str, Any], section: str) -> str:
    """The DSN `config` (the plugin's section, named `section` in messages) names, checked; ValueError
    saying what to set when there is none or it may not be used."""
    dsn = str(config.get("postgres_dsn", ""))
    variable = str(config.get("postgres_dsn_env", DSN_ENV))
    if not dsn:
        dsn = os.environ.get(variable, "")
    if not dsn:
        raise ValueError(f'[{section}] backend = "postgres": set {variable} to the database\'s DSN '
                         "(postgresql://user:password@host:port/database), or postgres_dsn")
    check_postgres_dsn(dsn, section)
    return dsn


def check_postgres_dsn(dsn: str, section: str = "plugins") -> None:
    """ValueError unless the database is on this machine, or reached over verified TLS with a credential."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ValueError(f'[{section}] backend = "postgres" needs psycopg: pip install \'cortex-os[cluster]\'') from None
    try:
        parts = conninfo_to_dict(dsn)
    except Exception as exc:  # noqa: BLE001 - psycopg's parse errors have several types
        raise ValueError(f"[{section}] the PostgreSQL DSN does not parse: {exc}") from None
    # where libpq will connect: hostaddr wins over host, and either may come from the environment
    named = [str(parts.get(k) or os.environ.get(env, "")) for k, env in (("host", "PGHOST"), ("hostaddr", "PGHOSTADDR"))]
    hosts = [h for value in named for h in value.split(",") if h]
    if all(h.startswith("/") or is_loopback_host(h) for h in hosts or ["localhost"]):
        return
    credential = parts.get("password") or parts.get("sslcert") or parts.get("passfile")
    if parts.get("sslmode") not in ("verify-full", "verify-ca") or not credential:
        raise ValueError(f"[{section}] PostgreSQL at {','.join(hosts)} is beyond loopback: add sslmode=verify-full "
                         "(and sslrootcert) and a credential (a password, or sslcert and sslkey), as for every "
                         "connection that leaves the machine")


class DatabaseUnavailable(Exception):
    """The database cannot be reached now: the call may succeed later, here or on another kernel.
    Shaped as a gRPC status, so the router answers UNAVAILABLE and counts it against the provider
    that raised it, never as the caller's mistake."""

    def code(self) -> grpc.StatusCode:
        import grpc

        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return str(self)


def redacted(dsn: str) -> str:
    """postgresql://host:port/database of a DSN, for logs and health: never its password."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    return f"postgresql://{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class PostgresPool:
    """A few connections to the database (psycopg 3's pool), each checked as it leaves the pool,
    so a restarted server costs no failed call; `connection()` is a transaction, committed on
    leaving, and a server away is DatabaseUnavailable. Opening it migrates the schema first
    (`migrate_postgres`)."""

    def __init__(self, dsn: str, schema: str, migrations: list[str], size: int = 4, timeout: float = 5.0,
                 configure: Callable[[psycopg.Connection[Any]], None] | None = None):
        import psycopg
        from psycopg_pool import ConnectionPool

        self._errors = (psycopg.OperationalError,)
        self.location = redacted(dsn)
        try:
            with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))) as conn:
                self.version = migrate_postgres(conn, schema, migrations)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot reach PostgreSQL at {self.location}: {exc}") from None
        self.pool = ConnectionPool(dsn, min_size=1, max_size=size, open=False, configure=configure,
                                   check=ConnectionPool.check_connection, timeout=timeout,
                                   kwargs={"connect_timeout": max(1, int(timeout))})
        self.pool.open(wait=True, timeout=timeout)

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        from contextlib import contextmanager

        from psycopg_pool import PoolTimeout

        @contextmanager
        def transaction() -> Iterator[psycopg.Connection[Any]]:
            try:
                with self.pool.connection() as conn:
                    yield conn
            except (*self._errors, PoolTimeout) as exc:
                raise DatabaseUnavailable(f"PostgreSQL at {self.location} is unavailable ({type(exc).__name__}: "
                                          f"{str(exc).strip()[:200]}); retry") from None

        return transaction()

    @staticmethod
    def exclusive(conn: psycopg.Connection[Any]) -> None:
        """Hold, until `conn`'s transaction ends, the lock under which schemas change: a change to
        the schema made by one kernel at a time (an index, say)."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def close(self) -> None:
        self.pool.close()


MIGRATION_LOCK = 0x636F727465786D  # pg_advisory_xact_lock's key for every Cortex-OS schema change


def migrate_postgres(conn: psycopg.Connection[Any], schema: str, migrations: list[str]) -> int:
    """Bring the schema recorded in the table `schema` to len(migrations), once, whoever else is
    starting (one transaction under an advisory lock); the version it is at."""
    import structlog

    target = len(migrations)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {schema} (version integer NOT NULL)")
        row = conn.execute(f"SELECT version FROM {schema}").fetchone()  # noqa: S608 - a constant name
        version = row[0] if row else 0
        if version > target:
            raise RuntimeError(f"the database has schema {version} in {schema}, newer than this Cortex-OS knows "
                               f"({target}): upgrade this kernel")
        for number, script in enumerate(migrations[version:], start=version + 1):
            conn.execute(script)
            structlog.get_logger("cortex.kernel").info("postgres.migrated", schema=schema, version=number)
        if row is None:
            conn.execute(f"INSERT INTO {schema} (version) VALUES (%s)", (target,))  # noqa: S608
        elif version != target:
            conn.execute(f"UPDATE {schema} SET version = %s", (target,))  # noqa: S608
    return target
