#!/usr/bin/env bash
# The lint gates CI runs: the lock matches pyproject.toml, ruff (rules in pyproject.toml, the
# security rules among them), buf lint on the contracts, the generated code matches the protos, the
# vendored buf/validate/validate.proto matches the protovalidate wheel, and the console's vendored
# browser code matches its locked npm package.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/ruff ] && [ -x tools/buf/node_modules/.bin/buf ] || scripts/setup.sh test
scripts/lock.sh --check
# (each on its own line: under `set -e`, a failure on the left of `&&` would not stop the script)
.venv/bin/ruff check --quiet .
echo "ruff: clean"
tools/buf/node_modules/.bin/buf lint
echo "buf lint: clean"
.venv/bin/python scripts/gen_contracts.py --check
.venv/bin/python scripts/vendor_validate_proto.py --check  # protos/buf/validate/ is the protovalidate wheel's file
.venv/bin/python scripts/vendor_console.py --check  # the console's chart library is its npm package's file
