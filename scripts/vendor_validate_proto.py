#!/usr/bin/env python3
"""Vendor `buf/validate/validate.proto` (protovalidate's rules) from the installed protovalidate wheel.

    python scripts/vendor_validate_proto.py          # write protos/buf/validate/validate.proto
    python scripts/vendor_validate_proto.py --check  # exit 1 if it differs from the wheel's

buf's registry is out of reach, so the .proto source is rebuilt from the FileDescriptorProto the
wheel embeds (`protovalidate._gen.buf.validate.validate_pb`, the file the validator itself reads):
every message, field, oneof, enum, extension, reserved and extension range, and option, with
fully qualified type names. The comments are not in the descriptor, so they are not here either:
the upstream file (github.com/bufbuild/protovalidate, proto/protovalidate/buf/validate/) documents
each rule. The rebuilt file is then compiled with protoc and its descriptor compared with the
wheel's: the script fails unless they are the same.

protoc reads this file only to resolve the contracts' `import "buf/validate/validate.proto"`; no
Python is generated from it (plugins/devkit/codegen.py points the import at the wheel's descriptor).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message_factory,
    text_encoding,
    text_format,
    timestamp_pb2,
    unknown_fields,
)
from google.protobuf.descriptor import FieldDescriptor

from cortex.contracts.buf_validate import wheel_descriptor  # the wheel's descriptor, as the kernel loads it

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "protos/buf/validate/validate.proto"
NAME = "buf/validate/validate.proto"
MAX_FIELD = 536_870_912  # one past the largest field number: "max" in a range

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_FLOAT: "float", FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64", FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32", FieldDescriptor.TYPE_BOOL: "bool", FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes", FieldDescriptor.TYPE_UINT32: "uint32", FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64", FieldDescriptor.TYPE_SINT32: "sint32", FieldDescriptor.TYPE_SINT64: "sint64",
}
_LABELS = {FieldDescriptor.LABEL_OPTIONAL: "optional", FieldDescriptor.LABEL_REQUIRED: "required",
           FieldDescriptor.LABEL_REPEATED: "repeated"}


class _Pool:
    """A private descriptor pool that knows validate.proto, so that options using its extensions
    parse as extensions (not unknown fields) and print by name. The default pool is left alone."""

    def __init__(self, validate: bytes):
        self.pool = descriptor_pool.DescriptorPool()
        for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
            self.pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
        self.pool.AddSerializedFile(validate)

    def parse(self, full_name: str, data: bytes):
        cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
        return cls.FromString(data)


def _json_name(name: str) -> str:
    """protoc's default json_name: snake_case to lowerCamelCase."""
    out, upper = [], False
    for ch in name:
        if ch == "_":
            upper = True
        else:
            out.append(ch.upper() if upper else ch)
            upper = False
    return "".join(out)


def _scalar(field, value) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        raw = value.encode() if isinstance(value, str) else value
        return '"' + text_encoding.CEscape(raw, as_utf8=False) + '"'
    return repr(value)


def _options(pool: _Pool, options) -> list[str]:
    """Each option set in an options message, as `name = value` for the .proto source."""
    if not options.ByteSize():
        return []
    parsed = pool.parse(options.DESCRIPTOR.full_name, options.SerializeToString())
    out = []
    for field, value in parsed.ListFields():
        name = f"({field.full_name})" if field.is_extension else field.name
        values = value if field.is_repeated else [value]
        for item in values:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                body = text_format.MessageToString(item, as_utf8=True, indent=2).rstrip("\n")
                body = body.replace("\\'", "'")  # text format escapes ' even within "...": CEL reads better without
                out.append(f"{name} = {{\n{body}\n}}")
            else:
                out.append(f"{name} = {_scalar(field, item)}")
    if len(unknown_fields.UnknownFieldSet(parsed)):
        raise SystemExit(f"{options.DESCRIPTOR.full_name} holds options this script cannot name")
    return out


def _indent(text: str, depth: int) -> str:
    pad = "  " * depth
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def _bracket(items: list[str]) -> str:
    if not items:
        return ""
    return " [" + ", ".join(items) + "]"


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_ENUM, FieldDescriptor.TYPE_GROUP):
        return field.type_name  # fully qualified, with its leading dot
    return _SCALARS[field.type]


def _field(pool: _Pool, field: descriptor_pb2.FieldDescriptorProto, in_oneof: bool, extension: bool) -> str:
    label = "" if in_oneof else _LABELS[field.label] + " "
    items = []
    if field.HasField("default_value"):
        value = field.default_value
        if field.type == FieldDescriptor.TYPE_STRING:
            value = '"' + text_encoding.CEscape(value.encode(), as_utf8=False) + '"'
        elif field.type == FieldDescriptor.TYPE_BYTES:
            value = f'"{value}"'  # protoc keeps a bytes default C-escaped
        items.append(f"default = {value}")
    if field.HasField("json_name") and not extension and field.json_name != _json_name(field.name):
        items.append(f'json_name = "{field.json_name}"')
    items += _options(pool, field.options)
    return f"{label}{_type(field)} {field.name} = {field.number}{_bracket(items)};"


def _range(start: int, end: int) -> str:
    """A half-open [start, end) range as the .proto writes it (inclusive, "max" for the top)."""
    last = "max" if end >= MAX_FIELD else str(end - 1)
    return str(start) if last == str(start) else f"{start} to {last}"


