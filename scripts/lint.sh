#!/usr/bin/env bash
# The lint gates CI runs: the lock matches pyproject.toml, ruff (rules in pyproject.toml, the
# security rules among them), buf lint on the contracts, the generated code matches the protos, the
# vendored buf/validate/validate.proto matches the protovalidate wheel, the console's vendored
# browser code matches its locked npm package, and mypy (strict on the kernel: [tool.mypy]).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/ruff ] && [ -x .venv/bin/mypy ] && [ -x tools/buf/node_modules/.bin/buf ] || scripts/setup.sh test
scripts/lock.sh --check
# (each on its own line: under `set -e`, a failure on the left of `&&` would not stop the script)
.venv/bin/ruff check --quiet .
echo "ruff: clean"
tools/buf/node_modules/.bin/buf lint
echo "buf lint: clean"
.venv/bin/python scripts/gen_contracts.py --check
.venv/bin/python scripts/vendor_validate_proto.py --check  # protos/buf/validate/ is the protovalidate wheel's file
.venv/bin/python scripts/vendor_console.py --check  # the console's chart library is its npm package's file
# the kernel ships py.typed: mypy holds it to it (strict, [tool.mypy]) by its installed name, linked here for mypy
mkdir -p .mypy_cache/src/cortex
ln -sfn ../../../kernel .mypy_cache/src/cortex/kernel
ln -sfn ../../../contracts .mypy_cache/src/cortex/contracts
.venv/bin/mypy -p cortex.kernel | sed 's#^\.mypy_cache/src/cortex/##'  # (errors named by their files here)
