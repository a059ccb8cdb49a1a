"""Reinstalling a changed plugin into a running kernel, as an author does after each edit: the new
files serve at once (same version or not); a version whose contracts changed cannot load in the
same process, so the version before serves on and the install says so and how to load it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import grpc
import pytest

from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.kernel.sdk.testing import authenticated
from cortex.kernel.security.credentials import read_admin_token

from ..conftest import cortex_env, pip_install, run_cli

pytestmark = pytest.mark.slow  # five pip installs


def add(target: str, token: str, text: str) -> tuple[grpc.StatusCode, str]:
    """Shelf's Add by its full name (whichever version the kernel runs; Add's request is one string, field 1)."""
    channel = authenticated(grpc.insecure_channel(target), token)
    method = channel.unary_unary("/shelf.v1.ShelfService/Add", request_serializer=lambda t: b"\x0a" + bytes([len(t)]) + t.encode(),
                                 response_deserializer=lambda data: data)
    try:
        method(text, timeout=10)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def overlay_venv(path: Path) -> str:
    """A venv whose interpreter also sees this one's packages (a .pth that adds them as a site dir)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    python = path / "bin" / "python"
    site_dir = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    Path(site_dir, "test-environment.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return str(python)


def listed(env: dict[str, str]) -> str:
    shown = run_cli("plugins", "list", env=env)
    assert shown.returncode == 0, shown.stderr
    return next(line for line in shown.stdout.splitlines() if line.split()[:1] == ["shelf"])


def test_a_reinstalled_plugin_serves_its_new_files_or_says_why_not(tmp_path, serve_process):
    assert run_cli("plugin", "new", "shelf", "--dir", str(tmp_path), env=cortex_env(tmp_path / "x")).returncode == 0
    package, data = tmp_path / "cortex-shelf", tmp_path / "data"
    # the kernel's own environment: a venv of its own (pip replaces a version there, as in any venv)
    # that sees the test environment's packages, so that nothing installed here reaches other tests
    python = overlay_venv(tmp_path / "venv")
    env = cortex_env(data, CORTEX_PLUGINS__MCP__HTTP_LISTEN="127.0.0.1:0", PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0",
                     PIP_NO_INDEX="1")
    kernel = serve_process(env=env, python=python)
    cli_env = {**env, "CORTEX_TARGET": kernel.target}
    token = read_admin_token(data)
    installed = run_cli("plugins", "install", str(package), env=cli_env, timeout=300)
    assert installed.returncode == 0, installed.stderr
    assert add(kernel.target, token, "a book that is long")[0] == grpc.StatusCode.OK

    # an edit, reinstalled under the same version, by a caller who gives up at once: the kernel
    # finishes the change (pip, stop, load) and the new code serves (it refuses long notes now)
    plugin_py = package / "src" / "shelf" / "plugin.py"
    plugin_py.write_text(plugin_py.read_text().replace("MAX_TEXT = 1000", "MAX_TEXT = 5"))
    impatient = kernel_pb2_grpc.PluginServiceStub(authenticated(grpc.insecure_channel(kernel.target), token))
    with pytest.raises(grpc.RpcError) as err:
        impatient.Install(kernel_pb2.InstallRequest(spec=str(package)), timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 120
    waiting = (grpc.StatusCode.OK, grpc.StatusCode.UNIMPLEMENTED)  # the old code; the moment between stop and start
    while (code := add(kernel.target, token, "a book that is long"))[0] in waiting and time.monotonic() < deadline:
        time.sleep(0.2)
    code, details = code
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "1 to 5 characters" in details
    assert "shelf" in listed(cli_env) and "loaded" in listed(cli_env)
    assert add(kernel.target, token, "book")[0] == grpc.StatusCode.OK

    # a new version: served, and listed as what runs
    pyproject = package / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    plugin_py.write_text(plugin_py.read_text().replace("MAX_TEXT = 5", "MAX_TEXT = 3"))
    assert "installed plugin 'shelf' 0.2.0: loaded" in run_cli("plugins", "install", str(package), env=cli_env, timeout=300).stdout
    assert "1 to 3 characters" in add(kernel.target, token, "book")[1]
    assert re.search(r"\b0\.2\.0\b", listed(cli_env))

    # new files that do not come up (a syntax error): the code before serves on, and the install says why
    good = plugin_py.read_text()
    plugin_py.write_text(good + "\ndef broken(:\n")
    refused = run_cli("plugins", "install", str(package), env=cli_env, timeout=300)
    assert refused.returncode == 1
    assert "plugin 'shelf' 0.2.0 serves on, as it was: the files installed now did not come up (failed to load: " in refused.stderr
    assert "SyntaxError" in refused.stderr and "mend it and install again" in refused.stderr
    assert "1 to 3 characters" in add(kernel.target, token, "book")[1]
    plugin_py.write_text(good)

    # changed contracts cannot load in this process: 0.2.0 serves on, and the install says why and what to do
    proto = package / "protos" / "shelf" / "v1" / "shelf.proto"
    proto.write_text(proto.read_text().replace("  uint32 number = 1;\n", "  uint32 number = 1;\n  // Its shelf.\n  string shelf = 2;\n"))
    codegen = run_cli("plugin", "codegen", "--root", str(package), env=cli_env, timeout=120)
    assert codegen.returncode == 0, codegen.stderr
    pyproject.write_text(pyproject.read_text().replace('version = "0.2.0"', 'version = "0.3.0"'))
    plugin_py.write_text(plugin_py.read_text().replace("MAX_TEXT = 3", "MAX_TEXT = 1000"))
    refused = run_cli("plugins", "install", str(package), env=cli_env, timeout=300)
    assert refused.returncode == 1
    assert "0.2.0 serves on, as it was: the installed 0.3.0 changes its contract shelf/v1/shelf.proto" in refused.stderr
    assert "restart" in refused.stderr
    assert "1 to 3 characters" in add(kernel.target, token, "book")[1]  # still the code of 0.2.0
    line = listed(cli_env)
    assert "0.2.0" in line and "loaded" in line, line

    # a reinstall that changes nothing says so
    same = run_cli("plugins", "install", str(package), env=cli_env, timeout=300)
    assert same.returncode == 1 and "no plugin that is new or changed" in same.stderr



def test_an_editable_install_stays_editable_and_serves_its_edited_sources(tmp_path, serve_process):
    """An author who develops with `pip install -e .` and runs `cortex plugins install ./folder`:
    their install stays editable (their tests keep testing their sources), and the edit serves."""
    assert run_cli("plugin", "new", "shelf", "--dir", str(tmp_path), env=cortex_env(tmp_path / "x")).returncode == 0
    package, data = tmp_path / "cortex-shelf", tmp_path / "data"
    python = overlay_venv(tmp_path / "venv")
    pip_install("-e", str(package), python=python)
    env = cortex_env(data, CORTEX_PLUGINS__MCP__HTTP_LISTEN="127.0.0.1:0", PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0",
                     PIP_NO_INDEX="1")
    kernel = serve_process(env=env, python=python)
    cli_env = {**env, "CORTEX_TARGET": kernel.target}
    token = read_admin_token(data)
    assert add(kernel.target, token, "a book that is long")[0] == grpc.StatusCode.OK

    plugin_py = package / "src" / "shelf" / "plugin.py"
    plugin_py.write_text(plugin_py.read_text().replace("MAX_TEXT = 1000", "MAX_TEXT = 5"))
    again = run_cli("plugins", "install", str(package), env=cli_env, timeout=300)
    assert again.returncode == 0 and "installed plugin 'shelf' 0.1.0: loaded" in again.stdout, again.stderr
    assert "1 to 5 characters" in add(kernel.target, token, "a book that is long")[1]
    origin = subprocess.run([python, "-c", "from importlib import metadata; print(metadata.distribution('cortex-shelf')"
                             ".read_text('direct_url.json'))"], check=True, capture_output=True, text=True).stdout
    assert '"editable": true' in origin and package.resolve().as_uri() in origin

    # from editable to a plain install of another copy: the modules of the project folder go too
    copy = tmp_path / "release" / "cortex-shelf"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    (copy / "src" / "shelf" / "plugin.py").write_text(plugin_py.read_text().replace("MAX_TEXT = 5", "MAX_TEXT = 2"))
    released = run_cli("plugins", "install", str(copy), env=cli_env, timeout=300)
    assert released.returncode == 0 and "installed plugin 'shelf' 0.1.0: loaded" in released.stdout, released.stderr
    assert "1 to 2 characters" in add(kernel.target, token, "book")[1]
