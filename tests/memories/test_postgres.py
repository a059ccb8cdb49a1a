"""Memories on PostgreSQL + pgvector across kernels: two `cortex serve` processes on one database
are one memory store (a memory stored through A is found through B at once, by id, by meaning and
by words; one text stored through both at once is one memory; a page or dry-run token of A is good
on B); the server killed under a kernel makes calls UNAVAILABLE and loses nothing acknowledged;
two kernels migrating at once migrate once; a database beyond loopback needs verified TLS."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc

from ..conftest import cortex_env, run_cli, wait_for

DISABLED = '["ollama", "openai", "cerebrum", "a2a", "mcp", "http"]'
SEMANTIC, KEYWORD = pb.SEARCH_MODE_SEMANTIC, pb.SEARCH_MODE_KEYWORD


def on_postgres(root, dsn, **extra):
    return cortex_env(root, CORTEX_PLUGINS__DISABLED=DISABLED, CORTEX_PLUGINS__MEMORIES__BACKEND="postgres",
                      CORTEX_PLUGINS__MEMORIES__WATCH="false", CORTEX_POSTGRES_DSN=dsn, **extra)


def kernel(serve_process, channel_to, root, dsn):
    proc = serve_process(env=on_postgres(root, dsn))
    return memories_pb2_grpc.MemoryServiceStub(channel_to(proc.target)), proc


def test_two_kernels_on_one_database_are_one_memory_store(serve_process, channel_to, postgres_dsn, tmp_path):
    a, _ = kernel(serve_process, channel_to, tmp_path / "a", postgres_dsn)
    b, _ = kernel(serve_process, channel_to, tmp_path / "b", postgres_dsn)
    stored = a.Store(pb.StoreRequest(text="The spare key is under the blue flower pot", tags=["home"]), timeout=60)
    # acknowledged on A means found on B, at once: there is no copy to catch up
    assert b.Get(pb.GetRequest(id=stored.id), timeout=10).memory.text == "The spare key is under the blue flower pot"
    by_meaning = b.Search(pb.SearchRequest(query="where can I find the extra house key?", mode=SEMANTIC, top_k=1), timeout=60)
    assert [r.memory.id for r in by_meaning.results] == [stored.id]
    by_words = b.Search(pb.SearchRequest(query="flower pot", mode=KEYWORD, top_k=1), timeout=60)
    assert [r.memory.id for r in by_words.results] == [stored.id]

    # the same text through both kernels at once: one memory, every caller told its id
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: (a, b)[i % 2].Store(pb.StoreRequest(text="Everyone says this at once"), timeout=60),
                                range(16)))
    assert len({r.id for r in replies}) == 1 and sum(r.created for r in replies) == 1

    # a change through B is A's history too; a page token of A pages on B
    b.Update(pb.UpdateRequest(id=stored.id, text="The spare key moved to the neighbour's, Mrs. Lind"), timeout=60)
    history = a.History(pb.HistoryRequest(id=stored.id), timeout=10)
    assert [v.memory.text for v in history.versions] == ["The spare key is under the blue flower pot"]
    first = a.List(pb.ListRequest(page_size=1), timeout=10)
    rest = b.List(pb.ListRequest(page_size=1, page_token=first.next_page_token), timeout=10)
    assert {first.memories[0].id, rest.memories[0].id} == {stored.id, replies[0].id}
    # and a dry run on A is confirmed on B
    dry = a.DeleteMatching(pb.DeleteMatchingRequest(filter=pb.Filter(tags_all=["home"]), dry_run=True), timeout=10)
    done = b.DeleteMatching(pb.DeleteMatchingRequest(filter=pb.Filter(tags_all=["home"]), confirm=dry.outcome.confirm), timeout=10)
    assert done.outcome.changed == 1
    with pytest.raises(grpc.RpcError) as err:
        a.Get(pb.GetRequest(id=stored.id), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_lost_database_makes_calls_unavailable_and_loses_nothing_acknowledged(start_kernel, channel_to, tmp_path):
    from ..postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        dsn = server.create_database("cortex")
        target, _ = start_kernel(f'[plugins]\ndisabled = {DISABLED}\n[plugins.memories]\nbackend = "postgres"\n'
                                  f'postgres_dsn = "{dsn}"\nwatch = false\n')
        stub = memories_pb2_grpc.MemoryServiceStub(channel_to(target))
        kept = [stub.Store(pb.StoreRequest(text=f"ledger line {n}"), timeout=60).id for n in range(5)]
        server.kill()  # a crash, with the pool's connections open
        with pytest.raises(grpc.RpcError) as err:
            stub.Store(pb.StoreRequest(text="while the database is away"), timeout=60)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "PostgreSQL at postgresql://127.0.0.1" in err.value.details()
        assert server.password not in err.value.details()
        server.start()

        def stored_again() -> bool:
            try:
                return stub.Store(pb.StoreRequest(text="after the database came back"), timeout=60).created
            except grpc.RpcError:
                time.sleep(0.5)  # as a client should: hammering an unavailable provider opens its circuit
                return False

        wait_for(stored_again, "storing again once PostgreSQL is back", timeout=30)
        listed = [m.id for m in stub.List(pb.ListRequest(page_size=50), timeout=10).memories]
        assert set(kept) <= set(listed) and len(listed) == 6
    finally:
        server.remove()


def test_kernels_starting_at_once_migrate_once(postgres_dsn):
    from cortex.plugins.memories.pg_store import SCHEMA_VERSION, PostgresStore

    stores, errors = [], []

    def open_one():
        try:
            stores.append(PostgresStore(postgres_dsn, pool_size=1))
        except Exception as exc:  # noqa: BLE001 - collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and [s.version for s in stores] == [SCHEMA_VERSION] * 6
    with stores[0]._conn() as conn:
        assert conn.execute("SELECT version FROM cortex_memories_schema").fetchall() == [(SCHEMA_VERSION,)]
    for store in stores:
        store.close()


def test_cortex_memories_migrate_brings_the_database_to_this_version(postgres_dsn, tmp_path):
    env = on_postgres(tmp_path / "data", postgres_dsn)
    done = run_cli("memories", "migrate", env=env)
    assert done.returncode == 0, done.stderr
    database = postgres_dsn.rsplit("/", 1)[1]
    said = done.stdout.splitlines()[-1]
    assert said.startswith("memories on postgresql://127.0.0.1:") and said.endswith(f"/{database}: schema 1 (this Cortex-OS: 1)")
    refused = run_cli("memories", "migrate", env={**env, "CORTEX_POSTGRES_DSN": ""})
    assert refused.returncode != 0 and "set CORTEX_POSTGRES_DSN to the database's DSN" in refused.stderr


@pytest.mark.parametrize(
    ("dsn", "refused"),
    [
        ("postgresql://cortex:pw@127.0.0.1:5432/cortex", ""),
        ("postgresql://cortex:pw@localhost/cortex", ""),
        ("host=/var/run/postgresql dbname=cortex", ""),
        ("postgresql://cortex:pw@db.internal/cortex", "beyond loopback: add sslmode=verify-full"),
        ("postgresql://cortex:pw@db.internal/cortex?sslmode=require", "beyond loopback"),
        ("postgresql://cortex@db.internal/cortex?sslmode=verify-full", "and a credential"),
        ("postgresql://cortex:pw@db.internal/cortex?sslmode=verify-full", ""),
        ("postgresql://cortex:pw@127.0.0.1,db.internal/cortex", "beyond loopback"),
        ("postgresql://[::1", "does not parse"),
        ("host=localhost hostaddr=10.0.0.5 password=pw", "beyond loopback"),  # (libpq connects to hostaddr)
    ],
)
def test_a_database_beyond_loopback_needs_verified_tls_and_a_credential(dsn, refused):
    from cortex.kernel.sdk import check_postgres_dsn

    if not refused:
        check_postgres_dsn(dsn)
        return
    with pytest.raises(ValueError, match=re.escape(refused)):
        check_postgres_dsn(dsn)


def test_a_bad_backend_setting_says_what_to_write(start_kernel):
    _, kt = start_kernel('[plugins]\ndisabled = ["ollama", "openai"]\n[plugins.memories]\nbackend = "mysql"\n')
    record = kt.kernel.host.records["memories"]
    assert record.state == "broken" and 'backend = \'mysql\': use "sqlite" or "postgres"' in record.error


def test_a_database_that_is_not_there_is_said_plainly(start_kernel, tmp_path):
    from cortex.kernel.sdk import DatabaseUnavailable
    from cortex.plugins.memories.pg_store import PostgresStore

    from ..postgres_server import free_port

    with pytest.raises(DatabaseUnavailable, match=r"cannot reach PostgreSQL at postgresql://127.0.0.1:\d+/cortex"):
        PostgresStore(f"postgresql://cortex:secret@127.0.0.1:{free_port()}/cortex", timeout=1)
    _, kt = start_kernel('[plugins.memories]\nbackend = "postgres"\npostgres_dsn = "postgresql://c@127.0.0.1/c"\n'
                         "postgres_pool_size = 0\n")
    assert "postgres_pool_size must be 1 to 100" in kt.kernel.host.records["memories"].error


def test_cortex_memories_migrate_on_the_embedded_store(tmp_path):
    done = run_cli("memories", "migrate", env=cortex_env(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"memories on {tmp_path / 'data' / 'memories' / 'memories.db'}: schema 6 (this Cortex-OS: 6)"
