"""Kernels on hosts of their own: network namespaces joined by a bridge (tests/hosts.py), each kernel
listening on its host's address with TLS and credentials, PostgreSQL on a host of its own reached
over verified TLS with a password, as a cluster is run. A memory stored through A is found through
B; A killed (-9) under load loses nothing acknowledged, and its clients retried against B succeed;
B's link cut, a kernel routing to B fails over to A and B's circuit opens, then B serves again
once its link is back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc
from cortex.kernel.sdk.testing import authenticated, read_admin_token

from .conftest import cortex_env, wait_for
from .hosts import Hosts, available
from .postgres_server import PostgresServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="hosts need root and ip (iproute2); CI runs as root"),
]

DISABLED = '["ollama", "openai", "cerebrum", "a2a", "mcp", "http"]'


@pytest.fixture
def hosts():
    with Hosts(["db", "a", "b"]) as made:
        yield made


@pytest.fixture
def database(hosts, tmp_path):
    """PostgreSQL on host db, TLS with a certificate for its address: (DSN that verifies it)."""
    from cortex.kernel.security.tls import init_ca

    made = init_ca(tmp_path / "db-ca", hosts=[hosts.address("db")])
    server = PostgresServer(host=hosts.address("db"), tls=(made["cert"], made["key"]), prefix=hosts.prefix("db")).start()
    try:
        server.create_database("cortex")
        yield server.dsn("cortex", ca=made["ca"])
    finally:
        server.remove()


@pytest.fixture
def cluster_ca(tmp_path) -> Path:
    """One CA for the cluster: it signs each kernel's server certificate and the nodes' client
    certificates (mutual TLS between kernels: a node's certificate is `node:NAME` to the others)."""
    from cortex.kernel.security.tls import init_ca

    init_ca(tmp_path / "cluster-ca")
    return tmp_path / "cluster-ca"


class Kernel:
    """`cortex serve` on a host, TLS on its address (a certificate of the cluster's CA), credentials
    required: an API key or the admin token, or a client certificate of the cluster's CA."""

    def __init__(self, serve_process, hosts: Hosts, name: str, data: Path, dsn: str, ca: Path):
        import shutil

        from cortex.kernel.security.tls import init_ca, issue_client, tls_dir

        tls_dir(data).mkdir(parents=True, mode=0o700)
        for part in ("ca.pem", "ca.key"):
            shutil.copy2(tls_dir(ca) / part, tls_dir(data) / part)
        made = init_ca(data, hosts=[hosts.address(name)])
        self.ca = made["ca"]
        env = cortex_env(data, CORTEX_PLUGINS__DISABLED=DISABLED, CORTEX_PLUGINS__MEMORIES__BACKEND="postgres",
                         CORTEX_PLUGINS__MEMORIES__WATCH="false", CORTEX_POSTGRES_DSN=dsn,
                         CORTEX_KERNEL__TLS_CERT=str(made["cert"]), CORTEX_KERNEL__TLS_KEY=str(made["key"]),
                         CORTEX_KERNEL__TLS_CLIENT_CA=str(made["ca"]), CORTEX_KERNEL__REQUIRE_CREDENTIALS="true")
        self.proc = serve_process("--listen", f"{hosts.address(name)}:50051", env=env, prefix=hosts.prefix(name))
        self.target, self.token = self.proc.target, read_admin_token(data)
        self.client = issue_client(ca, "tester")  # (a kernel that trusts client certificates asks every caller for one)

    def memories(self) -> memories_pb2_grpc.MemoryServiceStub:
        cert, key = self.client
        credentials = grpc.ssl_channel_credentials(self.ca.read_bytes(), key.read_bytes(), cert.read_bytes())
        return memories_pb2_grpc.MemoryServiceStub(authenticated(grpc.secure_channel(self.target, credentials), self.token))


def test_store_on_a_find_on_b_and_a_killed_under_load_loses_nothing_acknowledged(hosts, database, serve_process, tmp_path,
                                                                                   cluster_ca):
    a = Kernel(serve_process, hosts, "a", tmp_path / "a", database, cluster_ca)
    b = Kernel(serve_process, hosts, "b", tmp_path / "b", database, cluster_ca)
    on_a, on_b = a.memories(), b.memories()
    stored = on_a.Store(pb.StoreRequest(text="The boiler is serviced every October by Vaillant"), timeout=60)
    assert on_b.Get(pb.GetRequest(id=stored.id), timeout=10).memory.text.startswith("The boiler")
    found = on_b.Search(pb.SearchRequest(query="when is the heating maintained?", mode=pb.SEARCH_MODE_SEMANTIC, top_k=1),
                        timeout=60)
    assert [r.memory.id for r in found.results] == [stored.id]

    # clients store through A, and retry against B what A does not acknowledge; A is killed midway
    acknowledged: dict[str, str] = {}
    by_b = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        for n in range(30):
            text = f"ledger line {worker}-{n}"
            for stub, kernel in ((on_a, "a"), (on_b, "b")):
                try:
                    reply = stub.Store(pb.StoreRequest(text=text), timeout=10)
                except grpc.RpcError:
                    continue
                with lock:
                    acknowledged[text] = reply.id
                    if kernel == "b":
                        by_b.append(text)
                break

    workers = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    wait_for(lambda: len(acknowledged) >= 30, "a first part of the load to be acknowledged", timeout=60)
    a.proc.stop(sig=9)
    for worker in workers:
        worker.join(120)
    assert len(acknowledged) == 120 and by_b  # every store acknowledged, some by B after A died
    for text, memory_id in acknowledged.items():
        assert on_b.Get(pb.GetRequest(id=memory_id), timeout=10).memory.text == text
    listed = on_b.List(pb.ListRequest(page_size=500, filter=pb.Filter()), timeout=30).memories
    assert len([m for m in listed if m.text.startswith("ledger line")]) == 120  # and none twice


def circuit_of(kernel, service: str, provider: str):
    contracts = kernel_pb2_grpc.KernelServiceStub(kernel.channel()).ListContracts(kernel_pb2.ListContractsRequest(), timeout=10)
    contract = next(c for c in contracts.contracts if c.service == service)
    return next(p.circuit for p in contract.providers if p.name == provider)


def test_a_cut_link_fails_over_opens_the_circuit_and_recovers(hosts, database, serve_process, tmp_path, cluster_ca):
    """Kernel C (here, on loopback) serves memories from B, else A, both remote over mutual TLS (C
    holds a node certificate of the cluster's CA). B's cable pulled: C's calls fail over to A, B's
    circuit opens (no more waiting on B); the cable back, B lets a probe through and serves again."""
    from cortex.kernel.security.tls import issue_client

    a = Kernel(serve_process, hosts, "a", tmp_path / "a", database, cluster_ca)
    b = Kernel(serve_process, hosts, "b", tmp_path / "b", database, cluster_ca)
    node_cert, node_key = issue_client(cluster_ca, "kernel-c")
    service = "cortex.memories.v1.MemoryService"
    providers = "".join(f"""
        [providers.far-{name}]
        endpoint = "{kernel.target}"
        services = ["{service}"]
        tls_ca = "{kernel.ca}"
        tls_cert = "{node_cert}"
        tls_key = "{node_key}"
        timeout_seconds = 2
        """ for name, kernel in (("a", a), ("b", b)))
    config = tmp_path / "c.toml"
    config.write_text(f'[plugins]\ndisabled = ["ollama", "openai", "cerebrum", "a2a", "mcp", "http", "memories"]\n'
                      f'{providers}\n[routing."{service}"]\norder = ["far-b", "far-a"]\n'
                      "[circuit]\nfailure_threshold = 2\nreset_timeout_seconds = 3\nretries = 0\n")
    c = serve_process(env=cortex_env(tmp_path / "c", CORTEX_CONFIG=str(config)))
    via_c = memories_pb2_grpc.MemoryServiceStub(c.channel())

    def served_by(text: str) -> tuple[str, str]:
        _, call = via_c.Store.with_call(pb.StoreRequest(text=text), timeout=30)
        trailers = dict(call.trailing_metadata())
        return trailers["x-cortex-provider"], trailers["x-cortex-route"]

    assert served_by("before the cut")[0] == "far-b"
    hosts.cut("b")
    provider, route = served_by("during the cut, first")
    assert provider == "far-a" and route.startswith("far-b:"), route  # waited on B, then failed over
    served_by("during the cut, second")  # the second failure opens B's circuit
    assert circuit_of(c, service, "far-b") == kernel_pb2.Provider.CIRCUIT_OPEN
    started = time.monotonic()
    provider, route = served_by("during the cut, circuit open")
    assert (provider, route) == ("far-a", "far-b:skipped,far-a:ok") and time.monotonic() - started < 1.5
    hosts.mend("b")

    def back_on_b() -> bool:
        if served_by(f"after the cut {time.monotonic()}")[0] == "far-b":
            return True
        time.sleep(0.5)
        return False

    wait_for(back_on_b, "B to serve again once its link is back", timeout=30)
    assert circuit_of(c, service, "far-b") == kernel_pb2.Provider.CIRCUIT_CLOSED
    texts = [m.text for m in b.memories().List(pb.ListRequest(page_size=50), timeout=10).memories]
    assert {"before the cut", "during the cut, first", "during the cut, circuit open"} <= set(texts)  # one store for all
