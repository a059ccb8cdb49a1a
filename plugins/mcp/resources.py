"""A person's memories, traces and proofs as MCP resources, so that an editor can attach them to a
conversation. Every read is a contract call through the gateway (the kernel's router, or a kernel
over gRPC) with the MCP client as principal: policy and audit hold for resources as for tools.

    cortex://memories                  the newest memories (JSON)
    cortex://memories/{id}             one memory: its text, with its fields in _meta
    cortex://memories?query={query}    search results (hybrid), as JSON
    cortex://traces                    the newest Cerebrum runs
    cortex://traces/{id}               one run: plan, steps, summary (JSON)
    cortex://proofs/{id}               a call's proof: audit entry, signed head, inclusion proof (JSON)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import grpc

from cortex.kernel import RouterError
from cortex.kernel.sdk import parse_json, to_json

SCHEME = "cortex"
MEMORIES = "cortex.memories.v1.MemoryService"
TRACES = "cortex.cerebrum.v1.CerebrumService"
PROOFS = "cortex.governance.v1.GovernanceService"
LIST_SIZE = 50
SEARCH_TOP_K = 10
# ids of memories, traces and proofs are short tokens; anything else in a URI is refused, not sent on
ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


@dataclass(frozen=True)
class ResourceSpec:
    uri: str
    name: str
    description: str
    service: str


@dataclass(frozen=True)
class TemplateSpec:
    uri_template: str
    name: str
    description: str
    service: str


RESOURCES = (
    ResourceSpec("cortex://memories", "memories", "The newest memories (JSON, newest first).", MEMORIES),
    ResourceSpec("cortex://traces", "traces", "The newest Cerebrum runs: goal, status, answer (JSON).", TRACES),
)
TEMPLATES = (
    TemplateSpec("cortex://memories/{id}", "memory", "One memory: its text; kind, tags, source and times in _meta.", MEMORIES),
    TemplateSpec("cortex://memories?query={query}", "memory-search",
                 "The memories that best match a query (hybrid search, top 10), as JSON.", MEMORIES),
    TemplateSpec("cortex://traces/{id}", "trace", "One Cerebrum run: its plan, every step as it ran, its summary.", TRACES),
    TemplateSpec("cortex://proofs/{id}", "proof",
                 "A call's proof: its audit entry, the signed tree head covering it, its inclusion proof.", PROOFS),
)


class ResourceNotFound(Exception):
    """The URI names nothing this bridge serves (as opposed to a call that failed)."""


@dataclass(frozen=True)
class Contents:
    text: str
    mime_type: str
    meta: dict[str, Any] | None = None


def served(specs, gateway: Any) -> list:
    """The specs whose contract the kernel serves now."""
    services = {m.service for m in gateway.methods()}
    return [s for s in specs if s.service in services]


async def call(gateway: Any, path: str, body: dict[str, Any], who: Any, timeout: float | None) -> dict[str, Any]:
    """One unary contract call by path, JSON in and out. Raises grpc.RpcError (UNIMPLEMENTED when
    nothing serves the method)."""
    method = gateway.method(f"/{path}")  # wire form: "/pkg.v1.Service/Method"
    if method is None:
        raise RouterError(grpc.StatusCode.UNIMPLEMENTED, gateway.explain(f"/{path}"))
    return to_json(await gateway.unary(method, parse_json(method, body), who, timeout=timeout))


def memory_uri(memory_id: str) -> str:
    return f"{SCHEME}://memories/{quote(memory_id, safe='')}"


def trace_uri(trace_id: str) -> str:
    return f"{SCHEME}://traces/{quote(trace_id, safe='')}"


def parse(uri: str) -> tuple[str, str | None, dict[str, list[str]]]:
    """(collection, id or None, query) of a cortex:// URI; ResourceNotFound for anything else."""
    parts = urlsplit(str(uri))
    if parts.scheme != SCHEME or parts.netloc not in ("memories", "traces", "proofs"):
        raise ResourceNotFound(f"no resource {uri!s}; resources/list and resources/templates/list show what there is")
    path = parts.path.strip("/")
    ident = unquote(path) if path else None
    if ident is not None and not ID.match(ident):
        raise ResourceNotFound(f"{ident!r} is not an id of {parts.netloc}")
    query = parse_qs(parts.query, keep_blank_values=True)
    if parts.netloc == "proofs" and ident is None:
        raise ResourceNotFound("a proof is read by id: cortex://proofs/{id} (a proof id or a call id)")
    return parts.netloc, ident, query


def _json(data: Any) -> Contents:
    return Contents(json.dumps(data, ensure_ascii=False, indent=2), "application/json")


async def read(gateway: Any, uri: str, who: Any, timeout: float | None) -> Contents:
    """The contents of `uri`, read through the router as `who`. Raises ResourceNotFound or
    grpc.RpcError (NOT_FOUND for an unknown id, PERMISSION_DENIED when policy says no, ...)."""
    collection, ident, query = parse(uri)
    if collection == "memories":
        if ident is not None:
            memory = (await call(gateway, f"{MEMORIES}/Get", {"id": ident}, who, timeout))["memory"]
            meta = {k: v for k, v in memory.items() if k != "text"}
            return Contents(memory.get("text", ""), "text/plain", {"cortex/memory": meta})
        if "query" in query:
            text = query["query"][0]
            if not text.strip():
                raise RouterError(grpc.StatusCode.INVALID_ARGUMENT, "cortex://memories?query= needs a query")
            found = await call(gateway, f"{MEMORIES}/Search", {"query": text, "top_k": SEARCH_TOP_K}, who, timeout)
            return _json({"query": text, "results": found.get("results", [])})
        listed = await call(gateway, f"{MEMORIES}/List", {"page_size": LIST_SIZE}, who, timeout)
        return _json({"memories": listed.get("memories", [])})
    if collection == "traces":
        if ident is not None:
            return _json((await call(gateway, f"{TRACES}/GetTrace", {"id": ident}, who, timeout))["trace"])
        listed = await call(gateway, f"{TRACES}/ListTraces", {"limit": LIST_SIZE}, who, timeout)
        return _json({"traces": listed.get("traces", [])})
    return _json(await call(gateway, f"{PROOFS}/GetProof", {"id": ident}, who, timeout))


async def complete_id(gateway: Any, template: str, prefix: str, who: Any, timeout: float | None) -> list[str]:
    """Completion of a template's {id}: the newest memory or trace ids starting with `prefix`."""
    if template == "cortex://memories/{id}":
        listed = await call(gateway, f"{MEMORIES}/List", {"page_size": LIST_SIZE}, who, timeout)
        ids = [m["id"] for m in listed.get("memories", [])]
    elif template == "cortex://traces/{id}":
        listed = await call(gateway, f"{TRACES}/ListTraces", {"limit": LIST_SIZE}, who, timeout)
        ids = [t.get("trace_id", "") for t in listed.get("traces", [])]
    else:
        return []
    return [i for i in ids if i and i.startswith(prefix)]
