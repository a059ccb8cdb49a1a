"""A plugin calling another contract, as docs/plugins/README.md tells an author to: the page's worked
example (a reading list that stores a memory when a book is finished) built from the page as
written and its own tests run; then what the page says of nested calls, each case on a real,
governed kernel: whose rights and namespace a call made while serving a caller has (and one on the
plugin's own account, or `for_own_work()`), the error naming the `cortex.calls` entry to add, and
`context.plugin_dir`."""

from __future__ import annotations

import re
import subprocess
import sys

import grpc
import pytest

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
from cortex.kernel import hookimpl
from cortex.kernel.sdk.testing import RunningKernel, kernel_config
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import ROOT, cortex_env, make_dist, pip_install, run_cli

README = ROOT / "docs" / "plugins" / "README.md"
CALLS_TABLE = re.compile(r'\[project\.entry-points\."cortex\.calls"\]\n(?:"[^\n]*\n)+')


def worked_example() -> tuple[dict[str, str], int]:
    """The README's worked example: {path: text} of its code blocks whose first line names a file,
    and how many tests it says pass."""
    text = README.read_text()
    part = text[text.index("### A worked example") : text.index("### Whose call it is")]
    files = {}
    for body in re.findall(r"```\w+\n(.*?)```", part, re.DOTALL):
        first, _, rest = body.partition("\n")
        named = re.fullmatch(r"(?:#|//) ([\w/.-]+\.\w+)", first)
        if named:
            files[named.group(1)] = rest
    passed = re.search(r"pytest +# (\d+) passed", part)
    assert passed, "the worked example says how many tests pass"
    return files, int(passed.group(1))


@pytest.fixture(scope="module")
def reading(tmp_path_factory):
    """`cortex plugin new reading`, its files replaced with the README's, generated and installed
    (as pip would) into a folder of its own."""
    files, passed = worked_example()
    assert set(files) == {"protos/reading/v1/reading.proto", "src/reading/plugin.py", "pyproject.toml", "tests/test_reading.py"}
    root = tmp_path_factory.mktemp("reading")
    made = run_cli("plugin", "new", "reading", "--dir", str(root), env=cortex_env(root / "unused"))
    assert made.returncode == 0, made.stderr
    package, site = root / "cortex-reading", root / "site"
    for path, text in files.items():
        if path == "pyproject.toml":  # the template's cortex.calls table, replaced by the page's
            pyproject = package / path
            generated = pyproject.read_text()
            (table,) = CALLS_TABLE.finditer(generated)
            pyproject.write_text(generated[: table.start()] + text + generated[table.end() :])
        else:
            (package / path).write_text(text)
    generated = run_cli("plugin", "codegen", "--root", str(package), env=cortex_env(root / "unused"), timeout=120)
    assert generated.returncode == 0, generated.stderr
    pip_install("--target", str(site), str(package))
    return package, site, passed


