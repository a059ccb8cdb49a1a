"""`scripts/run.sh` (the README's first command) as a user runs it, end to end, with ports and a data
dir of their own: the demo calls and prints where this kernel serves (not fixed ports another
process may hold), skips what the configuration turns off, and however run.sh ends, no `cortex
serve` is left behind.

Each run is setup.sh (on the set-up venv: tens of seconds) and a real kernel with the small local
model, so these are slow tests. run.sh pip-installs examples/cortex-echo into .venv: the version
that tests/conftest.py's pytest_sessionstart installs already, so what other tests discover does
not change (asserted below)."""

from __future__ import annotations

import http.server
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from .conftest import cortex_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
RUN_SH = ROOT / "scripts" / "run.sh"
READY = "Ctrl-C to stop."
# bash cannot trap a signal that was ignored when it started, and a CI runner may start pytest with
# SIGINT ignored (which its children inherit): run.sh starts with Ctrl-C's default, as in a terminal
WITH_DEFAULT_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def example_version() -> str:
    text = (ROOT / "examples" / "cortex-echo" / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.MULTILINE).group(1)


def installed_example_version() -> str:
    code = "from importlib.metadata import version; print(version('cortex-echo'))"
    return subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code],
                          capture_output=True, text=True, check=True).stdout.strip()


class Decoy(http.server.ThreadingHTTPServer):
    """Another program on the HTTP API's default port: it answers 500 to everything, and counts."""

    def __init__(self, port: int):
        self.requests: list[str] = []
        decoy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                decoy.requests.append(f"{self.command} {self.path}")
                self.send_error(500, "the decoy on the default port")

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = answer

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)


class RunSh:
    """scripts/run.sh started as a user would (from the repository root), its output collected
    line by line, and the pids of its `cortex serve` recorded while it runs."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WITH_DEFAULT_SIGINT, str(RUN_SH)], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.kernels: set[int] = set()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def _note_kernels(self) -> None:
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            try:
                command = child.cmdline()
            except psutil.Error:
                continue
            if "serve" in command and any("cortex" in part for part in command):
                self.kernels.add(child.pid)

    def wait_for(self, text: str, seconds: float) -> None:
        """Until `text` is printed; fails if run.sh ends first or the deadline passes."""
        deadline = time.monotonic() + seconds
        while text not in self.output:
            self._note_kernels()
            assert self.proc.poll() is None, f"run.sh ended ({self.proc.returncode}) before {text!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {seconds:.0f}s:\n{self.output}"
            time.sleep(0.2)
        self._note_kernels()

    def wait_exit(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._note_kernels()
            time.sleep(0.2)
        assert self.proc.poll() is not None, f"run.sh still running {seconds:.0f}s on:\n{self.output}"
        self.reader.join(timeout=10)
        return self.proc.returncode

    def kill_all(self) -> None:
        """After the test, pass or fail: nothing of it keeps running."""
        for pid in [self.proc.pid, *self.kernels]:
            if alive(pid):
                psutil.Process(pid).kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def run_sh():
    started: list[RunSh] = []

    def start(env: dict[str, str]) -> RunSh:
        started.append(RunSh(env))
        return started[-1]

    yield start
    for run in started:
        run.kill_all()


@pytest.fixture
def user(tmp_path: Path):
    """A user's environment: gRPC, HTTP/JSON and A2A on free loopback ports, a data dir of their
    own, and a HOME of the test's (so that ~/.cortex is never touched, nor read)."""
    home = tmp_path / "home"
    home.mkdir()
    ports = {"grpc": free_port(), "http": free_port(), "a2a": free_port()}
    data_dir = tmp_path / "data"
    env = cortex_env(
        data_dir, HOME=str(home), TMPDIR=str(tmp_path),  # run.sh's kernel log goes to $TMPDIR
        CORTEX_LISTEN=f"127.0.0.1:{ports['grpc']}",
        CORTEX_PLUGINS__HTTP__LISTEN=f"127.0.0.1:{ports['http']}",
        CORTEX_PLUGINS__A2A__LISTEN=f"127.0.0.1:{ports['a2a']}",
    )
    env.pop("CORTEX_LOG_FORMAT", None)  # run.sh's own choice, as for a user
    return env, ports, data_dir, home


