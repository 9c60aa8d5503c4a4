#!/usr/bin/env bash
# The benchmark command: set up (idempotent), then run every benchmark under bench/.
# Each writes its section of docs/benchmarks.md with ratios against a baseline measured in
# the same run. Pass names to run a subset: ./hack/bench.sh sender api; options after `--` go to
# each script run: ./hack/bench.sh throughput -- --seed-src /path/to/aws-ses-sender-go
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash hack/setup.sh
export EMAILPLAN_CONTROLPLANE_BIN="$(cat .venv/controlplane-bin)"
# The API benchmark's load comes from wrk: the Python load generator it falls back to spends
# about as much CPU per request as the bare server, so on two cores the baseline is then
# bounded by its load and not by its work (measured 2026-12-08).
if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; } ||
    echo "wrk could not be installed: the API benchmark falls back to its Python load generator and says so" >&2
fi
# Benchmarks run local processes with the built-in development keys (never in production).
export EMAILPLAN_DEV_MODE=1
export PYTHONPATH="$ROOT/hack${PYTHONPATH:+:$PYTHONPATH}"
want=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do want+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
opts=("$@")
for script in bench/*_bench.py; do
  name="$(basename "$script" _bench.py)"
  if [ "${#want[@]}" -gt 0 ] && [[ ! " ${want[*]} " =~ " $name " ]]; then continue; fi
  printf '\n==> bench: %s\n' "$name" >&2
  .venv/bin/python "$script" "${opts[@]}"
done
