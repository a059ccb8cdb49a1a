"""cortex.kernel.sdk.testing: pytest fixtures for plugin authors (a pytest plugin: entry point
`pytest11`, active wherever cortex-os is installed; also importable as `cortex.kernel.testing`).

    def test_add_then_list(cortex_kernel):
        stub = cortex_kernel.stub(bookmarks_pb2_grpc.BookmarkServiceStub)
        stub.Add(bookmarks_pb2.AddRequest(url="https://example.org"), timeout=5)

`cortex_kernel` is a real kernel, in this process, on a free loopback port, with every installed
plugin (yours too, once `pip install -e .` made its entry points) and governance on, as a user
runs it. Shape it by overriding fixtures of these names in your conftest.py:

    cortex_config    cortex.toml text for the kernel ("" by default)
    cortex_plugins   [(name, plugin_object)] registered for the test, besides the installed ones

and call it as the CLI does (`stub(Stub)` and `channel()` send the admin token) or as a stranger
(`channel(as_admin=False)`: the kernel sees `local`). To call as the holder of an API key, ask for
`cortex_key` (it starts `cortex_kernel`):

    def test_a_reader_may_not_add(cortex_key):
        reader = cortex_key("reader", scopes=["bookmarks.v1.BookmarkService/List"])
        stub = reader.stub(bookmarks_pb2_grpc.BookmarkServiceStub)   # or BookmarkServiceStub(reader.channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Add(bookmarks_pb2.AddRequest(url="https://example.org"), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

`cortex_key(NAME, scopes)` makes API key NAME as `cortex keys create NAME --scope ...` does (scopes
are "package.Service/Method" globs; none: every method) and returns a `KeyHolder`: `principal`
("key:NAME", what the kernel's policy and your servicer's `context.principal` see), `namespace`
(whose data its calls touch: "key:NAME", apart from the owner's `default`), `token`, `channel` and
`stub(Stub)`. `cortex_serve` starts `cortex serve` in a subprocess for end-to-end tests (a kill, a
restart).

Why not pytest-grpc: its fixtures (`grpc_add_to_server`, `grpc_servicer`, `grpc_stub_cls`) serve a
servicer on a bare grpc server, so a plugin's calls through `context.channel`, its policy
decisions and its audit entries never happen there, and 0.8.0 is synchronous while plugin
servicers are grpc.aio. The fixtures here have the same shape (you name the plugin, you get a
stub) with the kernel in between.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections import namedtuple
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest

from ..security.credentials import KeyStore, namespace_of, read_admin_token

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "FREE_BRIDGE_PORTS", "Bearer", "KeyHolder", "RunningKernel", "ServeProcess", "authenticated", "cortex_config",
    "cortex_data_dir", "cortex_kernel", "cortex_key", "cortex_plugins", "cortex_serve", "kernel_config",
]

# bridges on free ports, so that tests never fight over 50080/50082
FREE_BRIDGE_PORTS = {"CORTEX_PLUGINS__HTTP__LISTEN": "127.0.0.1:0", "CORTEX_PLUGINS__A2A__LISTEN": "127.0.0.1:0"}

_T = TypeVar("_T")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Details = namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"))


class _CallDetails(_Details, grpc.ClientCallDetails):
    pass


class Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends `authorization: Bearer <token>` with every call, as `cortex` does with the admin token."""

    def __init__(self, token: str):
        self.metadata = (("authorization", f"Bearer {token}"),)

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(details.method, details.timeout, (*(details.metadata or ()), *self.metadata),
                            details.credentials, getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(
        self, continuation: Callable[[grpc.ClientCallDetails, _Request], _Response], details: grpc.ClientCallDetails, request: _Request,
    ) -> _Response:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[[grpc.ClientCallDetails, _Request], _Response], details: grpc.ClientCallDetails, request: _Request,
    ) -> _Response:
        return continuation(self._details(details), request)


def authenticated(channel: grpc.Channel, token: str) -> grpc.Channel:
    return grpc.intercept_channel(channel, Bearer(token)) if token else channel