@pytest.fixture
def decoy():
    """A 500-answering server on 127.0.0.1:50080 when that port is free (else something holds it
    already, which the demo must not call either: it cannot be checked from here)."""
    try:
        server = Decoy(50080)
    except OSError:
        yield None
        return
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def assert_stopped(run: RunSh, ports: dict[str, int]) -> None:
    """The kernel run.sh started (seen in its process tree) is gone, and so are its listeners."""
    assert run.kernels, f"no `cortex serve` was seen under run.sh:\n{run.output}"
    deadline = time.monotonic() + 5  # a process that exits is reaped a moment later
    while any(alive(pid) for pid in run.kernels) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in run.kernels if alive(pid)]
    assert not left, f"`cortex serve` still running after run.sh ended: pids {left}"
    for name, port in ports.items():
        assert not listening(port), f"something still listens on the {name} port {port}"


def test_run_sh_demo_uses_the_configured_ports_and_data_dir_and_ctrl_c_stops_the_kernel(run_sh, user, decoy):
    env, ports, data_dir, home = user
    run = run_sh(env)
    run.wait_for(READY, seconds=420)
    out = run.output
    http = f"127.0.0.1:{ports['http']}"

    # the demo's HTTP search and console check reached this kernel, and said so
    assert f"$ POST http://{http}/v1/cortex.memories.v1.MemoryService/Search" in out, out
    assert "'Garden project budget is 300 euros for soil and seeds.' (similarity" in out, out
    assert f"OpenAPI at http://{http}/openapi.json" in out, out
    assert f"open http://{http}/console/ in a browser: 2 memories under Memories" in out, out
    assert f"  http://{http}/console/traces/" in out, out
    # the addresses and paths it printed are this user's
    assert f"sign in with the admin token: {data_dir / 'admin.token'}" in out, out
    assert (data_dir / "admin.token").is_file()
    final = out[out.rindex("cortex is serving on"):]
    assert final.startswith(f"cortex is serving on 127.0.0.1:{ports['grpc']} (data dir {data_dir}, logs: "), final
    assert f"the console at http://{http}/console/, HTTP/JSON on {http}, A2A on 127.0.0.1:{ports['a2a']}," in final, final
    for default in ("127.0.0.1:50080", "127.0.0.1:50082", "127.0.0.1:50051", "~/.cortex"):
        assert default not in out, f"{default} printed:\n{out}"
    if decoy is not None:
        assert decoy.requests == [], f"the demo called the default port 50080: {decoy.requests}"
    assert not (home / ".cortex").exists()
    # the example plugin run.sh installed is the version the test session installed (conftest.py)
    assert installed_example_version() == example_version()

    # Ctrl-C: run.sh stops the kernel gracefully (it logs that it stopped), and exits as interrupted
    log = Path(re.search(r"logs: (\S+)\);", final).group(1))
    assert run.kernels and all(alive(pid) for pid in run.kernels)
    run.proc.send_signal(signal.SIGINT)
    assert run.wait_exit(seconds=90) == 130, run.output
    assert_stopped(run, ports)
    assert '"event": "kernel.stopped"' in log.read_text(), log.read_text()


def test_run_sh_says_what_is_off_and_stops_the_kernel_on_term(run_sh, user):
    env, ports, _, _ = user
    env["CORTEX_PLUGINS__DISABLED"] = '["http"]'  # the HTTP/JSON API (and the console in it) off
    run = run_sh(env)
    run.wait_for(READY, seconds=420)
    out = run.output
    assert "(the HTTP/JSON API and the web console are not served: the http plugin is disabled ([plugins] disabled))" in out, out
    assert "$ POST" not in out and "/console/" not in out, out
    final = out[out.rindex("cortex is serving on"):]
    assert "no console (it is served by the HTTP/JSON API's listener)" in final, final
    assert "no HTTP/JSON API (the http plugin is disabled ([plugins] disabled))" in final, final
    assert f"A2A on 127.0.0.1:{ports['a2a']}," in final, final

    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit(seconds=90) == 143, run.output
    assert_stopped(run, ports)


def test_run_sh_stops_the_kernel_when_a_demo_step_fails(run_sh, user):
    env, ports, _, _ = user
    env["CORTEX_PLUGINS__DISABLED"] = '["memories"]'  # `cortex remember` is the memories plugin's command
    run = run_sh(env)
    code = run.wait_exit(seconds=420)
    out = run.output
    assert code != 0 and "$ cortex remember" in out and READY not in out, out
    assert_stopped(run, ports)
