#!/usr/bin/env bash
# Lint and types of the package: ruff (lint, then format check) and mypy, configured in
# pyproject.toml. One line per stage; a stage's findings are printed when it has any. Every
# stage runs, and the script exits 1 when any of them found something.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
folders=(refunddesk policy store intake bot review outbound worker harness)

# The project's own pinned tools (scripts/setup.sh --test) when installed, else those on PATH.
tool() { if [ -x "$root/.venv/bin/$1" ]; then echo "$root/.venv/bin/$1"; else command -v "$1" || echo "$1"; fi; }
ruff="$(tool ruff)"
mypy="$(tool mypy)"

failed=0
# Runs a stage quietly; on a finding (or a tool that is missing), shows its output.
stage() {
  local name="$1" output status
  shift
  output="$("$@" 2>&1)"
  status=$?
  if [ "$status" = 0 ]; then
    echo "lint: $name: ok"
  else
    echo "lint: $name: failed (exit $status)"
    printf '%s\n' "$output"
    failed=1
  fi
}

stage "ruff check" "$ruff" check --no-cache "${folders[@]}"
stage "ruff format --check" "$ruff" format --check --no-cache "${folders[@]}"

# package-dir maps policy/ to refunddesk.policy and so on, which mypy cannot see from the
# source tree; a tree of links laid out as the installed package can. Built fresh each run so
# that a module added or removed is seen; the cache beside it keeps later runs fast.
shadow="$root/build/typecheck"
rm -rf "$shadow"
mkdir -p "$shadow/refunddesk"
for file in "$root"/refunddesk/*.py; do ln -s "$file" "$shadow/refunddesk/"; done
for folder in policy store intake bot review outbound worker harness templates; do
  ln -s "$root/$folder" "$shadow/refunddesk/$folder"
done
stage "mypy" bash -c 'cd "$1" && shift && exec "$@"' _ "$shadow" \
  "$mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/build/mypy-cache" -p refunddesk

exit "$failed"
