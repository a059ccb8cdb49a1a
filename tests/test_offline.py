"""The README's main path with no network at all: a network namespace that has only loopback
(`unshare -n`), where `cortex serve` with the embedded defaults stores, syncs a notes folder,
recalls, runs a goal with citations, opens a citation and verifies its proofs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from .conftest import cortex_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
                       reason="a network namespace needs root, unshare and ip (CI runs as root)"),
]

SESSION = textwrap.dedent("""\
    set -euo pipefail
    ip link set lo up
    cortex() { "$PYTHON" -m cortex.kernel "$@"; }
    # offline indeed: nothing but loopback is reachable from here
    if "$PYTHON" -c 'import socket; socket.create_connection(("1.1.1.1", 443), timeout=2)' 2>/dev/null; then
      echo "ONLINE"; exit 3
    fi
    # not through the function: $! would be the subshell, and TERM would leave the kernel running
    "$PYTHON" -m cortex.kernel serve --listen 127.0.0.1:50651 >"$LOG" 2>&1 &
    server=$!
    for _ in $(seq 1 300); do grep -q '"serving on"\\|serving on' "$LOG" && break; sleep 0.1; done
    export CORTEX_TARGET=127.0.0.1:50651
    echo "== remember"; cortex remember "The boiler service is booked for 3 October with Vaillant." --tag home
    echo "== sources"; cortex sources add "$NOTES" --name notes
    echo "== recall"; cortex recall "when is the boiler serviced" -k 1
    echo "== run"; cortex run "When is my dentist appointment?"
    echo "== open"; cortex open notes:health.md#L2-L3
    echo "== verify"; cortex proofs verify --all
    kill -TERM $server; wait $server || true
    """)


def test_the_main_path_runs_with_no_network(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "health.md").write_text("# Health\n## Dentist\nDr. Hartmann, Thursday 12 March at 15:00.\n")
    env = cortex_env(tmp_path / "data", PYTHON=sys.executable, LOG=str(tmp_path / "serve.log"), NOTES=str(notes))
    command = [shutil.which("unshare"), "-n", shutil.which("bash"), "-c", SESSION]
    ran = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    out = ran.stdout
    assert ran.returncode == 0, out + ran.stderr + (tmp_path / "serve.log").read_text()
    assert "remembered: m" in out and "source notes:" in out and "1 files: 1 read" in out
    recalled = out.split("== recall")[1].split("== run")[0]
    assert "boiler service is booked" in recalled
    answer = out.split("== run")[1].split("== open")[0]
    assert "Dr. Hartmann, Thursday 12 March at 15:00. [1]" in answer and "(notes:health.md#L2-L3, Health > Dentist)" in answer
    assert "Dr. Hartmann, Thursday 12 March at 15:00." in out.split("== open")[1]
    verified = out.split("== verify")[1].strip()
    assert verified.startswith("OK: ") and "entries verified" in verified, verified