def test_the_worked_example_runs_as_the_page_writes_it(reading):
    package, site, passed = reading
    entry_points = next(site.glob("cortex_reading-*.dist-info")).joinpath("entry_points.txt").read_text()
    assert "reading.cortex.memories.v1.MemoryService = reading.plugin" in entry_points
    assert "KernelService" not in entry_points  # the template's entry went with its table
    env = cortex_env(package / "no-data", PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=package, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"{passed} passed" in done.stdout


# -- whose call a nested call is -------------------------------------------------------------------
# A third party's plugin, installed as pip would leave it, that provides cortex_echo's EchoService
# (the echo plugin is disabled) and whose Echo makes the nested call its message names.
NESTED = '''
import asyncio

import grpc

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
from cortex.kernel import hookimpl
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc


async def store(channel, text, namespace=""):
    """The namespace the memory went to, or the refusal."""
    try:
        stub = memories_pb2_grpc.MemoryServiceStub(channel)
        reply = await stub.Store(memories_pb2.StoreRequest(text=text, namespace=namespace), timeout=10)
        return reply.memory.namespace
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"


class Servicer(echo_pb2_grpc.EchoServiceServicer):
    def __init__(self, plugin):
        self.plugin = plugin

    async def Echo(self, request, context):
        channel, way = self.plugin.channel, request.message
        if way == "delegated":
            result = await store(channel, "stored while serving")
        elif way == "task":
            result = await asyncio.create_task(store(channel, "stored by a task started while serving"))
        elif way == "own work":
            result = await store(channel.for_own_work(), "stored as the plugin's own work")
        elif way == "into default":
            result = await store(channel, "stored into the owner's namespace", "default")
        else:  # a contract the manifest does not list
            try:
                await kernel_pb2_grpc.KernelServiceStub(channel).GetInfo(kernel_pb2.GetInfoRequest(), timeout=10)
                result = "OK"
            except grpc.RpcError as exc:
                result = f"{exc.code().name}: {exc.details()}"
        return echo_pb2.EchoResponse(message=result, served_by=f"{context.principal} in {context.namespace}")

    async def EchoStream(self, request, context):
        yield await self.Echo(request, context)

    async def Now(self, request, context):
        return echo_pb2.NowResponse()


class Plugin:
    channel = None
    at_start = ""

    @hookimpl
    def cortex_configure(self, config, context):
        self.channel = context.channel

    @hookimpl
    def cortex_register(self, registry):
        registry.add("cortex_echo.v1.EchoService", Servicer(self))

    @hookimpl
    async def cortex_start(self, context):
        self.at_start = await store(context.channel, "stored at start")


plugin = Plugin()
'''
stores: list[tuple[str, str, str]] = []


class StoreWatcher:
    """Sees every Store as the router judged it: (principal, actor, origin); Keeper's (below) aside."""

    @hookimpl
    def cortex_observe(self, call, outcome):
        if call.method.path == "/cortex.memories.v1.MemoryService/Store" and call.principal != "plugin:keeper":
            stores.append((call.principal, call.actor, call.origin))


@pytest.fixture(scope="module")
def nested_site(tmp_path_factory):
    return make_dist(tmp_path_factory.mktemp("nested"), "nested_calls", NESTED, """
        [cortex]
        nested = nested_calls:plugin
        [cortex.contracts]
        nested.cortex_echo.v1.EchoService = nested_calls:plugin
        [cortex.calls]
        nested.cortex.memories.v1.MemoryService = nested_calls:plugin
    """)


@pytest.fixture
def cortex_config(request):
    if "nested" in request.fixturenames:
        request.getfixturevalue("nested")  # installed before the kernel starts
    return '[plugins]\ndisabled = ["echo", "a2a", "mcp", "http"]\n'


@pytest.fixture
def nested(nested_site, monkeypatch):
    monkeypatch.syspath_prepend(str(nested_site))
    stores.clear()


@pytest.fixture
def cortex_plugins():
    return [("watcher", StoreWatcher()), ("keeper", Keeper())]


def test_a_nested_call_runs_as_the_caller_bounded_by_the_manifest(nested, cortex_kernel, cortex_key):
    def echo(stub, way: str) -> tuple[str, str]:
        reply = stub.Echo(echo_pb2.EchoRequest(message=way), timeout=30)
        return reply.message, reply.served_by

    # on the plugin's own account (a hook): plugin:nested, in the owner's namespace
    assert cortex_kernel.plugin("nested").at_start == "default"
    assert stores[0] == ("plugin:nested", "", "plugin:nested")
    stores.clear()
    admin = cortex_kernel.stub(echo_pb2_grpc.EchoServiceStub)
    assert echo(admin, "delegated") == ("default", "admin in default")
    alice = cortex_key("alice")  # a key without scopes: every method
    as_alice = alice.stub(echo_pb2_grpc.EchoServiceStub)
    assert echo(as_alice, "delegated") == ("key:alice", "key:alice in key:alice")
    assert echo(as_alice, "task") == ("key:alice", "key:alice in key:alice")
    assert echo(as_alice, "own work") == ("key:alice", "key:alice in key:alice")
    assert stores == [("admin", "plugin:nested", "admin"), ("key:alice", "plugin:nested", "key:alice"),
                      ("key:alice", "plugin:nested", "key:alice"), ("plugin:nested", "", "key:alice")]
    # the memory namespace rule holds through the plugin: alice may not write the owner's
    refused, _ = echo(as_alice, "into default")
    assert refused.startswith("PERMISSION_DENIED: key:alice may not write namespace 'default'")
    # the manifest bounds what the caller's rights would allow: alice may call GetInfo herself...
    assert alice.stub(kernel_pb2_grpc.KernelServiceStub).GetInfo(kernel_pb2.GetInfoRequest(), timeout=5).version
    refused, _ = echo(as_alice, "outside the manifest")  # ...but not through a plugin that did not declare it
    assert refused.startswith("PERMISSION_DENIED: /cortex.kernel.v1.KernelService/GetInfo denied: governance: "
                              "builtin/plugin-manifest: plugin 'nested' may not call cortex.kernel.v1.KernelService")
    # the caller's scopes bound it too; only the plugin's own work is not held to them
    bob = cortex_key("bob", scopes=["cortex_echo.v1.EchoService/*"])
    as_bob = bob.stub(echo_pb2_grpc.EchoServiceStub)
    refused, _ = echo(as_bob, "delegated")
    assert refused == ("PERMISSION_DENIED: key:bob (through plugin:nested) may call only cortex_echo.v1.EchoService/* "
                       "(its key's scopes), not cortex.memories.v1.MemoryService/Store; ask the admin for a key with that scope")
    assert echo(as_bob, "own work") == ("key:bob", "key:bob in key:bob")
    # what alice stored through the plugin is hers: she lists it, the owner's listing does not hold it
    hers = alice.stub(memories_pb2_grpc.MemoryServiceStub).List(memories_pb2.ListRequest(), timeout=5).memories
    assert {m.text for m in hers} == {"stored while serving", "stored by a task started while serving",
                                      "stored as the plugin's own work"}
    owners = cortex_kernel.stub(memories_pb2_grpc.MemoryServiceStub).List(memories_pb2.ListRequest(), timeout=5).memories
    assert {m.namespace for m in owners} == {"default"}


# -- the manifest's error, and the plugin's folder -------------------------------------------------
class Keeper:
    """An in-process plugin (cortex_plugins): no distribution, so no manifest."""

    context = None
    refused: grpc.RpcError | None = None

    @hookimpl
    def cortex_configure(self, config, context):
        self.context = context

    @hookimpl
    async def cortex_start(self, context):
        try:
            await memories_pb2_grpc.MemoryServiceStub(context.channel).Store(memories_pb2.StoreRequest(text="x"), timeout=10)
        except grpc.RpcError as exc:
            self.refused = exc


def test_a_call_the_manifest_does_not_declare_is_refused_naming_the_entry_to_add(cortex_kernel):
    refused = cortex_kernel.plugin("keeper").refused
    assert refused is not None and refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith(
        "/cortex.memories.v1.MemoryService/Store denied: governance: builtin/plugin-manifest: plugin 'keeper' may not "
        "call cortex.memories.v1.MemoryService: its manifest declares nothing. To allow it, add "
        '"keeper.cortex.memories.v1.MemoryService" = "<its plugin module>" to [project.entry-points."cortex.calls"] '
        "in the plugin's pyproject.toml"
    )


def test_plugin_dir_is_the_plugins_own_private_folder_kept_across_restarts(cortex_kernel, tmp_path):
    context = cortex_kernel.plugin("keeper").context
    assert context.data_dir == cortex_kernel.data_dir and context.data_dir.stat().st_mode & 0o777 == 0o700
    folder = cortex_kernel.data_dir / "plugins" / "keeper"
    assert not folder.exists()  # made when the plugin first asks for it, not before
    assert context.plugin_dir == folder and folder.stat().st_mode & 0o777 == 0o700
    (folder / "state.json").write_text("{}")
    cortex_kernel.stop()
    again = RunningKernel(kernel_config(tmp_path / "again.toml", "", cortex_kernel.data_dir), [("keeper", Keeper())])
    again.start()
    try:
        assert (again.plugin("keeper").context.plugin_dir / "state.json").read_text() == "{}"
    finally:
        again.stop()
