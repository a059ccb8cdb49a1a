#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs). Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not slow"` or `scripts/test.sh tests/kernel -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/python scripts/gen_contracts.py --check
exec .venv/bin/python -m pytest "$@"
