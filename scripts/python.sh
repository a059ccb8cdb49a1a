# Sourced by the scripts: sets $py to a Python 3.11 or newer found on PATH, or stops with a message.
py=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    py="$candidate"; break
  fi
done
[ -n "$py" ] || { echo "$(basename "$0"): Python 3.11 or newer is required" >&2; exit 1; }
