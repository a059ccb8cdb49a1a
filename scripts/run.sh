#!/usr/bin/env bash
# Set up, start `cortex serve` with the embedded defaults, show a short demo, keep serving.
#   scripts/run.sh            (Ctrl-C stops the kernel gracefully)
# The demo pip-installs the example third-party plugin (examples/cortex-echo) to show plugins at
# work; `.venv/bin/pip uninstall cortex-echo` removes it again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m pip install --quiet --quiet --no-deps --no-build-isolation ./examples/cortex-echo
cortex=.venv/bin/cortex
listen="${CORTEX_LISTEN:-127.0.0.1:50051}"

log="$(mktemp -t cortex-serve.XXXXXX)"
"$cortex" serve --listen "$listen" >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server' INT TERM
for _ in $(seq 1 100); do
  grep -q "serving on" "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done

# each command as it can be pasted into a shell (printf %q quotes what needs it), then its output
demo() { echo; printf '$ cortex'; printf ' %q' "$@"; echo; "$cortex" "$@"; }
export CORTEX_TARGET="$listen"
demo info
demo plugins list
demo health
demo remember "The garden project: raised beds go along the south fence." --tag garden
demo remember "Garden project budget is 300 euros for soil and seeds." --tag garden
demo recall "how much can I spend on the vegetable patch" -k 2
demo run "summarise what I noted about the garden project"
demo audit tail -n 4
demo proofs verify --all
echo
echo "\$ grpc call cortex_echo.v1.EchoService/Echo (the example plugin, through the kernel's router, as admin)"
.venv/bin/python - "$listen" <<'PY'
import sys
from cortex.kernel.sdk import client_dial, load_config_or_fail
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc
dial = client_dial(load_config_or_fail(None))  # the admin token in the data dir, as `cortex` uses it
reply, call = echo_pb2_grpc.EchoServiceStub(dial.channel(sys.argv[1])).Echo.with_call(
    echo_pb2.EchoRequest(message="hello, cortex", upper=True), timeout=5, metadata=dial.metadata())
print(f"{reply.message!r} served by {dict(call.trailing_metadata())['x-cortex-provider']}")
PY
echo
echo "\$ POST http://127.0.0.1:50080/v1/cortex.memories.v1.MemoryService/Search (the HTTP/JSON API)"
.venv/bin/python - <<'PY'
import json, urllib.request
request = urllib.request.Request(
    "http://127.0.0.1:50080/v1/cortex.memories.v1.MemoryService/Search",
    data=json.dumps({"query": "garden budget", "top_k": 1}).encode(), headers={"Content-Type": "application/json"})
try:
    best = json.load(urllib.request.urlopen(request, timeout=30))["results"][0]
    print(f"{best['memory']['text']!r} (similarity {best.get('semantic_score', 0):.2f}); OpenAPI at http://127.0.0.1:50080/openapi.json")
except OSError as exc:
    print(f"the HTTP API is not on 127.0.0.1:50080 ({exc}); see [plugins.http] listen")
PY
echo
echo "\$ GET http://127.0.0.1:50080/console/ (the web console, served beside the HTTP/JSON API)"
.venv/bin/python - <<'PY'
import json, urllib.request
base = "http://127.0.0.1:50080"
def post(method):
    request = urllib.request.Request(f"{base}/v1/{method}", data=b"{}", headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=30))
try:
    assert urllib.request.urlopen(f"{base}/console/", timeout=10).status == 200
    stored = post("cortex.memories.v1.MemoryService/Stats").get("total", 0)
    trace = (post("cortex.cerebrum.v1.CerebrumService/ListTraces").get("traces") or [{}])[0].get("trace_id", "")
    print(f"open {base}/console/ in a browser: {stored} memories under Memories, the demo's run at")
    print(f"  {base}/console/traces/{trace}")
    print("  (for the audit chain, policies and plugins, sign in with the admin token: ~/.cortex/admin.token)")
except OSError as exc:
    print(f"the console is not on {base} ({exc}); see [plugins.http] listen and [plugins.console]")
PY
echo
echo "cortex is serving on $listen (logs: $log); the console at http://127.0.0.1:50080/console/, HTTP/JSON on 127.0.0.1:50080, A2A on 127.0.0.1:50082,"
echo "MCP for editors: cortex mcp. Ctrl-C to stop."
wait $server
