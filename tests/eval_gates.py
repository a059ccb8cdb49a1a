"""An evaluation under scripts/ (eval_retrieval.py, eval_answers.py) as its CI gate uses it: the
script loaded as a module (its scoring and floors tested without a kernel), and run whole against
its floor file, as `python scripts/eval_NAME.py --floor ... --json ...` does."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


class EvalScript:
    def __init__(self, name: str, floor: str) -> None:
        self.path = ROOT / "scripts" / f"{name}.py"
        self.floor_path = ROOT / "eval" / floor / "floor.json"

    def module(self) -> ModuleType:
        spec = importlib.util.spec_from_file_location(self.path.stem, self.path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def floor(self) -> dict:
        return json.loads(self.floor_path.read_text())

    def meets_floor(self, out: Path, timeout: float) -> dict:
        """Run the whole evaluation against its floor; its report."""
        run = subprocess.run([sys.executable, str(self.path), "--floor", str(self.floor_path), "--json", str(out)],
                             capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        assert run.returncode == 0, run.stdout + run.stderr
        return json.loads(out.read_text())
