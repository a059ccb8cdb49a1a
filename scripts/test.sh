#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs), measuring coverage of kernel/ and plugins/,
# the `cortex serve` subprocesses included. Extra arguments go to pytest, e.g.
# `scripts/test.sh -m "not slow"` or `scripts/test.sh tests/kernel -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/python scripts/gen_contracts.py --check
export COVERAGE_FILE="$PWD/.coverage"  # one place for every process's data, whatever its cwd
rm -f .coverage .coverage.*
exec .venv/bin/python -m pytest --cov --cov-report=term:skip-covered "$@"
