"""Shared fixtures: real kernels on loopback, in this process (a thread with its own event loop) or
as `cortex serve` subprocesses, and the example plugin pip-installed into the test environment."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cortex-echo"


def _example_version() -> str:
    text = (EXAMPLE / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.MULTILINE).group(1)


def pytest_sessionstart(session: pytest.Session) -> None:
    """The issue's user story: a third-party plugin is pip-installed, and the kernel finds it."""
    from cortex.kernel.logs import configure_logging

    # in-process kernels log as `cortex serve` would, through `logging`, so that pytest keeps each
    # test's lines with the test (shown when it fails) instead of between the progress dots
    configure_logging("debug", "console", to_stdlib=True)
    try:
        installed = metadata.version("cortex-echo")
    except metadata.PackageNotFoundError:
        installed = None
    if installed != _example_version():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(EXAMPLE)],
            check=True,
        )
        metadata.distributions.cache_clear() if hasattr(metadata.distributions, "cache_clear") else None


@pytest.fixture(scope="session")
def counter_pb2(tmp_path_factory):
    """The test-only CounterService contract (tests/protos/counter.proto), compiled."""
    from .counter_contract import compile_counter

    return compile_counter(tmp_path_factory)


# the HTTP API and the A2A endpoint listen on fixed loopback ports by default; kernels under test
# take free ones, so that they never collide (a test that needs the address sets its own)
BRIDGES_ON_FREE_PORTS = {"CORTEX_PLUGINS__HTTP__LISTEN": "127.0.0.1:0", "CORTEX_PLUGINS__A2A__LISTEN": "127.0.0.1:0"}


def plugin_of(kt, name: str):
    """The plugin object `name` of an in-process kernel (e.g. to read the address it bound)."""
    return kt.kernel.host.records[name].obj


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


