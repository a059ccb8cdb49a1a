"""The files of a new plugin (`cortex plugin new NAME`): a complete package whose tests pass as
generated. `{name}` is the plugin (and Python package) name, `{Name}` its CamelCase form."""

from __future__ import annotations

PYPROJECT = '''[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "cortex-{dist}"
version = "0.1.0"
description = "A Cortex-OS plugin: {name}"
requires-python = ">=3.11"
dependencies = ["cortex-os>=0.1", "grpcio>=1.85.1", "protobuf>=7.35"]

[project.optional-dependencies]
# codegen (`cortex plugin codegen`) and the tests (their fixtures, cortex.kernel.sdk.testing, come with cortex-os)
dev = ["grpcio-tools==1.85.1", "pytest>=8"]

# The plugin: its name is this entry point's name ("{name}"), not the distribution's.
[project.entry-points.cortex]
{name} = "{name}.plugin:plugin"

# Its manifest, read without importing it: what it provides ("PLUGIN.SERVICE")...
[project.entry-points."cortex.contracts"]
"{name}.{name}.v1.{Name}Service" = "{name}.plugin"

# ...and what it may call through the kernel (governance holds it to this list).
[project.entry-points."cortex.calls"]
"{name}.cortex.kernel.v1.KernelService" = "{name}.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
"*" = ["*.pyi", "*.binpb"]
'''

PROTO = '''// {Name}: a list of notes, kept by the {name} plugin.
syntax = "proto3";

package {name}.v1;

// {Name}Service keeps short notes in the order they were added.
service {Name}Service {{
  // Add keeps one note, in the caller's namespace, and returns its number.
  rpc Add(AddRequest) returns (AddResponse);
  // List returns the caller's notes, oldest first.
  rpc List(ListRequest) returns (ListResponse) {{
    option idempotency_level = NO_SIDE_EFFECTS;
  }}
}}

// AddRequest is a note to keep.
message AddRequest {{
  // The note's text, 1 to 1000 characters.
  string text = 1;
}}

// AddResponse says where it went.
message AddResponse {{
  // The note's number, from 1.
  uint32 number = 1;
}}

// ListRequest asks for every note.
message ListRequest {{}}

// ListResponse holds them.
message ListResponse {{
  repeated string notes = 1;
}}
'''

PLUGIN = '''"""The {name} plugin: serves {name}.v1.{Name}Service (see protos/{name}/v1/{name}.proto).

    [plugins.{name}]
    max_notes = 1000     # Add refuses more (RESOURCE_EXHAUSTED)
"""

from __future__ import annotations

from typing import Any

import grpc

from cortex.kernel import Health, check_settings, hookimpl

from .v1 import {name}_pb2, {name}_pb2_grpc

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for
SERVICE = {name}_pb2.DESCRIPTOR.services_by_name["{Name}Service"]
MAX_TEXT = 1000


class {Name}Servicer({name}_pb2_grpc.{Name}ServiceServicer):
    def __init__(self, plugin: {Name}Plugin):
        self.plugin = plugin

    async def Add(self, request, context):
        if not 0 < len(request.text) <= MAX_TEXT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"text must be 1 to {{MAX_TEXT}} characters")
        notes = self.plugin.notes.setdefault(context.namespace, [])  # each caller's own (the kernel says whose)
        if len(notes) >= self.plugin.max_notes:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{{self.plugin.max_notes}} notes kept already ([plugins.{name}] max_notes)")
        notes.append(request.text)
        return {name}_pb2.AddResponse(number=len(notes))

    async def List(self, request, context):
        return {name}_pb2.ListResponse(notes=self.plugin.notes.get(context.namespace, []))


class {Name}Plugin:
    def __init__(self) -> None:
        self.notes: dict[str, list[str]] = {{}}  # by namespace: a key holder never sees another's notes
        self.max_notes = 1000

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, {{"max_notes"}}, context.name)
        self.notes = {{}}  # one plugin object serves every kernel this process starts: begin afresh
        self.max_notes = int(config.get("max_notes", 1000))
        if self.max_notes < 1:
            raise ValueError("[plugins.{name}] max_notes must be at least 1")

    @hookimpl
    def cortex_register(self, registry) -> None:
        registry.add(SERVICE, {Name}Servicer(self))

    @hookimpl
    async def cortex_health(self) -> Health:
        return Health(True, f"{{sum(map(len, self.notes.values()))}} notes")


plugin = {Name}Plugin()
'''

