"""Installing a plugin into the running kernel's own environment (PluginService.Install): pip, in
a subprocess, with the file's SHA-256 checked first when one is expected (reinstall.py loads what
it changed)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import structlog

log = structlog.get_logger("cortex.kernel")
TIMEOUT = 600


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(spec: str, sha256: str) -> None:
    path = Path(os.path.expanduser(spec))
    if not path.is_file():
        raise ValueError(f"sha256 was given, so {spec!r} must be a file (a wheel or an sdist) to check it against")
    found = _sha256(path)
    if found != sha256:
        raise ValueError(f"{spec} has SHA-256 {found}, not the expected {sha256}: not installed")


def editable_project(dist: metadata.Distribution) -> Path | None:
    """The folder a distribution is installed editable from (`pip install -e`; pip's direct_url.json),
    or None."""
    try:
        origin = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return None
    if not isinstance(origin, dict) or not (origin.get("dir_info") or {}).get("editable"):
        return None
    url = urlsplit(str(origin.get("url", "")))  # as pip wrote it: quoted, maybe through a symlink
    return Path(url2pathname(url.path)).resolve() if url.scheme == "file" else None


def editable_from(spec: str) -> str:
    """The distribution installed editable from the folder `spec`, or ''."""
    path = Path(os.path.expanduser(spec))
    if not path.is_dir():
        return ""
    return next((str(d.metadata["Name"] or "") for d in metadata.distributions() if editable_project(d) == path.resolve()), "")


async def install(spec: str, sha256: str = "") -> tuple[str, str]:
    """Install `spec`; a folder an author installed editable stays editable (else their tests would
    test a copy from now on). Returns (that distribution's name or '', pip's output): an editable
    one's plugins load again though no installed file changed (their sources did). ValueError
    saying what went wrong (a hash that does not match, pip's own last lines)."""
    if sha256:
        await asyncio.to_thread(_check, spec, sha256)
    editable = await asyncio.to_thread(editable_from, spec)
    command = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", *(["-e"] if editable else []), spec]
    log.info("plugin.installing", spec=spec)
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        raise ValueError(f"pip did not finish installing {spec} within {TIMEOUT} s") from None
    if proc.returncode != 0:
        tail = " | ".join(output.decode(errors="replace").strip().splitlines()[-3:])
        raise ValueError(f"pip could not install {spec}: {tail}")
    importlib.invalidate_caches()  # the new distribution's metadata and modules are found from now on
    log.info("plugin.installed", spec=spec, editable=bool(editable))
    return editable, output.decode(errors="replace")
