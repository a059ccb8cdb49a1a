#!/usr/bin/env bash
# Set up, start `cortex serve`, show a short demo, keep serving.
#   scripts/run.sh            (Ctrl-C stops the kernel gracefully)
# The kernel reads its configuration as always (cortex.toml or $CORTEX_CONFIG, CORTEX_* variables
# such as CORTEX_LISTEN, CORTEX_DATA_DIR, CORTEX_PLUGINS__HTTP__LISTEN; else the embedded defaults:
# gRPC on 127.0.0.1:50051, data in ~/.cortex), and the demo calls and prints the addresses and
# paths that kernel uses, never fixed ones.
# The demo pip-installs the example third-party plugin (examples/cortex-echo) to show plugins at
# work; `.venv/bin/pip uninstall cortex-echo` removes it again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m pip install --quiet --quiet --no-deps --no-build-isolation ./examples/cortex-echo
cortex=.venv/bin/cortex

# The kernel is started directly, not in a function or subshell: $! must be its own pid, so that
# a TERM reaches it. Without --listen/--data-dir: the configuration decides (CORTEX_LISTEN first).
log="$(mktemp -t cortex-serve.XXXXXX)"
"$cortex" serve >"$log" 2>&1 &
server=$!
# However this script ends (Ctrl-C, a TERM, a demo step that fails under set -e, the kernel
# stopping by itself), the kernel is stopped and waited for: it stops gracefully on TERM, letting
# calls in flight finish, and no `cortex serve` is left behind.
stop_kernel() {
  trap - EXIT INT TERM
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap stop_kernel EXIT
trap 'echo "stopping cortex (calls in flight finish first)" >&2; stop_kernel; exit 130' INT
trap 'stop_kernel; exit 143' TERM
for _ in $(seq 1 600); do  # up to a minute
  grep -q "^cortex: serving on " "$log" && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
grep -q "^cortex: serving on " "$log" || { cat "$log" >&2; echo "cortex did not start within a minute" >&2; exit 1; }

# Where the demo finds what this kernel serves: its gRPC address from its "serving on" line (a
# port 0 is the one it chose), the rest from the configuration it loaded (the same loading as
# `cortex serve`, run from the same directory) and from its log, which says where each HTTP
# listener is bound and which plugins started. Printed as shell assignments (shlex-quoted) to eval.
settings="$(.venv/bin/python - "$log" <<'PY'
import json, shlex, sys
from cortex.kernel.sdk import client_dial, load_config_or_fail, split_listen
from cortex.kernel.security.credentials import ADMIN_TOKEN_FILE
from cortex.plugins.a2a.plugin import DEFAULT_LISTEN as A2A_DEFAULT
from cortex.plugins.http.plugin import DEFAULT_LISTEN as HTTP_DEFAULT

log = sys.argv[1]
cfg = load_config_or_fail(None)
served, bound, started, failed = "", {}, None, {}  # "serving on" address; listener -> its address;
                                                  # plugins that started; plugin -> why it did not
with open(log, encoding="utf-8", errors="replace") as lines:
    for line in lines:
        if line.startswith("cortex: serving on "):
            served = line.split()[3]
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # not a JSON line (or the log is in the console format: then the config alone says)
        if isinstance(entry, dict) and entry.get("event") == "http.serving":
            bound[entry.get("server")] = entry.get("address", "")
        elif isinstance(entry, dict) and entry.get("event") == "kernel.serving":
            started = entry.get("plugins", [])
        elif isinstance(entry, dict) and entry.get("event") in ("plugin.broken", "plugin.skipped"):
            failed[entry.get("plugin")] = entry.get("error", "")  # e.g. its port is another process's

def reachable(listen):
    """HOST:PORT to call a listener at: one on every address (0.0.0.0, ::) is reached on loopback."""
    host, port = split_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

def listener(plugin, server, default):
    """(address, why there is none) of a plugin's HTTP listener ([plugins.NAME] listen)."""
    listen = str(cfg.plugin_section(plugin).get("listen", default))
    if plugin in cfg.disabled_plugins:
        return "", f"the {plugin} plugin is disabled ([plugins] disabled)"
    if not listen:
        return "", f'[plugins.{plugin}] listen = "" turns it off'
    if started is not None:  # the kernel's log says what it did
        if plugin not in started or server not in bound:
            return "", f"the {plugin} plugin did not start: {failed.get(plugin) or f'see its log, {log}'}"
        listen = bound[server]
    elif split_listen(listen)[1] == 0:
        return "", f"[plugins.{plugin}] listen has port 0: the port the kernel chose is in its log, {log}"
    return reachable(listen), ""

http, http_why = listener("http", "http-api", HTTP_DEFAULT)
a2a, a2a_why = listener("a2a", "a2a", A2A_DEFAULT)
console, console_why = ("yes", "") if http else ("", "it is served by the HTTP/JSON API's listener")
if http and ("console" in cfg.disabled_plugins or (started is not None and "console" not in started)):
    console, console_why = "", "the console plugin is disabled or did not start"
tls = bool(cfg.kernel_section.tls_cert)  # every listener serves TLS then, with the CA `cortex` trusts
token_file = cfg.data_dir / ADMIN_TOKEN_FILE
print("\n".join(f"{name}={shlex.quote(str(value))}" for name, value in {
    "grpc": reachable(served), "data_dir": cfg.data_dir, "token_file": token_file,
    "http": http, "http_why": http_why, "scheme": "https" if tls else "http", "ca": client_dial(cfg).tls_ca if tls else "",
    # without a credential an HTTP caller on loopback is `local`, unless credentials are required
    "http_token_file": token_file if cfg.kernel_section.require_credentials else "",
    "console": console, "console_why": console_why, "a2a": a2a, "a2a_why": a2a_why,
}.items()))
PY
)"
# what it sets (declared here for the reader and shellcheck; unset until the eval, as set -u checks)
declare grpc data_dir token_file http http_why scheme ca http_token_file console console_why a2a a2a_why
eval "$settings"
base="$scheme://$http"