class KernelThread:
    """A Kernel serving on 127.0.0.1:<free port> in a background thread's event loop."""

    def __init__(self, config, extra_plugins: list[tuple[str, Any]] | None = None):
        from cortex.kernel.runtime import Kernel

        self.loop = asyncio.new_event_loop()
        self.kernel = Kernel(config, extra_plugins)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> str:
        self._thread.start()
        self.run(self.kernel.start())
        return self.kernel.address

    def stop(self, grace: float = 1.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.run(self.kernel.stop(grace))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    """Wait until `condition()` holds (polling), or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


class FakeClock:
    """A monotonic clock the test moves: hand it to a CircuitBreaker or RateLimiter (`.clock`)
    and `advance()` it, instead of sleeping through a cool-down."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def openai_server(monkeypatch):
    """An OpenAI-compatible endpoint on loopback (tests/models/fake_servers.py)."""
    from .models.fake_servers import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # a "remote" endpoint needs a key
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def ollama_server():
    """An Ollama endpoint on loopback (tests/models/fake_servers.py)."""
    from .models.fake_servers import FakeOllama

    with FakeOllama() as server:
        yield server


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start_kernel(tmp_path: Path, data_dir: Path) -> Iterator:
    """start_kernel(config_text="", plugins=[(name, obj)], env={}, governance=False) -> (target, KernelThread)."""
    from cortex.kernel.config import load_config

    started: list[KernelThread] = []

    def start(config_text: str = "", plugins=None, env: dict[str, str] | None = None, governance: bool = False):
        path = write_config(tmp_path / f"cortex-{len(started)}.toml", config_text)
        environment = {"CORTEX_DATA_DIR": str(data_dir), "CORTEX_LISTEN": "127.0.0.1:0", **BRIDGES_ON_FREE_PORTS, **(env or {})}
        config = load_config(path, env=environment)
        if not governance:  # the kernel's own tests judge the kernel alone: ungoverned on purpose
            config.data["plugins"]["disabled"].append("governance")
            config.data["kernel"]["required_plugins"] = []
        kt = KernelThread(config, plugins)
        started.append(kt)
        target = kt.start()
        KERNEL_DATA_DIRS[target] = config.data_dir
        return target, kt

    yield start
    for kt in reversed(started):
        kt.stop()


# where each kernel a test started keeps its data (its admin token), by address
KERNEL_DATA_DIRS: dict[str, Path] = {}


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends a bearer token with every call, as `cortex` does with the admin token."""

    def __init__(self, token: str):
        self.metadata = (("authorization", f"Bearer {token}"),)

    def _details(self, details):
        return grpc_client_call_details(details, (*(details.metadata or ()), *self.metadata))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


def grpc_client_call_details(details, metadata):
    from collections import namedtuple

    fields = ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    Details = namedtuple("Details", fields)  # grpc wants an object with these attributes

    class _Details(Details, grpc.ClientCallDetails):
        pass

    return _Details(details.method, details.timeout, metadata, details.credentials,
                    getattr(details, "wait_for_ready", None), getattr(details, "compression", None))


def admin_token(target: str) -> str:
    from cortex.kernel.credentials import read_admin_token

    folder = KERNEL_DATA_DIRS.get(target)
    return read_admin_token(folder) if folder is not None else ""


@pytest.fixture
def channel_to():
    """channel_to(target, as_admin=True) -> a grpc channel closed after the test. As admin (the
    kernel's admin token, as the `cortex` CLI calls) unless as_admin=False: then the kernel sees
    the caller as `local`."""
    channels: list[grpc.Channel] = []

    def open_channel(target: str, as_admin: bool = True, **options: Any) -> grpc.Channel:
        channel = grpc.insecure_channel(target, options=list(options.items()))
        channels.append(channel)
        token = admin_token(target) if as_admin else ""
        return grpc.intercept_channel(channel, _Bearer(token)) if token else channel

    yield open_channel
    for channel in channels:
        channel.close()


def cortex_env(data_dir: Path, extra_path: list[Path] | None = None, **env: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
    environment.update({"CORTEX_DATA_DIR": str(data_dir), "CORTEX_LOG_FORMAT": "json", **BRIDGES_ON_FREE_PORTS, **env})
    if extra_path:
        environment["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), environment.get("PYTHONPATH", "")])
    return environment


def run_cli(*args: str, env: dict[str, str], timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cortex.kernel", *args],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


class ServeProcess:
    """`cortex serve` in a subprocess; `target` is read from its 'serving on' line."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cortex.kernel", "serve", "--listen", "127.0.0.1:0", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        )
        self.target = ""
        self.data_dir = env.get("CORTEX_DATA_DIR", os.path.expanduser("~/.cortex"))
        # drain both pipes as they come, each on its own thread: a full pipe would block the
        # kernel's next write, and a blocking read here could not honour wait_ready's deadline
        self._stderr: list[str] = []
        self._ready = threading.Event()
        self._drain = threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True)
        self._drain.start()
        self._watch = threading.Thread(target=self._read_stdout, daemon=True)
        self._watch.start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            match = re.search(r"serving on (\S+)", line)
            if match and not self._ready.is_set():
                self.target = match.group(1)
                KERNEL_DATA_DIRS[self.target] = Path(self.data_dir).resolve()
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


@pytest.fixture
def serve_process() -> Iterator:
    """serve_process(*args, env=...) -> a started ServeProcess, stopped after the test."""
    processes: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str], cwd: Path | None = None, ready: bool = True) -> ServeProcess:
        proc = ServeProcess(*args, env=env, cwd=cwd)
        processes.append(proc)
        if ready:
            proc.wait_ready()
        return proc

    yield start
    for proc in processes:
        proc.stop()


def make_dist(root: Path, name: str, module_source: str, entry_points: str) -> Path:
    """A minimal installed distribution (module + .dist-info) under `root`, as pip would leave it;
    put `root` on PYTHONPATH and importlib.metadata finds its entry points."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return root


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
