#!/usr/bin/env bash
# The set-up's time: `make setup` (uv, its own empty cache each round, so every wheel is fetched and
# unpacked again) against `make setup SETUP_WITH=pip` (pip --no-compile, then the environment
# byte-compiled on all cores), interleaved, each into a new environment in a scratch folder. Prints
# seconds per round, the ratio, the .pyc count of each and whether both hold the same packages.
#   bash benchmarks/setup_install.sh [rounds]     (default 2; each round builds two environments)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-2}
case "$ROUNDS" in ''|*[!0-9]*|0) echo "rounds must be a positive whole number, got '$ROUNDS'" >&2; exit 2;; esac
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$ROOT"
now() { python3 -c 'import time; print(time.time())'; }
since() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"; }
# name==version per package, names normalised (pip and uv spell some differently), the tools left out
packages() { "$1/bin/python" -m pip freeze --exclude-editable 2>/dev/null | tr 'A-Z_' 'a-z-' | grep -v '^uv==' | sort; }
for r in $(seq 1 "$ROUNDS"); do
  s=$(now)
  make -s setup SETUP_WITH=pip VENV="$W/pip" > /dev/null 2>&1
  with_pip=$(since "$s")
  s=$(now)
  UV_CACHE_DIR="$W/uv-cache" make -s setup VENV="$W/uv" > /dev/null 2>&1
  with_uv=$(since "$s")
  same=$([ "$(packages "$W/pip")" = "$(packages "$W/uv")" ] && echo yes || echo NO)
  echo "round $r: SETUP_WITH=pip $with_pip s, make setup (uv, empty cache) $with_uv s" \
       "(ratio $(python3 -c "print(f'{$with_pip / $with_uv:.2f}')");" \
       "$(find "$W/pip" -name '*.pyc' | wc -l) and $(find "$W/uv" -name '*.pyc' | wc -l) .pyc files;" \
       "same packages and versions: $same)"
  rm -rf "$W/pip" "$W/uv" "$W/uv-cache"
done
