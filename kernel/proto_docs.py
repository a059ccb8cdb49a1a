"""The .proto comments, by full name, for descriptions in MCP tools and the OpenAPI document.

protoc drops comments from generated Python, so `scripts/gen_contracts.py` also writes
`cortex/contracts/descriptors.binpb`, a FileDescriptorSet with source info. Contracts from
third-party plugins have no comments here; callers fall back to a description of their own.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from google.protobuf import descriptor_pb2

# field numbers in FileDescriptorProto / DescriptorProto / ServiceDescriptorProto
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_SERVICE_METHOD = 2
_ENUM_VALUE = 2


def _clean(comment: str) -> str:
    lines = [line.strip() for line in comment.strip().splitlines()]
    return " ".join(line for line in lines if line)


def _names(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Source-info paths -> full names, for every message, field, enum, service and method."""
    names: dict[tuple[int, ...], str] = {}
    package = file.package

    def enum(path: tuple[int, ...], prefix: str, proto: descriptor_pb2.EnumDescriptorProto) -> None:
        full = f"{prefix}.{proto.name}"
        names[path] = full
        for j, value in enumerate(proto.value):
            names[(*path, _ENUM_VALUE, j)] = f"{full}.{value.name}"

    def message(path: tuple[int, ...], prefix: str, proto: descriptor_pb2.DescriptorProto) -> None:
        full = f"{prefix}.{proto.name}"
        names[path] = full
        for j, field in enumerate(proto.field):
            names[(*path, _MESSAGE_FIELD, j)] = f"{full}.{field.name}"
        for j, nested in enumerate(proto.nested_type):
            message((*path, _MESSAGE_NESTED, j), full, nested)
        for j, nested in enumerate(proto.enum_type):
            enum((*path, _MESSAGE_ENUM, j), full, nested)

    for i, proto in enumerate(file.message_type):
        message((_FILE_MESSAGE, i), package, proto)
    for i, proto in enumerate(file.enum_type):
        enum((_FILE_ENUM, i), package, proto)
    for i, service in enumerate(file.service):
        full = f"{package}.{service.name}"
        names[(_FILE_SERVICE, i)] = full
        for j, method in enumerate(service.method):
            names[(_FILE_SERVICE, i, _SERVICE_METHOD, j)] = f"{full}.{method.name}"
    return names


@cache
def comments() -> dict[str, str]:
    """Full name ("cortex.memories.v1.MemoryService.Store", "cortex.memories.v1.Memory.text")
    -> its leading comment, one line."""
    try:
        raw = resources.files("cortex.contracts").joinpath("descriptors.binpb").read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    found: dict[str, str] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(raw).file:
        names = _names(file)
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name and location.leading_comments.strip():
                found[name] = _clean(location.leading_comments)
    return found


def doc(full_name: str, default: str = "") -> str:
    return comments().get(full_name, default)
