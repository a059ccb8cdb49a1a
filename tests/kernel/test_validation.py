"""Bounds declared in the contracts (buf.validate), checked by the kernel before any provider sees
a request: out of range is INVALID_ARGUMENT naming the field, its value and the rule; no provider
is tried, nothing stored changes, no circuit counts it; a contract without rules works as before."""

from __future__ import annotations

import importlib
import json
import pkgutil
import textwrap

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool

import cortex.contracts
from cortex.contracts import buf_validate
from cortex.contracts.cerebrum.v1 import cerebrum_pb2, cerebrum_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc, sources_pb2, sources_pb2_grpc
from cortex.kernel import hookimpl
from cortex.kernel.call import RouterError
from cortex.kernel.security.validation import check_request, has_rules, validator

from ..conftest import plugin_of
from ..counter_contract import CounterPlugin, CounterServicer, Gatekeeper, counter_stub

CONFIG = '[plugins]\ndisabled = ["ollama", "openai", "mlx", "a2a", "mcp"]\n[plugins.memories]\nwatch = false\n'
INVALID = grpc.StatusCode.INVALID_ARGUMENT
TTL_LIMIT = 3_153_600_000  # memories.proto: a century, as the memories service says


class Recorder:
    """Sees every call's outcome (observe hook) and counts the calls a provider was asked for."""

    def __init__(self):
        self.outcomes = []

    @hookimpl
    def cortex_observe(self, call, outcome):
        self.outcomes.append((call.method.path, outcome))

    def last(self, path):
        return next(o for p, o in reversed(self.outcomes) if p == path)


@pytest.fixture
def kernel(start_kernel, channel_to):
    recorder = Recorder()
    target, kt = start_kernel(CONFIG, [("recorder", recorder)])
    channel = channel_to(target)
    return memories_pb2_grpc.MemoryServiceStub(channel), channel, kt, recorder


def refused(call) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == INVALID, err.value.details()
    return err.value.details()


def test_out_of_range_is_refused_naming_the_field_and_nothing_reaches_the_plugin(kernel):
    stub, _, kt, recorder = kernel
    kept = stub.Store(pb.StoreRequest(text="Water the fern every Sunday", tags=["plants"]), timeout=30).memory
    memories = next(p for p in kt.kernel.registry.all_providers() if p.name == "memories")
    calls = memories.calls

    details = refused(lambda: stub.Store(pb.StoreRequest(text="x", ttl_seconds=10**12), timeout=10))
    assert details == (f"ttl_seconds is 1000000000000; the limit is {TTL_LIMIT} (uint64.lte) in "
                       "cortex.memories.v1.StoreRequest")
    outcome = recorder.last("/cortex.memories.v1.MemoryService/Store")
    assert outcome.code == INVALID and outcome.attempts == []  # no provider was even considered

    details = refused(lambda: stub.Update(pb.UpdateRequest(id=kept.id, tags=["t"] * 40, update_mask={"paths": ["tags"]}),
                                          timeout=10))
    assert details.startswith("tags has 40 items, at most 32 are allowed (repeated.max_items)"), details
    details = refused(lambda: stub.Store(pb.StoreRequest(text="x", metadata={"note": "v" * 5000}), timeout=10))
    assert "metadata['note'] is 5000 characters; the limit is 1024 (string.max_len)" in details
    assert memories.calls == calls  # the provider never saw one of them
    assert stub.Stats(pb.StatsRequest(), timeout=10).total == 1
    assert stub.Get(pb.GetRequest(id=kept.id), timeout=10).memory == kept


def test_rules_on_nested_messages_are_checked_with_the_full_path(kernel):
    stub, channel, _, _ = kernel
    many = pb.Filter(tags_all=[f"t{i}" for i in range(1000)], kinds=["note", "k" * 300])
    details = refused(lambda: stub.Search(pb.SearchRequest(query="x", top_k=5, filter=many), timeout=10))
    assert "filter.tags_all has 1000 items, at most 32 are allowed (repeated.max_items) in cortex.memories.v1.SearchRequest" in details
    assert "filter.kinds[1] is 300 characters; the limit is 200 (string.max_len)" in details
    brain = cerebrum_pb2_grpc.CerebrumServiceStub(channel)
    steps = [cerebrum_pb2.Step(id=f"s{i}", method="cortex.memories.v1.MemoryService/Stats") for i in range(40)]
    details = refused(lambda: brain.Simulate(cerebrum_pb2.SimulateRequest(plan=cerebrum_pb2.Plan(goal="g", steps=steps)),
                                             timeout=10))
    assert details.startswith("plan.steps has 40 items, at most 32 are allowed (repeated.max_items) in "
                              "cortex.cerebrum.v1.SimulateRequest"), details


