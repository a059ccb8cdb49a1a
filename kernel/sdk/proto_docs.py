"""The .proto comments, by full name, for descriptions in MCP tools and the OpenAPI document.

protoc drops comments from generated Python, so codegen (`kernel/codegen.py`, `cortex plugin
codegen`) also writes a FileDescriptorSet with source info: `cortex/contracts/descriptors.binpb` for
Cortex-OS's own contracts, `<package>/descriptors.binpb` for a plugin's (found from the .proto
path of a contract when its first description is asked for: `bookmarks/v1/bookmarks.proto` -> package `bookmarks`).
Contracts shipped without one fall back to a description of their own.
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
        for j, nested_enum in enumerate(proto.enum_type):
            enum((*path, _MESSAGE_ENUM, j), full, nested_enum)

    for i, proto in enumerate(file.message_type):
        message((_FILE_MESSAGE, i), package, proto)
    for i, enum_proto in enumerate(file.enum_type):
        enum((_FILE_ENUM, i), package, enum_proto)
    for i, service in enumerate(file.service):
        full = f"{package}.{service.name}"
        names[(_FILE_SERVICE, i)] = full
        for j, method in enumerate(service.method):
            names[(_FILE_SERVICE, i, _SERVICE_METHOD, j)] = f"{full}.{method.name}"
    return names


DESCRIPTORS = "descriptors.binpb"
# comments of plugins' contracts, loaded as their contracts register; the packages looked at
_plugin_comments: dict[str, str] = {}
_looked_at: set[str] = set()


def _read(package: str) -> bytes | None:
    try:
        return resources.files(package).joinpath(DESCRIPTORS).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError, TypeError, ValueError):
        return None


def load_for(proto_file: str) -> None:
    """Load the comments shipped with the contract defined in `proto_file` ("bookmarks/v1/x.proto"):
    `descriptors.binpb` in the nearest Python package along that path."""
    parts = proto_file.split("/")[:-1]
    for n in range(len(parts), 0, -1):
        package = ".".join(parts[:n])
        if package in _looked_at:
            return
        _looked_at.add(package)
        raw = _read(package)
        if raw is not None:
            _plugin_comments.update(_comments_in(raw))
            return


@cache
def comments() -> dict[str, str]:
    """Full name ("cortex.memories.v1.MemoryService.Store", "cortex.memories.v1.Memory.text")
    -> its leading comment, one line (Cortex-OS's own contracts)."""
    raw = _read("cortex.contracts")
    return _comments_in(raw) if raw is not None else {}


def _comments_in(raw: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(raw).file:
        names = _names(file)
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name and location.leading_comments.strip():
                found[name] = _clean(location.leading_comments)
    return found


def doc(full_name: str, default: str = "", proto_file: str | None = None) -> str:
    """The comment of `full_name`; `proto_file` (where it is defined) loads a plugin's comments
    the first time one of its names is asked for."""
    if proto_file is not None:
        load_for(proto_file)
    return comments().get(full_name) or _plugin_comments.get(full_name, default)
