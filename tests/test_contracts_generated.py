"""The committed generated code is what the .proto files generate (CI fails otherwise)."""

import subprocess
import sys

from .conftest import ROOT


def test_generated_contracts_are_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_contracts.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "generated contracts are current" in result.stdout
