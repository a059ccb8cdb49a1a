#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install Cortex-OS into it, editable. Idempotent.
#   scripts/setup.sh            runtime only
#   scripts/setup.sh test       with the test tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  py=""
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      py="$candidate"; break
    fi
  done
  [ -n "$py" ] || { echo "setup: Python 3.11 or newer is required" >&2; exit 1; }
  echo "setup: creating .venv with $("$py" --version)"
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
echo "setup: $(.venv/bin/cortex --version) installed in .venv"
