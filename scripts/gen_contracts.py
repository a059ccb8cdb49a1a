#!/usr/bin/env python3
"""Regenerate the Python contracts from the .proto sources (plugins/devkit/codegen.py does the work, as
`cortex plugin codegen` does for a plugin).

    python scripts/gen_contracts.py          # write contracts/ (and each example's)
    python scripts/gen_contracts.py --check  # exit 1 if anything committed is stale

protoc names a Python module after its .proto path, so `protos/cortex/kernel/v1/kernel.proto`
becomes `cortex.kernel.v1.kernel_pb2`. Cortex-OS ships them as `cortex.contracts.kernel.v1`, so
the import lines of the generated code are rewritten. The serialized descriptors keep their
original file names, which is what other languages and server reflection see.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cortex.plugins.devkit.codegen import DESCRIPTORS, Target, check, generate, generated_files

ROOT = Path(__file__).resolve().parent.parent


TARGETS = [
    Target(ROOT / "protos", ROOT / "contracts", "cortex", ("cortex", "cortex.contracts"), DESCRIPTORS),
    Target.for_plugin(ROOT / "examples/cortex-echo/protos", ROOT / "examples/cortex-echo/src"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    opts = parser.parse_args()
    if opts.check:
        problems = [line for t in TARGETS for line in check(t)]
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("generated contracts are stale: run python scripts/gen_contracts.py", file=sys.stderr)
            return 1
        print("generated contracts are current")
        return 0
    for t in TARGETS:
        for p in generated_files(t.out):
            (t.out / p).unlink()
        generate(t, t.out)
        print(f"generated {t.out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
