"""Requests as JSON (HTTP, MCP): what protobuf's JSON parser would let through although the JSON
mapping and the published schema forbid it is refused, naming the field; what is allowed parses."""

from __future__ import annotations

import grpc
import pytest

from cortex.contracts.governance.v1 import governance_pb2
from cortex.contracts.memories.v1 import memories_pb2
from cortex.kernel.call import RouterError
from cortex.kernel.registry import MethodInfo
from cortex.kernel.sdk.bridge import parse_json

SEARCH = MethodInfo.from_descriptor(memories_pb2.DESCRIPTOR.services_by_name["MemoryService"].methods_by_name["Search"])
VERIFY = MethodInfo.from_descriptor(
    governance_pb2.DESCRIPTOR.services_by_name["GovernanceService"].methods_by_name["VerifyProof"]
)


@pytest.mark.parametrize(
    ("method", "body", "words"),
    [
        (SEARCH, None, "must be a JSON object"),
        (SEARCH, [], "must be a JSON object"),
        (SEARCH, {"query": "x", "top_k": True}, "top_k must be a number"),
        (SEARCH, {"query": "x", "mode": 1.5}, "mode must be one of SEARCH_MODE_UNSPECIFIED"),
        (SEARCH, {"query": "x", "mode": 99}, "mode must be one of"),
        (SEARCH, {"query": "x", "filter": []}, "filter must be a JSON object"),
        (SEARCH, {"query": "x", "filter": {"kinds": "note"}}, "filter.kinds must be a JSON array"),
        (SEARCH, {"query": "x", "filter": {"metadata": ["a"]}}, "filter.metadata must be a JSON object"),
        (VERIFY, {"entry": {"policy_change": []}}, "entry.policy_change must be a JSON object"),
        (VERIFY, {"entry": {"proof": {"latency_ms": False}}}, "entry.proof.latency_ms must be a number"),
        (VERIFY, {"entry": {"proof": {"decision": {"by_default": 1}}}}, "by_default must be true or false"),
        (SEARCH, {"query": "x", "colour": 1}, "no field named \"colour\""),
    ],
)
def test_what_the_schema_forbids_is_refused(method, body, words):
    with pytest.raises(RouterError) as err:
        parse_json(method, body)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details(), err.value.details()


def test_what_the_mapping_allows_parses():
    request = parse_json(SEARCH, {
        "query": "x", "topK": "5", "mode": "SEARCH_MODE_KEYWORD", "min_score": None,
        "filter": {"kinds": ["note"], "metadata": {"a": "b"}, "created_after": "2026-01-01T00:00:00Z"},
    })
    assert (request.top_k, request.mode, list(request.filter.kinds)) == (5, memories_pb2.SEARCH_MODE_KEYWORD, ["note"])
    assert request.filter.created_after.seconds > 0 and dict(request.filter.metadata) == {"a": "b"}