TESTS = '''"""{name} against a real, governed kernel: the fixtures `cortex_kernel` and `cortex_key` come with
cortex-os (cortex.kernel.sdk.testing, a pytest plugin), no import needed."""

import grpc
import pytest

from {name}.v1 import {name}_pb2, {name}_pb2_grpc


@pytest.fixture
def cortex_config():
    return "[plugins.{name}]\\nmax_notes = 2\\n"


def test_add_then_list(cortex_kernel):
    stub = cortex_kernel.stub({name}_pb2_grpc.{Name}ServiceStub)
    assert stub.Add({name}_pb2.AddRequest(text="first"), timeout=5).number == 1
    assert stub.Add({name}_pb2.AddRequest(text="second"), timeout=5).number == 2
    assert list(stub.List({name}_pb2.ListRequest(), timeout=5).notes) == ["first", "second"]


def test_bad_input_gets_the_right_status(cortex_kernel):
    stub = cortex_kernel.stub({name}_pb2_grpc.{Name}ServiceStub)
    with pytest.raises(grpc.RpcError) as err:
        stub.Add({name}_pb2.AddRequest(text=""), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stub.Add({name}_pb2.AddRequest(text="a"), timeout=5)
    stub.Add({name}_pb2.AddRequest(text="b"), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        stub.Add({name}_pb2.AddRequest(text="c"), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_caller_without_a_credential_is_held_by_policy(cortex_kernel):
    """Governance is on: a stranger on loopback is `local`, which may not call new contracts
    until a policy rule allows it."""
    stub = cortex_kernel.stub({name}_pb2_grpc.{Name}ServiceStub, as_admin=False)
    with pytest.raises(grpc.RpcError) as err:
        stub.List({name}_pb2.ListRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_key_holder_may_call_only_what_its_key_allows(cortex_kernel, cortex_key):
    """`cortex_key` makes an API key (as `cortex keys create NAME --scope ...` does) and calls as its
    holder: the kernel sees key:reader, in a namespace of its own, and holds it to its scopes."""
    admin = cortex_kernel.stub({name}_pb2_grpc.{Name}ServiceStub)
    admin.Add({name}_pb2.AddRequest(text="the admin's"), timeout=5)
    reader = cortex_key("reader", scopes=["{name}.v1.{Name}Service/List"])
    stub = reader.stub({name}_pb2_grpc.{Name}ServiceStub)
    assert list(stub.List({name}_pb2.ListRequest(), timeout=5).notes) == []  # its own namespace's notes: none
    with pytest.raises(grpc.RpcError) as err:
        stub.Add({name}_pb2.AddRequest(text="not mine to add"), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "key:reader may call only {name}.v1.{Name}Service/List" in err.value.details()


def test_generated_code_matches_the_proto():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent  # `cortex plugin codegen --check`, as CI runs it
    check = [sys.executable, "-m", "cortex.kernel", "plugin", "codegen", "--check", "--root", str(root)]
    result = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
'''

README = '''# cortex-{dist}

A Cortex-OS plugin serving `{name}.v1.{Name}Service` (see `protos/{name}/v1/{name}.proto`).

```sh
pip install -e '.[dev]'           # into the environment cortex-os runs in
pytest                            # against a real, governed kernel (fixtures: cortex.kernel.sdk.testing)
cortex plugin codegen             # after editing the .proto (CI runs it with --check)
cortex plugins list               # {name} is there; `cortex serve` serves it
```

The plugin's name is its entry point's name in the `cortex` group (`{name}`); its manifest says
what it provides (`cortex.contracts`) and what it may call through the kernel (`cortex.calls`).
Its .proto comments become its MCP tool and HTTP/JSON descriptions.
'''

WORKFLOW = '''name: ci
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install -e '.[dev]'
      - run: cortex plugin codegen --check
      - run: pytest -q
'''

GITIGNORE = """__pycache__/
*.egg-info/
build/
dist/
.venv/
.pytest_cache/
"""

FILES = {
    "pyproject.toml": PYPROJECT,
    ".gitignore": GITIGNORE,
    "README.md": README,
    "protos/{name}/v1/{name}.proto": PROTO,
    "src/{name}/__init__.py": "",
    "src/{name}/plugin.py": PLUGIN,
    "tests/test_{name}.py": TESTS,
    ".github/workflows/ci.yml": WORKFLOW,
}