def _enum(pool: _Pool, enum: descriptor_pb2.EnumDescriptorProto) -> str:
    lines = [f"option {o};" for o in _options(pool, enum.options)]
    for value in enum.value:
        lines.append(f"{value.name} = {value.number}{_bracket(_options(pool, value.options))};")
    if enum.reserved_range:
        lines.append("reserved " + ", ".join(_range(r.start, r.end + 1) for r in enum.reserved_range) + ";")
    if enum.reserved_name:
        lines.append("reserved " + ", ".join(f'"{n}"' for n in enum.reserved_name) + ";")
    return f"enum {enum.name} {{\n" + _indent("\n".join(lines), 1) + "\n}"


def _extensions(pool: _Pool, fields) -> list[str]:
    """`extend` blocks, one per run of extensions of the same message, in declaration order."""
    blocks: list[tuple[str, list[str]]] = []
    for field in fields:
        if not blocks or blocks[-1][0] != field.extendee:
            blocks.append((field.extendee, []))
        blocks[-1][1].append(_field(pool, field, False, True))
    return [f"extend {extendee} {{\n" + _indent("\n".join(body), 1) + "\n}" for extendee, body in blocks]


def _message(pool: _Pool, message: descriptor_pb2.DescriptorProto) -> str:
    parts = [f"option {o};" for o in _options(pool, message.options)]
    done_oneofs: set[int] = set()
    for field in message.field:
        in_oneof = field.HasField("oneof_index") and not field.proto3_optional
        if not in_oneof:
            parts.append(_field(pool, field, False, False))
            continue
        index = field.oneof_index
        if index in done_oneofs:
            continue
        done_oneofs.add(index)
        oneof = message.oneof_decl[index]
        body = [f"option {o};" for o in _options(pool, oneof.options)]
        body += [_field(pool, f, True, False) for f in message.field
                 if f.HasField("oneof_index") and f.oneof_index == index and not f.proto3_optional]
        parts.append(f"oneof {oneof.name} {{\n" + _indent("\n".join(body), 1) + "\n}")
    for r in message.extension_range:
        parts.append(f"extensions {_range(r.start, r.end)}{_bracket(_options(pool, r.options))};")
    if message.reserved_range:
        parts.append("reserved " + ", ".join(_range(r.start, r.end) for r in message.reserved_range) + ";")
    if message.reserved_name:
        parts.append("reserved " + ", ".join(f'"{n}"' for n in message.reserved_name) + ";")
    parts += [_enum(pool, e) for e in message.enum_type]
    parts += [_message(pool, m) for m in message.nested_type]
    parts += _extensions(pool, message.extension)
    return f"message {message.name} {{\n" + _indent("\n".join(parts), 1) + "\n}"


def render(data: bytes, version: str) -> str:
    """The .proto source of the serialized FileDescriptorProto `data`."""
    pool = _Pool(data)
    proto = descriptor_pb2.FileDescriptorProto.FromString(data)
    if proto.service or proto.edition:
        raise SystemExit(f"{proto.name}: services and editions are not handled by this script")
    blocks = [
        f"// Vendored from protovalidate {version} (the PyPI wheel): rebuilt by scripts/vendor_validate_proto.py\n"
        "// from the descriptor the wheel embeds, which is what its validator reads. Do not edit; run the\n"
        "// script after upgrading protovalidate. The rules are documented in the upstream file:\n"
        "// https://github.com/bufbuild/protovalidate/blob/main/proto/protovalidate/buf/validate/validate.proto\n"
        f'syntax = "{proto.syntax or "proto2"}";',
        f"package {proto.package};",
        "\n".join(f'import "{d}";' for d in proto.dependency),
        "\n".join(f"option {o};" for o in _options(pool, proto.options)),
    ]
    blocks += _extensions(pool, proto.extension)
    blocks += [_message(pool, m) for m in proto.message_type]
    blocks += [_enum(pool, e) for e in proto.enum_type]
    return "\n\n".join(b for b in blocks if b) + "\n"


def compiled(source: str) -> bytes:
    """`source` compiled by protoc: its FileDescriptorProto, serialized."""
    import grpc_tools
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / NAME
        path.parent.mkdir(parents=True)
        path.write_text(source)
        out = Path(tmp) / "set.binpb"
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        if protoc.main(["protoc", f"-I{tmp}", f"-I{well_known}", f"--descriptor_set_out={out}", NAME]) != 0:
            raise SystemExit("protoc cannot compile the rebuilt validate.proto")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
        return next(f for f in files if f.name == NAME).SerializeToString()


def same(a: bytes, b: bytes) -> bool:
    """Whether two serialized FileDescriptorProtos describe the same file (options compared as
    values, whatever order they were written in; json_name as protoc fills it in)."""
    pool = _Pool(a)

    def normal(data: bytes):
        proto = pool.parse("google.protobuf.FileDescriptorProto", data)
        stack = list(proto.message_type)
        fields = list(proto.extension)
        while stack:
            message = stack.pop()
            fields += list(message.field) + list(message.extension)
            stack += list(message.nested_type)
        for field in fields:
            field.ClearField("json_name")
        return proto

    return normal(a) == normal(b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the vendored file is not the wheel's")
    opts = parser.parse_args()
    data = wheel_descriptor()
    source = render(data, metadata.version("protovalidate"))
    if not same(data, compiled(source)):
        print("the rebuilt validate.proto does not compile to the wheel's descriptor", file=sys.stderr)
        return 1
    if opts.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != source:
            sys.stderr.writelines(difflib.unified_diff(current.splitlines(True), source.splitlines(True),
                                                       str(OUT), "from the wheel", n=1))
            print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/vendor_validate_proto.py", file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(ROOT)} is the protovalidate wheel's")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(source)
    print(f"wrote {OUT.relative_to(ROOT)} (protovalidate {metadata.version('protovalidate')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