class KeyHolder:
    """The holder of an API key of a test kernel (`cortex_key`): calls on `channel` (or through
    `stub(Stub)`) carry its key, so the kernel sees `principal` ("key:NAME") with the key's scopes,
    and the data they touch is `namespace`'s."""

    def __init__(self, principal: str, namespace: str, token: str, channel: grpc.Channel):
        self.principal, self.namespace, self.token, self.channel = principal, namespace, token, channel

    def stub(self, stub_class: type) -> Any:
        return stub_class(self.channel)

    def __repr__(self) -> str:
        return f"KeyHolder({self.principal!r}, namespace={self.namespace!r})"


class RunningKernel:
    """A kernel serving on 127.0.0.1:<free port> from a background thread's event loop."""

    def __init__(self, config: Any, extra_plugins: list[tuple[str, Any]] | None = None):
        from ..runtime import Kernel

        self.loop = asyncio.new_event_loop()
        self.kernel = Kernel(config, extra_plugins)
        self.target = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._channels: list[grpc.Channel] = []

    @property
    def data_dir(self) -> Path:
        return self.kernel.config.data_dir

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 30) -> _T:
        """Run a coroutine on the kernel's loop (e.g. `kernel.refresh_health()`)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> str:
        self._thread.start()
        self.run(self.kernel.start())
        self.target = self.kernel.address
        return self.target

    def channel(self, as_admin: bool = True, key: str = "") -> grpc.Channel:
        """A channel to it: as `admin` (its admin token), as a key's holder (`key`, from `key()`:
        the kernel sees `key:NAME` with its scopes), or with no credential (`local`)."""
        channel = grpc.insecure_channel(self.target)
        self._channels.append(channel)
        return authenticated(channel, key or (read_admin_token(self.data_dir) if as_admin else ""))

    def stub(self, stub_class: type, as_admin: bool = True, key: str = "") -> Any:
        return stub_class(self.channel(as_admin, key))

    def key(self, name: str, scopes: Sequence[str] = ()) -> str:
        """Make API key NAME (as `cortex keys create NAME --scope ...` does) and return it: call as
        its holder with `stub(Stub, key=...)`; `scopes` are "package.Service/Method" globs (none: all)."""
        return KeyStore(self.data_dir).create(name, [scopes] if isinstance(scopes, str) else list(scopes), None)

    def key_holder(self, name: str, scopes: Sequence[str] = ()) -> KeyHolder:
        """Make API key NAME with `scopes` (as `key()`) and return its holder: a channel to this
        kernel authenticated with it, and who the kernel takes its holder for."""
        token = self.key(name, scopes)
        principal = f"key:{name}"
        namespace = namespace_of(principal, self.kernel.config.kernel_section.owners)
        return KeyHolder(principal, namespace, token, self.channel(key=token))

    def plugin(self, name: str) -> Any:
        """A loaded plugin's object (its record has state and error too: `kernel.host.records`)."""
        return self.kernel.host.records[name].obj

    def stop(self, grace: float = 1.0) -> None:
        for channel in self._channels:
            channel.close()
        if not self._thread.is_alive():
            return
        try:
            self.run(self.kernel.stop(grace))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def kernel_config(path: Path, text: str, data_dir: Path, env: dict[str, str] | None = None, governance: bool = True) -> Config:
    """A Config from cortex.toml `text`, for a test kernel in `data_dir` on a free port."""
    from ..config import load_config

    path.write_text(textwrap.dedent(text), encoding="utf-8")
    environment = {"CORTEX_DATA_DIR": str(data_dir), "CORTEX_LISTEN": "127.0.0.1:0", **FREE_BRIDGE_PORTS, **(env or {})}
    config = load_config(path, env=environment)
    if not governance:  # on purpose, for tests of something else: ungoverned, and said so
        ungoverned = {"plugins.disabled": [*config.plugins.disabled, "governance"], "kernel.required_plugins": []}
        config.override(ungoverned, origin="kernel_config(governance=False)")
    return config


