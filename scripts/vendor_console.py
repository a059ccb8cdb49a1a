#!/usr/bin/env python3
"""Copy the console's third-party browser code from its locked npm package into the wheel's
static files (the pages load nothing from outside the kernel), or check that the copy is current.

    python scripts/vendor_console.py          # after changing tools/console/package.json: npm ci there, then this
    python scripts/vendor_console.py --check  # CI (scripts/lint.sh): exit 1 when the copy differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "tools" / "console" / "node_modules"
VENDOR = ROOT / "plugins" / "console" / "static" / "vendor"
FILES = {  # vendored name: its file in the npm package
    "uPlot.esm.js": "uplot/dist/uPlot.esm.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
    "uPlot.LICENSE": "uplot/LICENSE",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the vendored files differ from the npm package")
    opts = parser.parse_args()
    stale = []
    for name, source in FILES.items():
        origin = PACKAGES / source
        if not origin.is_file():
            print(f"{origin} is missing: run `npm ci` in tools/console (scripts/setup.sh test does)", file=sys.stderr)
            return 1
        target = VENDOR / name
        if target.is_file() and target.read_bytes() == origin.read_bytes():
            continue
        stale.append(name)
        if not opts.check:
            VENDOR.mkdir(parents=True, exist_ok=True)
            target.write_bytes(origin.read_bytes())
    if opts.check and stale:
        print(f"vendored console files differ from tools/console's locked packages: {', '.join(stale)}; "
              "run python scripts/vendor_console.py", file=sys.stderr)
        return 1
    print(f"console vendor files: {'checked' if opts.check else 'written'} ({len(FILES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