# each command as it can be pasted into a shell (printf %q quotes what needs it), then its output
demo() { echo; printf '$ cortex'; printf ' %q' "$@"; echo; "$cortex" "$@"; }
export CORTEX_TARGET="$grpc"  # this kernel, whatever [client] target says
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
.venv/bin/python - "$grpc" <<'PY'
import sys
from cortex.kernel.sdk import client_dial, load_config_or_fail
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc
dial = client_dial(load_config_or_fail(None))  # the admin token in the data dir, as `cortex` uses it
reply, call = echo_pb2_grpc.EchoServiceStub(dial.channel(sys.argv[1])).Echo.with_call(
    echo_pb2.EchoRequest(message="hello, cortex", upper=True), timeout=5, metadata=dial.metadata())
print(f"{reply.message!r} served by {dict(call.trailing_metadata())['x-cortex-provider']}")
PY

# The HTTP/JSON API and the web console beside it: called where this kernel serves them, or
# skipped, saying why, when it does not (a failed call is reported; the kernel keeps serving).
echo
if [ -z "$http" ]; then
  echo "(the HTTP/JSON API and the web console are not served: $http_why)"
else
  .venv/bin/python - "$base" "$ca" "$http_token_file" "$console" "$token_file" <<'PY'
import json, ssl, sys, urllib.request
base, ca, token_file, console, admin_token = sys.argv[1:]
context = ssl.create_default_context(cafile=ca) if ca else None
headers = {"Content-Type": "application/json"}
if token_file:  # kernel.require_credentials: the admin token, as `cortex` sends it
    headers["Authorization"] = "Bearer " + open(token_file, encoding="ascii").read().strip()

def post(method, body):
    request = urllib.request.Request(f"{base}/v1/{method}", data=json.dumps(body).encode(), headers=headers)
    return json.load(urllib.request.urlopen(request, timeout=30, context=context))

print(f"$ POST {base}/v1/cortex.memories.v1.MemoryService/Search (the HTTP/JSON API)")
try:
    best = post("cortex.memories.v1.MemoryService/Search", {"query": "garden budget", "top_k": 1})["results"][0]
    print(f"{best['memory']['text']!r} (similarity {best.get('semantic_score', 0):.2f}); OpenAPI at {base}/openapi.json")
except (OSError, ValueError, LookupError) as exc:
    print(f"the HTTP API did not answer at {base} ({exc!r}); see [plugins.http] listen")
if not console:
    sys.exit()
print(f"\n$ GET {base}/console/ (the web console, served beside the HTTP/JSON API)")
try:
    page = urllib.request.Request(f"{base}/console/", headers={k: v for k, v in headers.items() if k == "Authorization"})
    urllib.request.urlopen(page, timeout=10, context=context)  # an error status raises
    stored = post("cortex.memories.v1.MemoryService/Stats", {}).get("total", 0)
    trace = (post("cortex.cerebrum.v1.CerebrumService/ListTraces", {}).get("traces") or [{}])[0].get("trace_id", "")
    print(f"open {base}/console/ in a browser: {stored} memories under Memories, the demo's run at")
    print(f"  {base}/console/traces/{trace}")
    print(f"  (for the audit chain, policies and plugins, sign in with the admin token: {admin_token})")
except (OSError, ValueError, LookupError) as exc:
    print(f"the console did not answer at {base}/console/ ({exc!r}); see [plugins.http] listen and [plugins.console]")
PY
fi
echo
[ -n "$console" ] && where_console="the console at $base/console/" || where_console="no console ($console_why)"
[ -n "$http" ] && where_http="HTTP/JSON on $http" || where_http="no HTTP/JSON API ($http_why)"
[ -n "$a2a" ] && where_a2a="A2A on $a2a" || where_a2a="no A2A ($a2a_why)"
echo "cortex is serving on $grpc (data dir $data_dir, logs: $log); $where_console, $where_http, $where_a2a,"
echo "MCP for editors: cortex mcp. Ctrl-C to stop."
wait "$server"
