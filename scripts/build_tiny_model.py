#!/usr/bin/env python3
"""Build the tiny deterministic Llama model (see cortex.plugins.mlx.tiny_model).

    python scripts/build_tiny_model.py DIR [--seed 0]
"""

import argparse
import sys
from pathlib import Path

from cortex.plugins.mlx.tiny_model import build_tiny_model, fingerprint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    folder = build_tiny_model(opts.folder, opts.seed)
    print(f"built {folder} (sha256 {fingerprint(folder)[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