class ServeProcess:
    """`cortex serve` in a subprocess; `target` is read from its 'serving on' line."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path | None = None, prefix: Sequence[str] = (),
                 python: str = sys.executable):
        # `prefix` runs it elsewhere, e.g. `ip netns exec HOST` (an exec: signals reach the kernel);
        # `python` in another environment (a live install goes into the kernel's own)
        self.proc = subprocess.Popen(
            [*prefix, python, "-m", "cortex.kernel", "serve", "--listen", "127.0.0.1:0", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        )
        self.target = ""
        self.data_dir = Path(env.get("CORTEX_DATA_DIR", os.path.expanduser("~/.cortex"))).resolve()
        # drain both pipes as they come, each on its own thread: a full pipe would block the
        # kernel's next write, and a blocking read here could not honour wait_ready's deadline
        self._stderr: list[str] = []
        self._ready = threading.Event()
        self._drain = threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr or ()), daemon=True)
        self._drain.start()
        self._watch = threading.Thread(target=self._read_stdout, daemon=True)
        self._watch.start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout or ():  # (both pipes are there: PIPE above)
            match = re.search(r"serving on (\S+)", line)
            if match and not self._ready.is_set():
                self.target = match.group(1)
                self._ready.set()
        self._ready.set()  # the process ended: wake wait_ready either way

    def stderr(self) -> str:
        return "".join(self._stderr)

    def wait_ready(self, timeout: float = 30) -> str:
        if self._ready.wait(timeout) and self.target:
            return self.target
        exited = self.proc.poll()
        why = f"exited with {exited}" if exited is not None else f"did not start within {timeout:g}s"
        self.proc.kill()
        self.proc.wait()
        self._drain.join(5)
        raise AssertionError(f"cortex serve {why}: {self.stderr()}")

    def channel(self, as_admin: bool = True) -> grpc.Channel:
        return authenticated(grpc.insecure_channel(self.target), read_admin_token(self.data_dir) if as_admin else "")

    def stop(self, sig: int = 15, timeout: float = 20) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drain.join(5)
        self._watch.join(5)
        return self.proc.returncode, self.stderr()


# -- the fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def cortex_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "cortex-data"


@pytest.fixture
def cortex_config() -> str:
    """cortex.toml text for `cortex_kernel`; override it in your conftest.py."""
    return ""


@pytest.fixture
def cortex_plugins() -> list[tuple[str, Any]]:
    """[(name, plugin object)] registered for the test besides the installed plugins; override it."""
    return []


@pytest.fixture
def cortex_kernel(
    tmp_path: Path, cortex_data_dir: Path, cortex_config: str, cortex_plugins: list[tuple[str, Any]],
) -> Iterator[RunningKernel]:
    """A governed kernel, in this process, with the installed plugins and `cortex_plugins`."""
    running = RunningKernel(kernel_config(tmp_path / "cortex.toml", cortex_config, cortex_data_dir), cortex_plugins)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def cortex_key(cortex_kernel: RunningKernel) -> Callable[..., KeyHolder]:
    """cortex_key(NAME, scopes=()) -> a KeyHolder: API key NAME made on `cortex_kernel` (as `cortex
    keys create NAME --scope ...` does; scopes are "package.Service/Method" globs, none: every
    method), with a channel that calls as its holder (`key:NAME`, in namespace `key:NAME`)."""
    return cortex_kernel.key_holder


@pytest.fixture
def cortex_serve(cortex_data_dir: Path) -> Iterator[Callable[..., ServeProcess]]:
    """cortex_serve(*args, env={}) -> a started ServeProcess (`cortex serve` in a subprocess on
    `cortex_data_dir`), stopped after the test."""
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServeProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
        environment.update({"CORTEX_DATA_DIR": str(cortex_data_dir), **FREE_BRIDGE_PORTS, **(env or {})})
        process = ServeProcess(*args, env=environment)
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()
