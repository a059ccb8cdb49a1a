"""The OpenAPI 3.1 document of the HTTP/JSON API, generated from the contracts' descriptors:
one POST operation per method, request and response schemas from the messages, descriptions
from the .proto comments."""

from __future__ import annotations

from typing import Any

from cortex.kernel import MethodInfo
from cortex.kernel.sdk import SchemaBuilder, describe

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "gRPC status name, e.g. PERMISSION_DENIED"},
                "http_status": {"type": "integer"},
                "message": {"type": "string"},
            },
        }
    },
}


def _sse_event(message: dict[str, Any]) -> dict[str, Any]:
    """One Server-Sent Event of a stream: its name, and its data, the JSON of `message` (or of an
    error, or `{}` at the end)."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": ["message", "error", "end"]},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": message},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    }


def _summary(text: str) -> str:
    first = text.split(". ")[0].rstrip(".")
    return first[:120]


def build(methods: list[MethodInfo], version: str) -> dict[str, Any]:
    schemas = SchemaBuilder("#/components/schemas/")
    paths: dict[str, Any] = {}
    for method in sorted(methods, key=lambda m: m.path):
        description = describe(method)
        body = schemas.ref(method.input.DESCRIPTOR)
        result = schemas.ref(method.output.DESCRIPTOR)
        if method.server_streaming:
            ok = {
                "description": "Server-Sent Events: one `message` event per response message (data: its JSON), "
                "an `error` event if the stream fails midway, then an `end` event.",
                "content": {"text/event-stream": {"schema": _sse_event(result), "x-cortex-message": result}},
            }
        else:
            ok = {"description": method.output.DESCRIPTOR.full_name, "content": {"application/json": {"schema": result}}}
        paths[f"/v1/{method.service}/{method.name}"] = {
            "post": {
                "operationId": f"{method.service}.{method.name}",
                "tags": [method.service],
                "summary": _summary(description),
                "description": description,
                # no body at all is the empty request ({}); a body must be a JSON object
                "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
                "responses": {"200": ok, "default": {"$ref": "#/components/responses/Error"}},
            }
        }
    paths["/health"] = _plain("Liveness: 200 while the process serves HTTP.", "liveness")
    paths["/ready"] = _plain("Readiness: 200 when every served contract has a healthy provider, else 503.", "readiness")
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics: calls, latency histograms, decisions, provider health and circuits",
            "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "default": {"$ref": "#/components/responses/Error"},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cortex-OS HTTP/JSON API",
            "version": version,
            "description": "Every unary contract method as POST /v1/<package.Service>/<Method> with the request "
            "message as JSON (protobuf JSON mapping; field names as in the .proto). Server-streaming methods "
            "answer with Server-Sent Events. Errors carry the gRPC status name.",
        },
        "paths": paths,
        "components": {
            "schemas": {**schemas.defs, "cortex.http.Error": ERROR_SCHEMA},
            "responses": {
                "Error": {
                    "description": "The call failed; `error.code` is the gRPC status",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/cortex.http.Error"}}},
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # loopback clients need nothing; others send the configured bearer token
        "security": [{}, {"bearer": []}],
    }


def _plain(summary: str, operation: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation,
            "summary": summary,
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}},
                          "503": {"description": "not ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                          "default": {"$ref": "#/components/responses/Error"}},
        }
    }
