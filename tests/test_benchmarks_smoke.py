"""The benchmarks under scripts/ (bench_*.py, loadtest.py) do not rot: each runs whole at its tiny
sizes (`--smoke`), its baseline included, and prints its ratio lines (`x1.23`), as a subprocess
with a temp data dir, config and home of its own.

A new benchmark needs an entry in SMOKE (the arguments of its small runs and the ratio lines they
print) and a docstring that says what it needs and how to run it small. A benchmark whose
requirement is missing exits 2 naming how to get it: skipped here, failed on CI (which installs
them all: `scripts/setup.sh test`).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
TIMEOUT = 300  # seconds a run may take (~5-50 s each on a busy 2-core machine)

RATIO = r"x\d+(\.\d+)?"
# per script: its small runs, each (arguments, the lines it must print: regular expressions)
SMOKE: dict[str, list[tuple[list[str], list[str]]]] = {
    "bench_bridges.py": [(["--smoke"], [rf"GetInfo +mcp .* p50 {RATIO} of gRPC", rf"Search +http .* p50 {RATIO} of gRPC"])],
    "bench_governance.py": [
        (["--smoke"], [rf"1000 rules vs built-in only: p50 {RATIO}, p99 {RATIO}", rf"verify_chain: .* {RATIO} the bare loop"]),
    ],
    "bench_memories.py": [
        (["--smoke"], [rf"ratio p99 HNSW / exact: {RATIO}", r"keyword, FTS5 BM25"]),
        (["--smoke", "--encrypted"], [rf"Store \(FULL\) .* encrypted \({RATIO}\)", rf"Get \(10 ids\) .* \({RATIO}\)"]),
        (["--smoke", "--postgres"], [rf"\({RATIO} SQLite FULL\)", rf"ratio p99 pgvector / SQLite's index: {RATIO}",
                                     rf"hybrid on PostgreSQL: .*\(p99 {RATIO} SQLite\)"]),
    ],
    # the baseline (sentence-transformers on PyTorch) is not in the test profile: its ratio, or the note
    "bench_models.py": [
        (["--smoke"], [rf"ratio MLX / sentence-transformers: {RATIO}|sentence-transformers not installed: no baseline",
                       r"MLX generation, tiny Llama .* tokens/s"]),
    ],
    "bench_redaction.py": [(["--smoke"], [rf"redact\+restore p50 .*\({RATIO}\)", rf"adversarial .* baseline .*\({RATIO}\)"])],
    "bench_router.py": [
        (["--smoke"], [rf"kernel / bare: +p50 {RATIO} .* calls/s {RATIO}", rf"governed / ungoverned: p50 {RATIO}",
                       rf"TLS\+key / plaintext: +p50 {RATIO}, calls/s {RATIO}"]),
    ],
    "bench_sources.py": [(["--smoke"], [rf"nothing changed +\d+\.\d+ +{RATIO}", rf"one file changed +\d+\.\d+ +{RATIO}"])],
    "bench_startup.py": [(["--smoke"], [rf"cortex serve, 1,000 memories: {RATIO} the bare server's start, {RATIO} its RSS"])],
    "loadtest.py": [
        (["--smoke", "--spawn"], [rf"achieved \S+ RPS \({RATIO} the rate\)", r"kernel RSS: ",
                                  r"stores acknowledged \d+, lost 0; kernel healthy after: yes"]),
        (["--smoke", "--knee", "5", "--repeat", "2", "--overload", "2"],
         [r"knees of 2 runs: 5, 5 RPS; lowest 5, spread 0 RPS", r"overload: x2 the lowest knee, 10 RPS",
          r"shed at capacity: \d+"]),
        (["--smoke", "--cluster"], [rf"two kernels / one at \d+ RPS: achieved {RATIO}, p50 {RATIO}, p99 {RATIO}",
                                    r"store on A -> found on B: p50"]),
    ],
}


def benchmarks() -> list[str]:
    return sorted(p.name for p in [*SCRIPTS.glob("bench_*.py"), SCRIPTS / "loadtest.py"] if p.exists())


def runs() -> list:
    """(script, arguments, expected lines) for every benchmark found; None for one with no entry."""
    out = []
    for name in benchmarks():
        for args, expected in SMOKE.get(name) or [(None, None)]:
            out.append(pytest.param(name, args, expected, id=" ".join([name, *(args or [])])))
    return out


def test_every_benchmark_has_a_smoke_entry_and_says_what_it_needs():
    found = benchmarks()
    assert not sorted(set(found) - set(SMOKE)), (
        f"benchmarks without a smoke entry: {sorted(set(found) - set(SMOKE))}: add a smoke entry to SMOKE in {Path(__file__).name}")
    assert not sorted(set(SMOKE) - set(found)), f"smoke entries for scripts that are gone: {sorted(set(SMOKE) - set(found))}"
    for name in found:
        doc = ast.get_docstring(ast.parse((SCRIPTS / name).read_text())) or ""
        head = "\n".join(doc.splitlines()[:15])  # the first lines, before the details
        assert "Needs:" in head and "Small:" in head and "--smoke" in head, (
            f"{name}: say in the docstring's first lines what it needs (Needs:) and how to run it small (--smoke)")


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize(("script", "args", "expected"), runs())
def test_benchmark_runs_small(script: str, args: list[str] | None, expected: list[str] | None, tmp_path: Path):
    if args is None:
        pytest.fail(f"scripts/{script} is a benchmark with no smoke run: add a smoke entry to SMOKE in {Path(__file__).name}")
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "none.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    # nothing into ~/.cortex or the checkout, whatever a script forgets to set
    env.update(HOME=str(home), CORTEX_DATA_DIR=str(tmp_path / "data"), CORTEX_CONFIG=str(tmp_path / "none.toml"))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / script), *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its kernels and servers too
        out, _ = proc.communicate()
        pytest.fail(f"{script} {' '.join(args)} ran over {TIMEOUT}s:\n{out[-4000:]}")
    seconds = time.monotonic() - started
    lines = out.strip().splitlines()
    if proc.returncode == 2 and lines and f"{script} " in lines[-1] and " needs " in lines[-1]:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs every benchmark's requirements (scripts/setup.sh test): {lines[-1]}")
        pytest.skip(lines[-1])
    assert proc.returncode == 0, f"{script} {' '.join(args)} exited {proc.returncode} after {seconds:.0f}s:\n{out[-4000:]}"
    missing = [pattern for pattern in expected if not re.search(pattern, out)]
    assert not missing, f"{script} {' '.join(args)} did not print {missing}:\n{out[-4000:]}"
