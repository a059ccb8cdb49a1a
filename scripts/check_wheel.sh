#!/usr/bin/env bash
# Build the wheel, install it in a fresh virtualenv (not this checkout) with the locked dependency
# set, start `cortex serve` from it and ask it `cortex info`: proves `pip install cortex-os` works
# from a built wheel. Then the route a plugin author takes: no embedding model until `cortex doctor`
# names `cortex models install`, which ends with semantic search working.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python.sh
work="$(mktemp -d)"
server=""
trap '[ -z "$server" ] || kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
# setuptools never removes what an earlier build left in build/lib (pypa/setuptools#1871): a module
# moved since would ship twice, the old copy beside the new
rm -rf build
.venv/bin/python -m build --wheel --no-isolation --outdir "$work/dist" . > "$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }
wheel="$(ls "$work"/dist/cortex_os-*.whl)"
"$py" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --quiet --quiet --disable-pip-version-check)
"${pip[@]}" install --require-hashes --no-deps -r requirements/core.txt
"${pip[@]}" install --no-deps "$wheel"
"$work/venv/bin/python" -m pip check --disable-pip-version-check >/dev/null
requirements="$PWD/requirements"
cd "$work"  # away from the checkout: nothing may come from the source tree
cortex="$work/venv/bin/cortex"
export CORTEX_DATA_DIR="$work/data" CORTEX_CONFIG="$work/none.toml" CORTEX_TARGET=""
# the HTTP API and the A2A endpoint on free ports: a kernel may already run on the defaults here
export CORTEX_PLUGINS__HTTP__LISTEN=127.0.0.1:0 CORTEX_PLUGINS__A2A__LISTEN=127.0.0.1:0
: > "$CORTEX_CONFIG"

serve() {  # start `cortex serve` on a free port; sets $server and $CORTEX_TARGET
  "$cortex" serve --listen 127.0.0.1:0 > "$work/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 1 150); do
    grep -q "serving on" "$work/serve.log" && break
    kill -0 $server 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.2
  done
  CORTEX_TARGET=$(sed -n 's/.*serving on \([^ ]*\).*/\1/p' "$work/serve.log")
  export CORTEX_TARGET
}
stop() { kill $server; wait $server 2>/dev/null || true; server=""; }
fail() { echo "wheel check: $*" >&2; cat "$work/serve.log" >&2; exit 1; }

serve
"$cortex" info
"$cortex" plugins list
# installed without extras: the optional providers say which extra they need, the rest serves
grep -q "pip install 'cortex-os\[openai\]'" "$work/serve.log" || fail "no hint for the openai extra"
grep -q '"server": "http-api"' "$work/serve.log" && grep -q '"server": "a2a"' "$work/serve.log" \
  || fail "the HTTP API or the A2A endpoint did not start from the wheel"
"$work/venv/bin/python" -c "import cortex.kernel, cortex.plugins.mlx.plugin, cortex.contracts.memories.v1.memories_pb2; print('wheel: imports ok')"
# the rings ship as the tree has them, and nothing of the flat layout they replaced
"$work/venv/bin/python" - <<'PY' || fail "the wheel's kernel is not the tree's"
import importlib.util, cortex.kernel.sdk, cortex.kernel.security, cortex.plugins.devkit.plugin
for stale in ("cortex.kernel.asgi", "cortex.kernel.credentials", "cortex.kernel.codegen", "cortex.plugins.models_common"):
    assert importlib.util.find_spec(stale) is None, f"{stale} ships from an earlier build"
print("wheel: rings ok")
PY
"$cortex" plugin new wheel_probe --dir "$work" > /dev/null || fail "the devkit's cortex plugin new does not work from the wheel"
# the console's pages and their vendored chart library ship in the wheel and are served from it
http_at=$(sed -n 's/.*"server": "http-api", "address": "\([^"]*\)".*/\1/p' "$work/serve.log" | head -1)
"$work/venv/bin/python" - "$http_at" <<'PY' || fail "the console's pages are not served from the wheel"
import sys, urllib.request
for path in ("/console/", "/console/app.js", "/console/pages/memories.js", "/console/vendor/uPlot.esm.js"):
    with urllib.request.urlopen(f"http://{sys.argv[1]}{path}", timeout=10) as page:
        assert page.status == 200 and page.read(), path
print("wheel: console pages ok")
PY
# the bridges' descriptions come from the descriptor set shipped in the wheel
"$work/venv/bin/python" -c "from cortex.kernel.sdk import proto_docs; assert proto_docs.doc('cortex.memories.v1.MemoryService.Store'), 'descriptors.binpb missing'; print('wheel: proto comments ok')"

# no embedding model yet: doctor says what to run, and the command makes semantic search work
if "$cortex" doctor > "$work/doctor.txt" 2>&1; then fail "doctor passed without an embedding model"; fi
grep -q "cortex models install" "$work/doctor.txt" || { cat "$work/doctor.txt" >&2; fail "doctor does not name cortex models install"; }
stop
"$cortex" models install
serve
"$cortex" remember "The kettle lives in the blue cupboard above the sink" >/dev/null
"$cortex" recall --mode semantic --json "where do I keep the teapot" > "$work/recall.json"
"$work/venv/bin/python" - "$work/recall.json" <<'PY' || fail "semantic search does not work after cortex models install"
import json, sys
results = json.load(open(sys.argv[1]))["results"]
assert results and "blue cupboard" in results[0]["memory"]["text"] and results[0]["semantic_score"] > 0.3, results
print(f"wheel: semantic search ok (similarity {results[0]['semantic_score']:.2f})")
PY
stop

# the providers extra, locked
"${pip[@]}" install --require-hashes --no-deps -r "$requirements/runtime.txt"
"$work/venv/bin/python" -c "import ollama, openai; print('extras: providers installed')"
echo "wheel check passed"