def test_huge_numbers_in_numeric_fields_are_refused_over_grpc_and_http(kernel):
    """The SourceService/Open kind of bug: a number far past what the service handles (a line, a
    count, a TTL) once reached the provider and made it raise."""
    stub, channel, kt, _ = kernel
    for call, words in [
        (lambda: stub.Search(pb.SearchRequest(query="x", top_k=2**32 - 1), timeout=10), "top_k is 4294967295; the limit is 100"),
        (lambda: stub.List(pb.ListRequest(page_size=2**32 - 1), timeout=10), "page_size is 4294967295; the limit is 500"),
        (lambda: stub.Store(pb.StoreRequest(text="x", ttl_seconds=2**64 - 1), timeout=10),
         f"ttl_seconds is 18446744073709551615; the limit is {TTL_LIMIT}"),
        (lambda: cerebrum_pb2_grpc.CerebrumServiceStub(channel).ListTraces(cerebrum_pb2.ListTracesRequest(limit=2**32 - 1),
                                                                           timeout=10),
         "limit is 4294967295; the limit is 1000 (uint32.lte) in cortex.cerebrum.v1.ListTracesRequest"),
        (lambda: sources_pb2_grpc.SourceServiceStub(channel).Open(sources_pb2.OpenRequest(ref="x" * 10_000), timeout=10),
         "ref is 10000 characters; the limit is 8192"),
    ]:
        assert words in refused(call)
    http = httpx.Client(base_url=f"http://{plugin_of(kt, 'http').address}", timeout=30)
    reply = http.post("/v1/cortex.memories.v1.MemoryService/Search", content=json.dumps({"query": "x", "topK": 2**32 - 1}),
                      headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "INVALID_ARGUMENT" and "top_k is 4294967295" in reply.json()["error"]["message"]


def test_in_range_requests_still_work_at_the_limits(kernel):
    stub, _, _, _ = kernel
    stored = stub.Store(pb.StoreRequest(text="The spare key is with Mrs. Weber", tags=[f"t{i}" for i in range(32)],
                                        ttl_seconds=TTL_LIMIT, metadata={"k": "v" * 1000}), timeout=30)
    assert stored.created and len(stored.memory.tags) == 32
    found = stub.Search(pb.SearchRequest(query="spare key", top_k=100, mode=pb.SEARCH_MODE_KEYWORD), timeout=30)
    assert [r.memory.id for r in found.results] == [stored.id]
    assert [m.id for m in stub.List(pb.ListRequest(page_size=500), timeout=30).memories] == [stored.id]


def test_invalid_requests_never_open_the_memories_circuit(kernel):
    stub, _, kt, _ = kernel
    threshold = kt.kernel.registry.breaker("memories").failure_threshold
    for i in range(3 * threshold + 5):
        refused(lambda i=i: stub.Search(pb.SearchRequest(query="x", top_k=1000 + i), timeout=10))
        refused(lambda: stub.Store(pb.StoreRequest(text="x", ttl_seconds=TTL_LIMIT + 1), timeout=10))
    assert kt.kernel.registry.breaker("memories").state.value == "closed"
    assert stub.Store(pb.StoreRequest(text="another client's note"), timeout=30).created


def test_a_contract_without_rules_works_as_before(start_kernel, channel_to, counter_pb2):
    assert not has_rules(counter_pb2.AddRequest.DESCRIPTOR)
    servicer = CounterServicer(counter_pb2, "only")
    gate = Gatekeeper(lambda call: None)
    target, _ = start_kernel("", [("only", CounterPlugin(counter_pb2, servicer)), ("gate", gate)])
    stub = counter_stub(channel_to, target, counter_pb2)
    assert stub.Add(counter_pb2.AddRequest(amount=2**31 - 1), timeout=5).value == 2**31 - 1
    assert [m.value for m in stub.Count(counter_pb2.CountRequest(upto=3), timeout=5)] == [0, 1, 2]
    assert servicer.calls == 2


PLUGIN_PROTO = textwrap.dedent("""\
    syntax = "proto3";
    package bookcase.v1;
    import "buf/validate/validate.proto";
    // ShelfService keeps books.
    service ShelfService {
      // Put keeps a book.
      rpc Put(PutRequest) returns (PutResponse);
    }
    // Book is one book.
    message Book {
      string title = 1 [(buf.validate.field).string = {min_len: 1, max_len: 20}];
    }
    // PutRequest is the books to keep.
    message PutRequest {
      repeated Book books = 1 [(buf.validate.field).repeated.max_items = 3];
      int32 copies = 2 [(buf.validate.field).int32 = {gte: 0, lte: 9}];
    }
    // PutResponse says how many were kept.
    message PutResponse {
      int32 kept = 1;
    }
""")


def test_a_plugin_contract_with_its_own_rules_is_generated_and_checked(tmp_path, start_kernel, channel_to, monkeypatch):
    """`cortex plugin codegen` compiles a contract that imports buf/validate/validate.proto without
    a copy of it, and generates no validate_pb2; the kernel checks its rules, nested ones too."""
    from cortex.plugins.devkit.codegen import Target, generate

    (tmp_path / "protos/bookcase/v1").mkdir(parents=True)
    (tmp_path / "protos/bookcase/v1/bookcase.proto").write_text(PLUGIN_PROTO)
    generate(Target.for_plugin(tmp_path / "protos", tmp_path / "src"), tmp_path / "src")
    assert sorted(p.name for p in (tmp_path / "src").rglob("*_pb2*.py")) == ["bookcase_pb2.py", "bookcase_pb2_grpc.py"]
    assert "from cortex.contracts import buf_validate as" in (tmp_path / "src/bookcase/v1/bookcase_pb2.py").read_text()
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    shelf = importlib.import_module("bookcase.v1.bookcase_pb2")
    seen = []

    class Shelf:
        async def Put(self, request, context):
            seen.append(request)
            return shelf.PutResponse(kept=len(request.books) * request.copies)

    class Plugin:
        @hookimpl
        def cortex_register(self, registry):
            registry.add("bookcase.v1.ShelfService", Shelf(), name="shelf")

    target, _ = start_kernel("", [("shelf", Plugin())])
    put = channel_to(target).unary_unary("/bookcase.v1.ShelfService/Put", request_serializer=shelf.PutRequest.SerializeToString,
                                         response_deserializer=shelf.PutResponse.FromString)
    assert put(shelf.PutRequest(books=[shelf.Book(title="Dune")], copies=2), timeout=5).kept == 2
    details = refused(lambda: put(shelf.PutRequest(books=[shelf.Book(title="Dune"), shelf.Book(title="")], copies=10),
                                  timeout=5))
    assert details == ("books[1].title is 0 characters; it must be at least 1 (string.min_len) in bookcase.v1.PutRequest; "
                       "copies must be between 0 and 9, got 10 (int32.gte_lte) in bookcase.v1.PutRequest")
    assert len(seen) == 1


def _contract_modules():
    for module in pkgutil.walk_packages(cortex.contracts.__path__, "cortex.contracts."):
        if module.name.endswith("_pb2"):
            yield importlib.import_module(module.name)


def test_every_rule_bearing_contract_is_loaded_with_its_rules():
    pool = descriptor_pool.Default()
    assert pool.FindFileByName(buf_validate.NAME) is buf_validate.DESCRIPTOR
    import protovalidate

    assert buf_validate.wheel_descriptor() == protovalidate.ViolationsPb.desc().file.proto.to_binary()
    bearing = []
    for module in _contract_modules():
        file = pool.FindFileByName(module.DESCRIPTOR.name)
        if buf_validate.NAME not in [d.name for d in file.dependencies]:
            continue
        rules = [m for m in file.message_types_by_name.values() if has_rules(m)]
        assert rules, f"{file.name} imports buf/validate/validate.proto but declares no rule"
        bearing.append(file.name)
    assert {"cortex/memories/v1/memories.proto", "cortex/memories/v1/sources.proto", "cortex/models/v1/models.proto",
            "cortex/cerebrum/v1/cerebrum.proto", "cortex/events/v1/events.proto"} <= set(bearing)


def test_every_method_s_empty_request_passes_its_rules():
    """The rules are ceilings: what a request leaves unset (0, "", no items) is the service's to
    judge. Compiling each method's rules also proves they are all valid buf.validate."""
    from google.protobuf import message_factory

    checked = 0
    for module in _contract_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                request = message_factory.GetMessageClass(method.input_type)()
                assert validator().collect_violations(request) == [], method.full_name
                check_request(None, request)
                checked += 1
    assert checked > 50


def test_the_error_names_every_broken_rule_briefly():
    many = pb.StoreRequest(text="x", tags=["a" * 100] * 40, metadata={f"k{i}": "v" for i in range(40)}, ttl_seconds=2**63)
    with pytest.raises(RouterError) as err:
        check_request(None, many)
    details = err.value.details()
    assert err.value.code() == INVALID and details.endswith("more") and len(details) < 400, details
    assert details.startswith("tags has 40 items, at most 32 are allowed (repeated.max_items) in cortex.memories.v1.StoreRequest; ")
