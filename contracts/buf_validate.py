"""`buf/validate/validate.proto` in the default descriptor pool, for contracts that declare bounds.

A contract's generated module imports this one where protoc wrote `from buf.validate import
validate_pb2` (kernel/codegen.py rewrites the line): protobuf will not add a file to its pool
before the files it imports. The descriptor is the protovalidate wheel's own (the one its
validator reads), not a copy generated here, so the two cannot drift apart. When another library
has already added buf/validate/validate.proto to the pool, that one is used.

Importing protovalidate takes about 0.1 s (its own protobuf runtime), which every process that
imports a contract (each `cortex` command) would pay; so the wheel's serialized descriptor is read
from its generated module's source (the literal it hands to its runtime), and protovalidate is
imported only when that module is not laid out as expected.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, field_mask_pb2, timestamp_pb2  # noqa: F401 - the files validate.proto imports, in the pool first
from google.protobuf.message import DecodeError

NAME = "buf/validate/validate.proto"
_GENERATED = "_gen/buf/validate/validate_pb.py"  # inside the protovalidate package
_LITERAL = "\n_DESC = file_desc(\n"


def wheel_descriptor() -> bytes:
    """The serialized FileDescriptorProto of buf/validate/validate.proto, as protovalidate has it."""
    try:
        spec = importlib.util.find_spec("protovalidate")
        text = (Path(spec.origin).parent / _GENERATED).read_text(encoding="utf-8")
        line = text[text.index(_LITERAL) + len(_LITERAL):].split("\n", 1)[0].strip()
        data = ast.literal_eval(line.removesuffix(","))
        if isinstance(data, bytes) and descriptor_pb2.FileDescriptorProto.FromString(data).name == NAME:
            return data
    except (AttributeError, OSError, TypeError, ValueError, SyntaxError, DecodeError):  # laid out otherwise: ask the wheel
        pass
    import protovalidate

    return protovalidate.ViolationsPb.desc().file.proto.to_binary()


def _descriptor():
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(NAME)
    except KeyError:
        return pool.AddSerializedFile(wheel_descriptor())


DESCRIPTOR = _descriptor()
