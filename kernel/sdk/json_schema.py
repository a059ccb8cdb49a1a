"""JSON Schema for protobuf messages, as their JSON mapping writes and reads them.

One generator for every bridge: MCP tool input/output schemas and the OpenAPI document. Field
names are the .proto names (snake_case), which is what the bridges print; the protobuf JSON
parser also accepts lowerCamelCase. Schemas match `json_format.MessageToDict` output: 64-bit
integers may be strings, enums are names, bytes are base64, well-known types use their special
forms. Messages are shared definitions referenced as `{ref_prefix}{full name}`, so recursive
messages work.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from . import proto_docs

_F = FieldDescriptor
# The range of each integer type: the parser refuses a value outside it, so the schema says so.
_INT32 = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1), _F.TYPE_SINT32: (-(2**31), 2**31 - 1), _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1), _F.TYPE_FIXED32: (0, 2**32 - 1),
}
_INT64 = {
    _F.TYPE_INT64: (-(2**63), 2**63 - 1), _F.TYPE_SINT64: (-(2**63), 2**63 - 1), _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1), _F.TYPE_FIXED64: (0, 2**64 - 1),
}
# 64-bit integers are written as decimal strings (and read as strings or numbers): up to 19 digits
# signed, 20 unsigned; never "" or "1e3". (A string of that many digits may still be out of range:
# the server refuses it, INVALID_ARGUMENT.)
_INT64_TEXT = {True: r"^-?[0-9]{1,19}$", False: r"^[0-9]{1,20}$"}
_FLOAT_MAX = 3.4028234663852886e38
_NON_FINITE = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}

_WRAPPERS: dict[str, dict[str, Any]] = {
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int64Value": {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": _INT64_TEXT[True]}]},
    "google.protobuf.UInt64Value": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": _INT64_TEXT[False]}]},
    "google.protobuf.Int32Value": {"type": "integer"},
    "google.protobuf.UInt32Value": {"type": "integer"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    **_WRAPPERS,
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated field paths"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Value": {},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    "google.protobuf.Empty": {"type": "object"},
}

# Well-known types whose JSON form is no object of fields (a Timestamp is a string, a wrapper its
# value), and those that are objects of any keys: the bridges check neither field by field
NOT_OBJECTS = frozenset(name for name, schema in _WELL_KNOWN.items() if schema.get("type") != "object")
FREE_OBJECTS = frozenset({"google.protobuf.Struct", "google.protobuf.Any"})

class SchemaBuilder:
    """Collects message definitions while building schemas; `defs` holds them all."""

    def __init__(self, ref_prefix: str = "#/$defs/"):
        self.ref_prefix = ref_prefix
        self.defs: dict[str, dict[str, Any]] = {}

    def ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.defs:
            self.defs[message.full_name] = {}  # placeholder first: recursion stops here
            self.defs[message.full_name] = self._message(message)
        return {"$ref": f"{self.ref_prefix}{message.full_name}"}

    def inline(self, message: Descriptor) -> dict[str, Any]:
        """The message's own schema (for a top-level input), its nested messages as references."""
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        return self._message(message)

    def _message(self, message: Descriptor) -> dict[str, Any]:
        properties = {field.name: self._field(field, message) for field in message.fields}
        # the parser refuses fields the message does not have (it also reads lowerCamelCase names,
        # which the schema leaves out: one spelling, the .proto's)
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        description = proto_docs.doc(message.full_name, proto_file=message.file.name)
        if description:
            schema["description"] = description
        return schema

    def _field(self, field: FieldDescriptor, message: Descriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self._single(value)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self._single(field)}
        else:
            schema = self._single(field)
        schema = _nullable(schema)  # the JSON mapping reads null as the field's default
        description = proto_docs.doc(field.full_name, proto_file=message.file.name)  # (the field's message)
        if description:
            schema["description"] = description
        return schema

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        kind = field.type
        if field.message_type is not None:  # TYPE_MESSAGE, TYPE_GROUP
            return self.ref(field.message_type)
        if field.enum_type is not None:  # TYPE_ENUM
            return _enum(field.enum_type)
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_STRING:
            return {"type": "string"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if kind in _INT32:
            low, high = _INT32[kind]
            return {"type": "integer", "minimum": low, "maximum": high}
        if kind in _INT64:  # the JSON mapping writes 64-bit integers as strings
            low, high = _INT64[kind]
            text = {"type": "string", "pattern": _INT64_TEXT[low < 0]}
            return {"anyOf": [{"type": "integer", "minimum": low, "maximum": high}, text]}
        if kind == _F.TYPE_FLOAT:
            return {"anyOf": [{"type": "number", "minimum": -_FLOAT_MAX, "maximum": _FLOAT_MAX}, _NON_FINITE]}
        if kind == _F.TYPE_DOUBLE:
            return {"anyOf": [{"type": "number"}, _NON_FINITE]}
        raise ValueError(f"unsupported field type {kind} in {field.full_name}")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema:
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list) and "enum" not in schema:
        return {**schema, "type": [*kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _enum(enum: EnumDescriptor) -> dict[str, Any]:
    names = [value.name for value in enum.values]
    schema: dict[str, Any] = {"type": ["string", "integer"], "enum": [*names, *(v.number for v in enum.values)]}
    documented = [f"{n}: {d}" for n in names if (d := proto_docs.doc(f"{enum.full_name}.{n}", proto_file=enum.file.name))]
    if documented:
        schema["description"] = "; ".join(documented)
    return schema


def standalone(message: Descriptor) -> dict[str, Any]:
    """A self-contained schema for one message: its definitions under `$defs`."""
    builder = SchemaBuilder("#/$defs/")
    schema = builder.inline(message)
    if builder.defs:
        schema["$defs"] = builder.defs
    return schema
