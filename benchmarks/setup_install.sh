#!/usr/bin/env bash
# The set-up's time: `make setup` (pip --no-compile, then the environment byte-compiled on all cores)
# against the same install with pip's own byte-compilation (one core), interleaved, each into a new
# environment in a scratch folder. Prints seconds per round and the ratio.
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
for r in $(seq 1 "$ROUNDS"); do
  s=$(now)
  python3 -m venv "$W/pip-compiles"
  "$W/pip-compiles/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
  "$W/pip-compiles/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
  before=$(since "$s")
  s=$(now)
  make -s setup VENV="$W/make-setup" > /dev/null
  after=$(since "$s")
  n_pyc=$(find "$W/make-setup" -name '*.pyc' | wc -l)
  echo "round $r: pip byte-compiling $before s, make setup $after s (ratio $(python3 -c "print(f'{$before / $after:.2f}')"); $n_pyc .pyc files)"
  rm -rf "$W/pip-compiles" "$W/make-setup"
done
